//! The coordinator's gRPC services: Build (clients), Worker (one stream per
//! worker) and Content (blobs for callers without S3 credentials), all
//! behind the token check of [`crate::auth`].

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rbk_proto::build::build_server::{Build, BuildServer};
use rbk_proto::build::{self as pb};
use rbk_proto::content::content_server::{Content, ContentServer};
use rbk_proto::content::{self as pc};
use rbk_proto::worker::worker_server::{Worker, WorkerServer};
use rbk_proto::worker::{self as pw};
use rbk_store::{ByteRange, ByteStream, Digest, Hasher, Store, StoreError};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, AuthError, TokenFile, tenant_of, worker_pool_of};
use crate::cache_heads::{CacheHeads, Merger};
use crate::scheduler::{
    BuildEvent, BuildRequest, CacheCommit, CacheMountSpec, FromWorker, Scheduler, SchedulerConfig, SchedulerError,
    Secrets, StepNode, StepOutcome, ToWorker, WorkerInfo,
};
use crate::state::{BuildRecord, CacheHead, Command, CoordinatorState, HeadKey, now_ms, query};

pub use rbk_proto::chunks::{CHUNK, split_chunks};

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Turns a submitted Dockerfile into a step graph on the coordinator. The
/// Dockerfile frontend implements it; until one is configured, clients
/// submit planned graphs.
#[async_trait::async_trait]
pub trait Planner: Send + Sync + 'static {
    async fn plan(&self, namespace: &str, options: &pb::BuildOptions, context: Digest) -> Result<Vec<StepNode>, String>;
}

/// Everything a running coordinator is made of.
#[derive(Clone)]
pub struct Coordinator {
    pub state: Arc<dyn CoordinatorState>,
    pub scheduler: Scheduler,
    pub auth: Auth,
    store: Arc<dyn Store>,
    planner: Option<Arc<dyn Planner>>,
    heartbeat_ms: u64,
    /// Replicated coordinators: refuses Build/Worker calls on followers.
    gate: Option<Arc<dyn rbk_proto::leader::LeaderGate>>,
    /// Clients serving SSH agents to their builds' steps.
    pub ssh: crate::ssh_relay::AgentRelay,
}

impl Coordinator {
    /// Starts the scheduler and installs the token file into `state`.
    pub async fn start(
        state: Arc<dyn CoordinatorState>,
        store: Arc<dyn Store>,
        merger: Arc<dyn Merger>,
        tokens: &TokenFile,
        config: SchedulerConfig,
    ) -> Result<Self, AuthError> {
        let auth = Auth::new(state.clone());
        auth.install(tokens).await?;
        let heads = CacheHeads::new(state.clone(), merger);
        let heartbeat_ms = config.heartbeat_interval.as_millis() as u64;
        let scheduler = Scheduler::start(state.clone(), heads, config);
        Ok(Self { state, scheduler, auth, store, planner: None, heartbeat_ms, gate: None, ssh: Default::default() })
    }

    pub fn with_planner(mut self, planner: Arc<dyn Planner>) -> Self {
        self.planner = Some(planner);
        self
    }

    /// Only the leader of a replicated coordinator schedules: with a gate,
    /// Build and Worker calls are checked (after the token) and followers
    /// answer with [`rbk_proto::leader::redirect`].
    pub fn with_gate(mut self, gate: Arc<dyn rbk_proto::leader::LeaderGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Serves all three services on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// [`Self::serve`], over TLS when `tls` is given (config `[tls]`).
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let i = self.auth.interceptor();
        let (gate, auth) = (self.gate.clone(), i.clone());
        // The token first: a follower names its leader only to callers
        // that may talk to the cluster at all. A token the follower does
        // not know may be one its replicated state has not caught up with
        // (just after an election), so it answers "unavailable, retry"
        // without the leader's address rather than a final refusal.
        let gated = move |req: Request<()>| {
            let follower = gate.as_ref().and_then(|g| g.check().err());
            match (auth(req), follower) {
                (Ok(req), None) => Ok(req),
                (Ok(_), Some(redirect)) => Err(redirect),
                (Err(refused), None) => Err(refused),
                (Err(refused), Some(_)) => Err(Status::unavailable(format!("this coordinator is not the leader ({})", refused.message()))),
            }
        };
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls)?;
        }
        server
            .add_service(crate::watch_route::WatchBypass {
                gated: BuildServer::with_interceptor(BuildService(self.clone()), gated.clone()),
                // Watch decides itself whether a follower redirects.
                ungated: BuildServer::with_interceptor(BuildService(self.clone()), i.clone()),
            })
            .add_service(WorkerServer::with_interceptor(WorkerService(self.clone()), gated.clone()))
            .add_service(rbk_proto::ssh::ssh_relay_server::SshRelayServer::with_interceptor(
                crate::ssh_relay::SshRelayService::new(self.clone()),
                gated,
            ))
            .add_service(ContentServer::with_interceptor(ContentService { store: self.store.clone() }, i))
            // TCP_NODELAY, as tonic's own `serve` sets it: with Nagle on, a
            // small reply waits for the peer's delayed ACK (~40 ms), which
            // request/response traffic (the relayed SSH agent protocol)
            // pays on every exchange.
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                    s.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                }),
                shutdown,
            )
            .await
    }
}

