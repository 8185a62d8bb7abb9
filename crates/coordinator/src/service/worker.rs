//! `Worker`: one stream per connected worker. The first message registers
//! it (what it is, what it holds); then assignments and cancels go down,
//! heartbeats, logs and results come up, each handed to the scheduler.

use futures::StreamExt;
use rbk_proto::worker::worker_server::Worker;
use rbk_proto::worker::{self as pw};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{EventStream, scheduler_status};
use crate::auth::{Credential, worker_pool_of};
use crate::model::{FromWorker, StepOutcome, ToWorker};
use crate::scheduler::Scheduler;
use crate::state::{CoordinatorState, query};
use crate::wire::{register_to_info, result_from_wire, to_worker_wire};

/// `Worker` over the scheduler; `heartbeat_ms` is what workers are told.
pub(crate) struct WorkerService {
    pub(crate) scheduler: Scheduler,
    /// Which worker ids have a token of their own.
    pub(crate) state: std::sync::Arc<dyn CoordinatorState>,
    pub(crate) heartbeat_ms: u64,
}

#[async_trait::async_trait]
impl Worker for WorkerService {
    type SessionStream = EventStream<pw::CoordinatorMessage>;

    async fn session(&self, req: Request<Streaming<pw::WorkerMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        let grant = worker_pool_of(&req)?;
        let credential = req.extensions().get::<Credential>().cloned().ok_or_else(|| Status::unauthenticated("request was not authenticated"))?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("stream ended before register"))?;
        let Some(pw::worker_message::Msg::Register(reg)) = first.msg else {
            return Err(Status::invalid_argument("the first message on a worker stream must be register"));
        };
        let mut info = register_to_info(reg)?;
        // Who the worker is and what it carries is the token file's word,
        // not the worker's: a per-worker token fixes the id, and labels are
        // always the pool's and the token's.
        if let Some(id) = &grant.id
            && *id != info.id
        {
            tracing::warn!(claimed = %info.id, worker = %id, pool = %grant.pool, "a worker registered under another id than its token's; using the token's");
            info.id = id.clone();
        }
        if !info.labels.is_empty() && info.labels != grant.labels {
            tracing::info!(worker = %info.id, pool = %grant.pool, "ignoring the labels the worker claims; using the token file's");
        }
        if grant.id.is_none() && query(&*self.state, |m| m.worker_id_is_owned(&info.id)) {
            tracing::warn!(worker = %info.id, pool = %grant.pool, "refused a pool token registering under a worker id another token owns");
            return Err(Status::permission_denied(format!("worker id {:?} belongs to another worker token", info.id)));
        }
        info.labels = grant.labels;
        info.tenants = grant.tenants;
        let credential_hash = credential.0.clone();
        info.credential = credential.0;
        let state = self.state.clone();
        let worker_id = info.id.clone();
        let scheduler = self.scheduler.clone();
        let link = scheduler.worker_up(info).await.map_err(scheduler_status)?;
        let conn = link.conn;
        tokio::spawn(async move {
            use pw::worker_message::Msg;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(worker = %worker_id, "worker stream broke: {e}");
                        break;
                    }
                };
                // A heartbeat's disk use and a result's (or late commit's)
                // phases go to the scheduler just before the message itself.
                let extra = match &msg.msg {
                    Some(Msg::Heartbeat(pw::Heartbeat { disk: Some(d) })) => Some(FromWorker::Disk(crate::wire::disk_from_wire(d))),
                    Some(Msg::Result(pw::StepResult { assignment_id, phases: Some(p), .. }))
                    | Some(Msg::Commits(pw::CacheCommits { assignment_id, phases: Some(p), .. })) => {
                        Some(FromWorker::Phases { assignment_id: assignment_id.clone(), phases: crate::wire::phases_from_wire(p) })
                    }
                    _ => None,
                };
                let msg = match msg.msg {
                    // A token removed from the token file ends the sessions
                    // it opened at their next heartbeat.
                    Some(Msg::Heartbeat(_)) if query(&*state, |m| m.token_revoked(&credential_hash)) => {
                        tracing::warn!(worker = %worker_id, "ending the session of a worker whose token was revoked");
                        break;
                    }
                    Some(Msg::Heartbeat(_)) => FromWorker::Heartbeat,
                    Some(Msg::Drain(_)) => FromWorker::Drain,
                    Some(Msg::Log(l)) => FromWorker::Log { assignment_id: l.assignment_id, stream: l.stream, line: l.line },
                    Some(Msg::Result(r)) => {
                        let assignment_id = r.assignment_id.clone();
                        let outcome = result_from_wire(r).unwrap_or_else(|e| StepOutcome::Failed {
                            message: format!("worker {worker_id} sent an invalid result: {e}"),
                            exit_code: -1,
                            commits: vec![],
                        });
                        crate::observe::step_result(&outcome);
                        FromWorker::Result { assignment_id, outcome }
                    }
                    Some(Msg::Commits(c)) => match crate::wire::commits_from_wire(c.commits) {
                        Ok(commits) => {
                            crate::observe::commits(&commits);
                            FromWorker::Commits { assignment_id: c.assignment_id, commits, error: c.error }
                        }
                        Err(e) => FromWorker::Commits {
                            assignment_id: c.assignment_id,
                            commits: vec![],
                            error: format!("worker {worker_id} sent invalid cache commits: {e}"),
                        },
                    },
                    Some(Msg::Register(_)) | None => continue,
                };
                if let Some(extra) = extra {
                    scheduler.worker_message(&worker_id, conn, extra);
                }
                scheduler.worker_message(&worker_id, conn, msg);
            }
            scheduler.worker_down(&worker_id, conn);
        });
        let hello = pw::CoordinatorMessage {
            msg: Some(pw::coordinator_message::Msg::Registered(pw::Registered { heartbeat_interval_ms: self.heartbeat_ms })),
        };
        let out = futures::stream::once(async move { Ok(hello) })
            .chain(UnboundedReceiverStream::new(link.assignments).map(|m| {
            if let ToWorker::Assign(a) = &m {
                crate::observe::assigned(&a.mounts);
            }
            Ok(to_worker_wire(m))
        }));
        Ok(Response::new(out.boxed()))
    }
}
