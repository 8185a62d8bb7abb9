//! `History`: a build's steps and logs after the fact (`rbk builds
//! inspect|logs`). Steps, states, workers and results come from the
//! replicated state; step times and log lines from what this node kept
//! (`build_history.rs`). Scoped to the caller's tenant like `Build`.

use std::sync::Arc;

use futures::StreamExt;
use rbk_proto::history::history_server::History;
use rbk_proto::history::{self as ph};
use tonic::{Request, Response, Status};

use super::EventStream;
use crate::auth::tenant_of;
use crate::build_history::{BuildHistory, BuildLog};
use crate::state::{BuildRecord, CoordinatorState, StepState, query};

/// Lines per `LogChunk`: well under gRPC's 4 MiB message limit even at
/// the longest lines a worker sends.
const LINES_PER_CHUNK: usize = 512;

pub(crate) struct HistoryService {
    pub(crate) state: Arc<dyn CoordinatorState>,
    pub(crate) history: BuildHistory,
}

impl HistoryService {
    /// The tenant's build `id`, or "not found" (also for another tenant's).
    fn build_of<T>(&self, req: &Request<T>, id: &str) -> Result<BuildRecord, Status> {
        let namespace = tenant_of(req)?;
        query(&*self.state, |m| m.build(id).filter(|b| b.namespace == namespace).cloned())
            .ok_or_else(|| Status::not_found(format!("build {id} not found")))
    }

    fn not_kept(&self, id: &str) -> Status {
        Status::not_found(format!(
            "build {id}: this coordinator keeps no logs of it (logs stay in the memory of the coordinator that ran the \
             build, for its last {} builds; a restart or leader change loses them)",
            self.history.limits().builds
        ))
    }
}

#[async_trait::async_trait]
impl History for HistoryService {
    async fn inspect(&self, req: Request<ph::InspectRequest>) -> Result<Response<ph::BuildDetail>, Status> {
        let id = req.get_ref().build_id.clone();
        let rec = self.build_of(&req, &id)?;
        let kept = self.history.get(&id);
        Ok(Response::new(detail(&*self.state, &rec, kept.as_ref())))
    }

    type LogsStream = EventStream<ph::LogChunk>;

    async fn logs(&self, req: Request<ph::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let (id, step) = (req.get_ref().build_id.clone(), req.get_ref().step_id.clone());
        let rec = self.build_of(&req, &id)?;
        if !step.is_empty() && !rec.steps.iter().any(|s| s.id == step) {
            return Err(Status::not_found(format!("build {id} has no step {step}")));
        }
        let kept = self.history.get(&id).ok_or_else(|| self.not_kept(&id))?;
        let lines: Vec<ph::LogLine> = kept
            .lines
            .into_iter()
            .filter(|l| step.is_empty() || l.step_id == step)
            .map(|l| ph::LogLine { step_id: l.step_id, stream: l.stream, line: l.line, at_ms: l.at_ms })
            .collect();
        let mut chunks: Vec<ph::LogChunk> = lines.chunks(LINES_PER_CHUNK).map(|c| ph::LogChunk { lines: c.to_vec(), dropped: 0 }).collect();
        match chunks.first_mut() {
            Some(first) => first.dropped = kept.dropped,
            None => chunks.push(ph::LogChunk { lines: vec![], dropped: kept.dropped }),
        }
        Ok(Response::new(futures::stream::iter(chunks.into_iter().map(Ok)).boxed()))
    }
}

/// The build as `rbk builds inspect` shows it: steps in graph order with
/// names, results (from the action cache) and the times this node saw.
fn detail(state: &dyn CoordinatorState, rec: &BuildRecord, kept: Option<&BuildLog>) -> ph::BuildDetail {
    let steps = rec
        .steps
        .iter()
        .map(|s| {
            let node = rec.graph.iter().find(|n| n.id == s.id);
            let result = matches!(s.state, StepState::Cached | StepState::Done)
                .then(|| query(state, |m| m.action(&rec.namespace, &s.key).cloned()))
                .flatten();
            let times = kept.and_then(|k| k.steps.get(&s.id)).copied().unwrap_or_default();
            ph::StepDetail {
                step_id: s.id.clone(),
                name: node.map(|n| n.name.clone()).unwrap_or_default(),
                state: s.state.as_str().into(),
                worker_id: s.worker_id.clone(),
                attempts: s.attempts,
                message: s.message.clone(),
                started_ms: times.started_ms,
                finished_ms: times.finished_ms,
                duration_ms: result.as_ref().map_or(0, |r| r.duration_ms),
                layers: result.map(|r| r.layers.iter().map(ToString::to_string).collect()).unwrap_or_default(),
                deps: node.map(|n| n.deps.clone()).unwrap_or_default(),
                cache_mounts: node.map(|n| n.cache_mounts.iter().map(|m| format!("{} ({})", m.id, m.sharing.as_str())).collect()).unwrap_or_default(),
                log_lines: kept.map_or(0, |k| k.lines.iter().filter(|l| l.step_id == s.id).count() as u64),
            }
        })
        .collect();
    ph::BuildDetail {
        build_id: rec.id.clone(),
        state: rec.state.as_str().into(),
        created_ms: rec.created_ms,
        finished_ms: rec.finished_ms,
        message: rec.message.clone(),
        steps,
        logs_kept: kept.is_some(),
        log_lines_dropped: kept.map_or(0, |k| k.dropped),
    }
}