fn scheduler_status(e: SchedulerError) -> Status {
    match e {
        SchedulerError::InvalidGraph(_) => Status::invalid_argument(e.to_string()),
        SchedulerError::UnknownBuild(_) => Status::not_found(e.to_string()),
        SchedulerError::State(_) | SchedulerError::Stopped => Status::unavailable(e.to_string()),
    }
}

fn parse_digest(what: &str, s: &str) -> Result<Digest, Status> {
    s.parse().map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

fn step_from_wire(s: pb::StepNode) -> Result<StepNode, Status> {
    let cache_mounts = s
        .cache_mounts
        .into_iter()
        .map(|m| {
            let sharing = m.sharing.parse().map_err(|e| Status::invalid_argument(format!("step {}: cache {}: {e}", s.id, m.id)))?;
            if m.id.is_empty() {
                return Err(Status::invalid_argument(format!("step {}: a cache mount has an empty id", s.id)));
            }
            Ok(CacheMountSpec { id: m.id, sharing })
        })
        .collect::<Result<_, Status>>()?;
    Ok(StepNode {
        id: s.id,
        key: s.key,
        deps: s.deps,
        platform: s.platform,
        labels: s.labels.into_iter().collect(),
        cache_mounts,
        payload: s.payload,
        name: s.name,
    })
}

pub(crate) fn event_to_wire(e: BuildEvent) -> pb::BuildEvent {
    use pb::build_event::Event;
    let event = match e {
        BuildEvent::Accepted { build_id, total_steps } => Event::Accepted(pb::Accepted { build_id, total_steps }),
        BuildEvent::Started { step_id, worker_id, attempt, name } => {
            Event::Started(pb::StepStarted { step_id, worker_id, attempt, name })
        }
        BuildEvent::Cached { step_id, name, layers, config } => Event::Cached(pb::StepCached {
            step_id,
            name,
            layers: layers.iter().map(ToString::to_string).collect(),
            config,
        }),
        BuildEvent::Log { step_id, worker_id, stream, line } => Event::Log(pb::StepLog { step_id, worker_id, stream, line }),
        BuildEvent::Finished { step_id, worker_id, duration_ms, bytes_restored, layers, config } => {
            Event::Finished(pb::StepFinished {
                step_id,
                worker_id,
                duration_ms,
                bytes_restored,
                layers: layers.iter().map(ToString::to_string).collect(),
                config,
            })
        }
        BuildEvent::Failed { step_id, worker_id, message, exit_code } => {
            Event::Failed(pb::StepFailed { step_id, worker_id, message, exit_code })
        }
        BuildEvent::BuildFinished { state, duration_ms, message } => {
            Event::BuildFinished(pb::BuildFinished { state: state.as_str().into(), duration_ms, message })
        }
    };
    pb::BuildEvent { event: Some(event) }
}

fn build_to_wire(b: BuildRecord) -> pb::BuildStatus {
    pb::BuildStatus {
        build_id: b.id,
        state: b.state.as_str().into(),
        steps: b
            .steps
            .into_iter()
            .map(|s| pb::StepStatus {
                step_id: s.id,
                key: s.key,
                state: s.state.as_str().into(),
                worker_id: s.worker_id,
                attempts: s.attempts,
                message: s.message,
            })
            .collect(),
        created_ms: b.created_ms,
        finished_ms: b.finished_ms,
    }
}

fn head_to_wire(k: HeadKey, h: CacheHead) -> pb::CacheHead {
    pb::CacheHead {
        id: k.cache_id,
        slot: k.slot,
        snapshot: h.snapshot.to_string(),
        generation: h.generation,
        total_bytes: h.total_bytes,
        updated_ms: h.updated_ms,
    }
}

struct BuildService(Coordinator);

#[async_trait::async_trait]
impl Build for BuildService {
    type SubmitStream = EventStream<pb::BuildEvent>;

    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<Response<Self::SubmitStream>, Status> {
        let namespace = tenant_of(&req)?;
        let req = req.into_inner();
        let options = req.options.unwrap_or_default();
        // Kept in the scheduler's memory for this build only (see Secrets).
        let secrets: BTreeMap<String, Vec<u8>> = req.secrets.into_iter().collect();
        let steps = if req.steps.is_empty() {
            let planner = self.0.planner.as_ref().ok_or_else(|| {
                Status::failed_precondition("this coordinator has no Dockerfile planner configured; submit a planned graph (steps)")
            })?;
            let context = parse_digest("context_digest", &req.context_digest)?;
            planner.plan(&namespace, &options, context).await.map_err(Status::invalid_argument)?
        } else {
            req.steps.into_iter().map(step_from_wire).collect::<Result<_, _>>()?
        };
        let (_, events) = self
            .0
            .scheduler
            .submit_with_secrets(BuildRequest { namespace, steps, no_cache: options.no_cache }, Secrets(secrets))
            .await
            .map_err(scheduler_status)?;
        Ok(Response::new(UnboundedReceiverStream::new(events).map(|e| Ok(event_to_wire(e))).boxed()))
    }

    type WatchStream = EventStream<pb::BuildEvent>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let namespace = tenant_of(&req)?;
        let (state, gate) = (self.0.state.clone(), self.0.gate.as_deref());
        crate::build_events::serve_watch(state, &self.0.scheduler, gate, &namespace, req.into_inner()).await.map(Response::new)
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::BuildStatus>, Status> {
        let namespace = tenant_of(&req)?;
        let id = req.into_inner().build_id;
        let build = query(&*self.0.state, |m| m.build(&id).filter(|b| b.namespace == namespace).cloned());
        build.map(|b| Response::new(build_to_wire(b))).ok_or_else(|| Status::not_found(format!("build {id} not found")))
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let id = req.into_inner().build_id;
        self.0.scheduler.cancel(&namespace, &id).await.map_err(scheduler_status)?;
        Ok(Response::new(pb::CancelResponse {}))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let limit = match req.into_inner().limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let builds = query(&*self.0.state, |m| m.builds_of(&namespace, limit));
        Ok(Response::new(pb::ListResponse { builds: builds.into_iter().map(build_to_wire).collect() }))
    }

    async fn list_caches(&self, req: Request<pb::ListCachesRequest>) -> Result<Response<pb::ListCachesResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let heads = query(&*self.0.state, |m| m.heads_of(&namespace));
        let heads = heads.into_iter().map(|(k, h)| head_to_wire(k, h)).collect();
        Ok(Response::new(pb::ListCachesResponse { heads }))
    }

    async fn prune_caches(&self, req: Request<pb::PruneCachesRequest>) -> Result<Response<pb::PruneCachesResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let r = req.into_inner();
        let now = now_ms();
        // Heads in use (a live lease) are kept: dropping one under a running
        // locked or private step would orphan its commit.
        let candidates = query(&*self.0.state, |m| {
            m.heads_of(&namespace)
                .into_iter()
                .filter(|(k, h)| {
                    (r.ids.is_empty() || r.ids.contains(&k.cache_id))
                        && now.saturating_sub(h.updated_ms) >= r.unused_for_ms
                        && m.lease(k).is_none_or(|l| l.expires_ms <= now)
                })
                .collect::<Vec<_>>()
        });
        let mut dropped = Vec::new();
        for (key, head) in candidates {
            self.0.state.apply(Command::DropHead { head: key.clone() }).await.map_err(|e| Status::unavailable(e.to_string()))?;
            dropped.push(head_to_wire(key, head));
        }
        Ok(Response::new(pb::PruneCachesResponse { dropped }))
    }
}

struct WorkerService(Coordinator);

fn register_to_info(r: pw::Register) -> Result<WorkerInfo, Status> {
    if r.worker_id.is_empty() {
        return Err(Status::invalid_argument("register: worker_id is empty"));
    }
    let layers = r.layers.iter().map(|l| parse_digest("register: layer", l)).collect::<Result<HashSet<_>, _>>()?;
    let snapshots = r
        .snapshots
        .into_iter()
        .map(|s| {
            let d = parse_digest(&format!("register: snapshot of cache {}", s.cache_id), &s.snapshot)?;
            Ok((HeadKey { namespace: s.namespace, cache_id: s.cache_id, slot: s.slot }, d))
        })
        .collect::<Result<HashSet<_>, Status>>()?;
    Ok(WorkerInfo {
        id: r.worker_id,
        platform: r.platform,
        labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
        max_parallel: r.resources.map_or(1, |res| res.max_parallel.max(1)),
        layers,
        snapshots,
        running: r
            .running
            .into_iter()
            .map(|h| crate::scheduler::HeldAssignment {
                assignment_id: h.assignment_id,
                build_id: h.build_id,
                step_id: h.step_id,
                attempt: h.attempt,
            })
            .collect(),
    })
}

fn result_from_wire(r: pw::StepResult) -> Result<StepOutcome, String> {
    let commits = r
        .commits
        .into_iter()
        .map(|c| {
            let snapshot = c.snapshot.parse().map_err(|e| format!("commit of cache {}: {e}", c.cache_id))?;
            Ok(CacheCommit {
                cache_id: c.cache_id,
                slot: c.slot,
                base_generation: c.base_generation,
                snapshot,
                total_bytes: c.total_bytes,
            })
        })
        .collect::<Result<_, String>>()?;
    if !r.ok {
        return Ok(StepOutcome::Failed { message: r.message, exit_code: r.exit_code, commits });
    }
    let layers = r.layers.iter().map(|l| l.parse().map_err(|e| format!("result layer: {e}"))).collect::<Result<_, String>>()?;
    Ok(StepOutcome::Succeeded {
        layers,
        config: r.config,
        commits,
        bytes_restored: r.bytes_restored,
        duration_ms: r.duration_ms,
    })
}

fn to_worker_wire(m: ToWorker) -> pw::CoordinatorMessage {
    use pw::coordinator_message::Msg;
    if let ToWorker::Assign(a) = &m {
        crate::observe::assigned(&a.mounts);
    }
    let msg = match m {
        ToWorker::Assign(a) => Msg::Assign(pw::Assign {
            assignment_id: a.assignment_id,
            build_id: a.build_id,
            step_id: a.step_id,
            key: a.key,
            namespace: a.namespace,
            attempt: a.attempt,
            payload: a.payload,
            secrets: a.secrets.0.into_iter().collect(),
            mounts: a
                .mounts
                .into_iter()
                .map(|g| pw::MountGrant {
                    cache_id: g.cache_id,
                    sharing: g.sharing.as_str().into(),
                    slot: g.slot,
                    snapshot: g.head.map(|(d, _)| d.to_string()).unwrap_or_default(),
                    generation: g.head.map_or(0, |(_, g)| g),
                })
                .collect(),
            inputs: a
                .inputs
                .into_iter()
                .map(|i| pw::Input {
                    step_id: i.step_id,
                    key: i.key,
                    layers: i.result.layers.iter().map(ToString::to_string).collect(),
                    config: i.result.config,
                })
                .collect(),
        }),
        ToWorker::Cancel { assignment_id } => Msg::Cancel(pw::CancelStep { assignment_id }),
        ToWorker::DrainAck => Msg::DrainAck(pw::DrainAck {}),
    };
    pw::CoordinatorMessage { msg: Some(msg) }
}

#[async_trait::async_trait]
impl Worker for WorkerService {
    type SessionStream = EventStream<pw::CoordinatorMessage>;

    async fn session(&self, req: Request<Streaming<pw::WorkerMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        worker_pool_of(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("stream ended before register"))?;
        let Some(pw::worker_message::Msg::Register(reg)) = first.msg else {
            return Err(Status::invalid_argument("the first message on a worker stream must be register"));
        };
        let info = register_to_info(reg)?;
        let worker_id = info.id.clone();
        let scheduler = self.0.scheduler.clone();
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
                let msg = match msg.msg {
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
                    Some(Msg::Register(_)) | None => continue,
                };
                scheduler.worker_message(&worker_id, conn, msg);
            }
            scheduler.worker_down(&worker_id, conn);
        });
        let hello = pw::CoordinatorMessage {
            msg: Some(pw::coordinator_message::Msg::Registered(pw::Registered { heartbeat_interval_ms: self.0.heartbeat_ms })),
        };
        let out = futures::stream::once(async move { Ok(hello) })
            .chain(UnboundedReceiverStream::new(link.assignments).map(|m| Ok(to_worker_wire(m))));
        Ok(Response::new(out.boxed()))
    }
}

/// Maps store errors onto gRPC codes the remote store maps back.
pub fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::InvalidRange { .. } => Status::out_of_range(e.to_string()),
        StoreError::DigestMismatch { .. } => Status::invalid_argument(e.to_string()),
        StoreError::Backend { retryable: true, .. } => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

struct ContentService {
    store: Arc<dyn Store>,
}

/// The upload as a [`ByteStream`] that fails (so the store commits nothing)
/// if the bytes do not hash to `expected`.
fn verified_upload(expected: Digest, first: Vec<u8>, rest: Streaming<pc::WriteChunk>) -> ByteStream {
    struct St {
        rest: Streaming<pc::WriteChunk>,
        hasher: Hasher,
        pending: Option<Vec<u8>>,
    }
    let too_long = move |h: &Hasher| StoreError::DigestMismatch { expected, actual: h.finish() };
    futures::stream::unfold(Some(St { rest, hasher: Hasher::new(), pending: Some(first) }), move |st| async move {
        let mut st = st?;
        let data = match st.pending.take() {
            Some(d) => d,
            None => match st.rest.message().await {
                Ok(Some(c)) => c.data,
                Ok(None) => {
                    let actual = st.hasher.finish();
                    return (actual != expected).then(|| (Err(StoreError::DigestMismatch { expected, actual }), None));
                }
                Err(s) => {
                    let e = StoreError::Backend { backend: "content upload", message: s.to_string(), retryable: true };
                    return Some((Err(e), None));
                }
            },
        };
        st.hasher.update(&data);
        if st.hasher.bytes_so_far() > expected.size() {
            return Some((Err(too_long(&st.hasher)), None));
        }
        Some((Ok(Bytes::from(data)), Some(st)))
    })
    .boxed()
}

#[async_trait::async_trait]
impl Content for ContentService {
    async fn find_missing(&self, req: Request<pc::FindMissingRequest>) -> Result<Response<pc::FindMissingResponse>, Status> {
        let digests = req.into_inner().digests.iter().map(|d| parse_digest("find_missing", d)).collect::<Result<Vec<_>, _>>()?;
        let missing = self.store.find_missing(&digests).await.map_err(store_status)?;
        Ok(Response::new(pc::FindMissingResponse { missing: missing.iter().map(ToString::to_string).collect() }))
    }

    type ReadStream = EventStream<pc::ReadChunk>;

    async fn read(&self, req: Request<pc::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let digest = parse_digest("read", &r.digest)?;
        let range = ByteRange { offset: r.offset, length: (r.length != 0).then_some(r.length) };
        let stream = self.store.get(digest, range).await.map_err(store_status)?;
        let out = stream.flat_map(|item| {
            let msgs: Vec<Result<pc::ReadChunk, Status>> = match item {
                Ok(b) => split_chunks(b).map(|c| Ok(pc::ReadChunk { data: c.to_vec() })).collect(),
                Err(e) => vec![Err(store_status(e))],
            };
            futures::stream::iter(msgs)
        });
        Ok(Response::new(out.boxed()))
    }

    async fn write(&self, req: Request<Streaming<pc::WriteChunk>>) -> Result<Response<pc::WriteResponse>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("write: empty upload stream"))?;
        let digest = parse_digest("write", &first.digest)?;
        self.store.put(digest, verified_upload(digest, first.data, inbound)).await.map_err(store_status)?;
        Ok(Response::new(pc::WriteResponse {}))
    }
}
