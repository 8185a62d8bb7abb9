//! DAG scheduling of build steps onto workers.
//!
//! One actor task owns all scheduling data (workers, in-flight executions,
//! the ready queue); everything else talks to it through [`Scheduler`]'s
//! messages, so there are no locks to order and no races between "worker
//! lost" and "step finished". Durable facts (step states, results, heads,
//! leases) go through [`CoordinatorState`] commands; what lives here is only
//! what workers and clients re-create when they reconnect.
//!
//! Policy:
//! - a step whose key is in the tenant's action cache is CACHED;
//! - a step runs when all its deps are done; identical steps (same tenant,
//!   same key) in flight from several builds run once and all of them get
//!   the result;
//! - a worker is eligible if it is not draining, has a free slot, matches the
//!   step's platform and has every label the step asks for; among eligible
//!   workers the one holding the newest snapshot of the step's cache mounts
//!   (10 points each) and the parent layers (1 point each) wins, then the
//!   least busy one, so independent steps spread over workers;
//! - `locked` cache mounts wait for their farm-wide lease; `private` ones
//!   get a slot of their own;
//! - a worker that disconnects or misses heartbeats has its steps retried
//!   elsewhere, up to `max_attempts`; a step that fails (non-zero exit) is
//!   not retried and fails its builds;
//! - a step whose worker captures its cache mounts after the result is done
//!   at once for its dependents; its builds end when the commits land (see
//!   `late_commits.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbk_store::Digest;
use tokio::sync::{mpsc, oneshot};

use crate::cache_heads::CacheHeads;
use crate::model::{
    ActionResult, Assignment, BuildEvent, BuildRequest, BuildState, CacheCommit, FromWorker, HeadKey, MountGrant, RunningAssignment,
    Secrets, StepInput, StepNode, StepOutcome, ToWorker, WorkerInfo,
};
use crate::state::{Command, CoordinatorState, Outcome, StateError, StepState, now_ms, query};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often workers are told to send heartbeats.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is considered gone.
    pub worker_timeout: Duration,
    /// Attempts per step when workers are lost (failures are not retried).
    pub max_attempts: u32,
    /// Lease lifetime for locked/private mounts, renewed by heartbeats.
    pub lease_ttl: Duration,
    /// How long a step of a build adopted after a leader change waits for
    /// its client to re-supply a secret it mounts (see
    /// `secrets.rs`) before it fails naming the secret.
    pub secret_wait: Duration,
    /// How long a new leader keeps a step the replicated state says runs
    /// on a worker for that worker to reconnect and re-report it, before
    /// retrying it elsewhere (leader-local; a few heartbeat intervals).
    pub readopt_grace: Duration,
    /// Key the action cache by the coordinator's hash of what each step
    /// executes (`action_key.rs`) instead of the client's key. On by
    /// default: off, a client can pair one step's payload with another's
    /// key and plant a result. A context-reading step is keyed by its
    /// context's tree digest (`context_trees.rs`), so an unchanged context
    /// still hits after a re-stage.
    pub server_action_keys: bool,
    /// How long a step may wait with no connected worker able to ever run
    /// it (none serves its tenant, has its platform and its labels) before
    /// it fails naming what is missing (see `unschedulable.rs`).
    pub unschedulable_timeout: Duration,
    /// Builds one tenant may have running at once (0: no limit; see
    /// `quota.rs`).
    pub max_builds_per_tenant: usize,
    /// Unfinished steps one tenant's running builds may hold, the new
    /// build's included (0: no limit).
    pub max_steps_per_tenant: usize,
    /// Log bytes the coordinator passes on per running step; past it, one
    /// marker line and nothing more (see `log_clip.rs`).
    pub max_step_log_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            worker_timeout: Duration::from_secs(30),
            max_attempts: 3,
            lease_ttl: Duration::from_secs(120),
            secret_wait: Duration::from_secs(30),
            readopt_grace: Duration::from_secs(10),
            server_action_keys: true,
            unschedulable_timeout: Duration::from_secs(600),
            max_builds_per_tenant: 100,
            max_steps_per_tenant: 20_000,
            max_step_log_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("invalid build graph: {0}")]
    InvalidGraph(String),
    #[error("build {0} not found")]
    UnknownBuild(String),
    #[error("coordinator state: creating build {build_id}: {source}")]
    State { build_id: String, source: StateError },
    #[error("the scheduler has stopped")]
    Stopped,
    /// Another session holds this worker id under a different token.
    #[error("worker id {0:?} is in use by a live session with another token")]
    WorkerIdInUse(String),
    /// A per-tenant limit (see `quota.rs`).
    #[error("{0}")]
    Quota(String),
    /// A step's build context cannot be keyed: not a readable manifest
    /// within the bounds of `context_trees.rs` (names the step).
    #[error("{0}")]
    BadContext(String),
    /// The store failed while a context manifest was read (names the step).
    #[error("{0}")]
    ContextUnavailable(String),
}

/// A step's result after its cache commits: the result, the heads the worker
/// now holds, bytes restored; or why committing failed.
type CommitResult = Result<(ActionResult, Vec<(HeadKey, Digest)>, u64), String>;

enum Msg {
    Submit { req: BuildRequest, secrets: Secrets, reply: oneshot::Sender<Result<(String, mpsc::UnboundedReceiver<BuildEvent>), SchedulerError>> },
    Cancel { namespace: String, build_id: String, reply: oneshot::Sender<Result<(), SchedulerError>> },
    WorkerUp { info: WorkerInfo, tx: mpsc::UnboundedSender<ToWorker>, reply: oneshot::Sender<Result<u64, SchedulerError>> },
    FromWorker { worker_id: String, conn: u64, msg: FromWorker },
    WorkerDown { worker_id: String, conn: u64 },
    Committed { assignment_id: String, result: CommitResult },
    /// A step's late cache commits were merged into their heads (or failed).
    CommitsLanded { assignment_id: String, worker_id: String, waiters: Vec<(String, String)>, result: Result<Vec<late_commits::Landed>, String> },
    Tick,
    /// This node became the Raft leader: resume replicated builds.
    Adopt { reply: oneshot::Sender<usize> },
    /// This node is no longer the leader: drop all live scheduling.
    StepDown,
    /// A re-attached client's secrets for its (adopted) build.
    AttachSecrets { namespace: String, build_id: String, secrets: Secrets, reply: oneshot::Sender<Result<(), SchedulerError>> },
    /// Who runs an assignment now (SSH forwarding checks it).
    Running { assignment_id: String, reply: oneshot::Sender<Option<RunningAssignment>> },
    /// The connected workers (the dashboard's Workers page).
    Workers { reply: oneshot::Sender<Vec<worker_view::WorkerView>> },
}

/// Handle to the scheduling actor. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
    hub: events::EventHub,
    /// `SchedulerConfig::server_action_keys`: keys are computed on the
    /// submitting task, before the build reaches the loop.
    server_action_keys: bool,
    /// Reads the context manifests keys hold the trees of; without one
    /// (unit tests) a context-reading step is keyed by its whole payload.
    contexts: Option<Arc<crate::context_trees::ContextReader>>,
}

/// A worker's side of its connection: assignments to run, and the handle to
/// report back through.
pub struct WorkerLink {
    pub conn: u64,
    pub assignments: mpsc::UnboundedReceiver<ToWorker>,
}

impl Scheduler {
    /// Starts the actor on the current tokio runtime.
    pub fn start(state: Arc<dyn CoordinatorState>, heads: CacheHeads, config: SchedulerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let tick = config.heartbeat_interval.min(Duration::from_secs(1)).max(Duration::from_millis(50));
        let ticker = tx.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                match ticker.upgrade() {
                    Some(tx) if tx.send(Msg::Tick).is_ok() => {}
                    _ => break,
                }
            }
        });
        let hub = events::EventHub::default();
        let server_action_keys = config.server_action_keys;
        let core = Core {
            hub: hub.clone(),
            adopted: HashMap::new(),
            state,
            heads,
            config,
            self_tx: tx.downgrade(),
            workers: BTreeMap::new(),
            builds: HashMap::new(),
            execs: HashMap::new(),
            queue: VecDeque::new(),
            assignments: HashMap::new(),
            next_id: 0,
            secrets: HashMap::new(),
            readopt: failover::Readopt::default(),
            late: HashMap::new(),
        };
        tokio::spawn(core.run(rx));
        Self { tx, hub, server_action_keys, contexts: None }
    }

    /// Keys context-reading steps by the tree of the context manifest they
    /// name, read from `store` (see `context_trees.rs`).
    pub fn with_contexts(mut self, store: Arc<dyn rbk_store::Store>) -> Self {
        self.contexts = Some(Arc::new(crate::context_trees::ContextReader::new(store)));
        self
    }

    /// Live events of the builds this node runs, for `Watch` (and the
    /// Redis fan-out, once set on it).
    pub fn events(&self) -> &events::EventHub {
        &self.hub
    }

    /// Gives a running build the `--secret` values its client re-supplied
    /// after a leader change; another tenant's build is "not found".
    pub async fn attach_secrets(&self, namespace: &str, build_id: &str, secrets: Secrets) -> Result<(), SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::AttachSecrets { namespace: namespace.into(), build_id: build_id.into(), secrets, reply })
            .map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// Starts a build; the receiver yields its events until `BuildFinished`.
    pub async fn submit(&self, req: BuildRequest) -> Result<(String, mpsc::UnboundedReceiver<BuildEvent>), SchedulerError> {
        self.submit_with_secrets(req, Secrets::default()).await
    }

    /// [`submit`](Self::submit) with the build's secrets, which every
    /// assignment of the build carries to its worker.
    pub async fn submit_with_secrets(
        &self,
        mut req: BuildRequest,
        secrets: Secrets,
    ) -> Result<(String, mpsc::UnboundedReceiver<BuildEvent>), SchedulerError> {
        // Here, on the caller's task: the scheduler's single loop serves
        // every tenant and must not spend a large graph's time (or a
        // context manifest's read) on it.
        validate_graph(&req.steps)?;
        // The action cache keyed by what runs, not by what the client says
        // (see `action_key.rs`).
        if self.server_action_keys {
            let trees = match &self.contexts {
                Some(reader) => reader.resolve(&req.steps).await.map_err(|e| match e {
                    crate::context_trees::ContextError::Bad(m) => SchedulerError::BadContext(m),
                    crate::context_trees::ContextError::Unavailable(m) => SchedulerError::ContextUnavailable(m),
                })?,
                None => Default::default(),
            };
            crate::action_key::assign_keys(&mut req.steps, &trees);
        }
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Submit { req, secrets, reply }).map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// Cancels a build of `namespace`; another tenant's build is "not found".
    pub async fn cancel(&self, namespace: &str, build_id: &str) -> Result<(), SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Cancel { namespace: namespace.into(), build_id: build_id.into(), reply })
            .map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// Registers a connected worker. A worker reconnecting under the same id
    /// and token replaces its old connection (whose steps are retried); under
    /// another token it is refused while the old one lives.
    pub async fn worker_up(&self, info: WorkerInfo) -> Result<WorkerLink, SchedulerError> {
        let (tx, assignments) = mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::WorkerUp { info, tx, reply }).map_err(|_| SchedulerError::Stopped)?;
        let conn = rx.await.map_err(|_| SchedulerError::Stopped)??;
        Ok(WorkerLink { conn, assignments })
    }

    pub fn worker_message(&self, worker_id: &str, conn: u64, msg: FromWorker) {
        let _ = self.tx.send(Msg::FromWorker { worker_id: worker_id.into(), conn, msg });
    }

    pub fn worker_down(&self, worker_id: &str, conn: u64) {
        let _ = self.tx.send(Msg::WorkerDown { worker_id: worker_id.into(), conn });
    }

    /// Replicated coordinators, on becoming leader: resumes every running
    /// build of the state (see `failover.rs`); returns how many.
    pub async fn adopt(&self) -> Result<usize, SchedulerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Adopt { reply }).map_err(|_| SchedulerError::Stopped)?;
        rx.await.map_err(|_| SchedulerError::Stopped)
    }

    /// The worker, tenant and builds of `assignment_id` while it runs
    /// (not once its result is in): what an SSH forward must match.
    pub async fn running_assignment(&self, assignment_id: &str) -> Option<RunningAssignment> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Running { assignment_id: assignment_id.into(), reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// The workers connected to this node's scheduler now (none on a
    /// follower, whose scheduler does not run).
    pub async fn workers(&self) -> Vec<worker_view::WorkerView> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Workers { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Replicated coordinators, on losing leadership: forgets workers,
    /// builds and the queue (the new leader adopts them).
    pub fn step_down(&self) {
        let _ = self.tx.send(Msg::StepDown);
    }
}

/// Checks ids, deps and acyclicity; returns the steps in a topological order.
pub fn validate_graph(steps: &[StepNode]) -> Result<(), SchedulerError> {
    let bad = |m: String| Err(SchedulerError::InvalidGraph(m));
    let mut ids = HashSet::new();
    for s in steps {
        if s.id.is_empty() {
            return bad("a step has an empty id".into());
        }
        if s.key.is_empty() {
            return bad(format!("step {}: empty cache key", s.id));
        }
        if !ids.insert(s.id.as_str()) {
            return bad(format!("step {} appears twice", s.id));
        }
    }
    for s in steps {
        for d in &s.deps {
            if !ids.contains(d.as_str()) {
                return bad(format!("step {} depends on unknown step {d}", s.id));
            }
        }
    }
    // Kahn's algorithm, linear in steps + edges (a tenant's graph must not
    // cost quadratic time): anything left over sits on a cycle.
    let mut indegree: HashMap<&str, usize> = steps.iter().map(|s| (s.id.as_str(), s.deps.len())).collect();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in steps {
        for d in &s.deps {
            dependents.entry(d.as_str()).or_default().push(s.id.as_str());
        }
    }
    let mut ready: Vec<&str> = indegree.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    let mut seen = 0;
    while let Some(id) = ready.pop() {
        seen += 1;
        for dependent in dependents.get(id).map(Vec::as_slice).unwrap_or_default() {
            let n = indegree.get_mut(dependent).expect("every step has an indegree");
            *n -= 1;
            if *n == 0 {
                ready.push(dependent);
            }
        }
    }
    if seen != steps.len() {
        let mut cyclic: Vec<_> = indegree.into_iter().filter(|(_, n)| *n > 0).map(|(id, _)| id.to_owned()).collect();
        cyclic.sort();
        return bad(format!("dependency cycle among steps {}", cyclic.join(", ")));
    }
    Ok(())
}

type ExecKey = (String, String);

/// The first commit of `outcome` to a head the assignment was not granted
/// (or, without grants, a cache the step does not declare): a worker
/// commits only the caches of the assignment it holds.
/// The error a writer gets when the store collector fenced a blob it
/// names: retryable, since the next attempt uploads what was deleted.
fn fenced_message(blobs: &[Digest]) -> String {
    let first = blobs.first().map(|d| d.to_string()).unwrap_or_default();
    format!(
        "{} blob(s) this names (first: {first}) were being deleted by the store collector when it committed; retry (the retry uploads them again)",
        blobs.len()
    )
}

/// When the work of a step's writers started, for the store collector's
/// fences: the creation of the oldest build waiting on it (0, the most
/// cautious answer, when none is known).
fn writer_started_ms(state: &dyn CoordinatorState, waiters: &[(String, String)]) -> u64 {
    query(state, |m| waiters.iter().filter_map(|(b, _)| m.build(b).map(|r| r.created_ms)).min()).unwrap_or(0)
}

fn foreign_commit<'a>(node: &StepNode, granted: Option<&[(String, u32)]>, commits: &'a [CacheCommit]) -> Option<&'a CacheCommit> {
    commits.iter().find(|c| match granted {
        Some(g) => !g.iter().any(|(id, slot)| *id == c.cache_id && *slot == c.slot),
        None => !node.cache_mounts.iter().any(|m| m.id == c.cache_id),
    })
}

struct WorkerSlot {
    info: WorkerInfo,
    conn: u64,
    tx: mpsc::UnboundedSender<ToWorker>,
    running: BTreeSet<String>,
    last_seen: Instant,
    draining: bool,
}

struct LiveBuild {
    namespace: String,
    steps: Vec<StepNode>,
    index: HashMap<String, usize>,
    /// Unfinished deps per step.
    waiting_on: Vec<usize>,
    results: HashMap<String, ActionResult>,
    attempts: Vec<u32>,
    remaining: usize,
    no_cache: bool,
    started: Instant,
    events: events::EventSink,
}

/// One execution of a key, shared by every build step waiting for it.
struct Exec {
    namespace: String,
    node: StepNode,
    first_build: String,
    inputs: Vec<StepInput>,
    waiters: Vec<(String, String)>,
    attempt: u32,
    running: Option<Running>,
    /// Since when no connected worker could run it (see `unschedulable.rs`).
    unschedulable_since: Option<Instant>,
}

struct Running {
    assignment_id: String,
    worker_id: String,
    /// The `(cache id, slot)` pairs granted to this assignment, the only
    /// heads its result may commit to; `None` for a step a new leader found
    /// running (its grants were the old leader's): then the step's declared
    /// cache ids bound what it may commit.
    granted: Option<Vec<(String, u32)>>,
    started: Instant,
    committing: bool,
    /// Log bytes of this attempt passed on so far (see `log_clip.rs`).
    logged: u64,
}

struct Core {
    state: Arc<dyn CoordinatorState>,
    heads: CacheHeads,
    config: SchedulerConfig,
    self_tx: mpsc::WeakUnboundedSender<Msg>,
    workers: BTreeMap<String, WorkerSlot>,
    builds: HashMap<String, LiveBuild>,
    execs: HashMap<ExecKey, Exec>,
    queue: VecDeque<ExecKey>,
    assignments: HashMap<String, ExecKey>,
    next_id: u64,
    /// `--secret` values by build id, while the build runs.
    secrets: HashMap<String, Secrets>,
    /// Live events of builds, for every watcher.
    hub: events::EventHub,
    /// Builds adopted after a leader change, and when: their secrets must
    /// be re-supplied by their client (see `secrets.rs`).
    adopted: HashMap<String, Instant>,
    /// Steps a new leader found running on workers (leader-local).
    readopt: failover::Readopt,
    /// Steps done whose cache commits are still to come, by assignment id
    /// (at most one per step in flight; see `late_commits.rs`).
    late: HashMap<String, late_commits::LateCommit>,
}

impl Core {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg).await;
            self.schedule().await;
            crate::observe::scheduler(self.queue.len(), self.workers.len(), self.assignments.len(), self.builds.len());
        }
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:06}-{:08x}", self.next_id, rand::random::<u32>())
    }

    async fn apply(&self, cmd: Command) {
        // State errors here mean the state backend is unavailable (the Raft
        // case); scheduling carries on and the facts are re-sent by retries.
        if let Err(e) = self.state.apply(cmd).await {
            tracing::error!("coordinator state: {e}");
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submit { req, secrets, reply } => {
                let r = self.submit(req).await;
                if let Ok((build_id, _)) = &r
                    && self.builds.contains_key(build_id)
                    && !secrets.0.is_empty()
                {
                    self.secrets.insert(build_id.clone(), secrets);
                }
                let _ = reply.send(r);
            }
            Msg::Cancel { namespace, build_id, reply } => {
                let known = self.builds.get(&build_id).is_some_and(|b| b.namespace == namespace);
                if known {
                    self.end_build(&build_id, BuildState::Cancelled, "cancelled".into()).await;
                    let _ = reply.send(Ok(()));
                } else {
                    let finished = query(&*self.state, |m| m.build(&build_id).is_some_and(|b| b.namespace == namespace));
                    let _ = reply.send(if finished { Ok(()) } else { Err(SchedulerError::UnknownBuild(build_id)) });
                }
            }
            Msg::WorkerUp { info, tx, reply } => {
                if self.workers.get(&info.id).is_some_and(|old| old.info.credential != info.credential) {
                    tracing::warn!(worker = %info.id, "refused a second session under a live worker id with another token");
                    let _ = reply.send(Err(SchedulerError::WorkerIdInUse(info.id)));
                    return;
                }
                let kept = self.carry_over(&info);
                if let Some(old) = self.workers.get(&info.id) {
                    let conn = old.conn;
                    self.worker_lost(&info.id.clone(), conn, "reconnected").await;
                }
                self.next_id += 1;
                let conn = self.next_id;
                tracing::info!(worker = %info.id, platform = %info.platform, "worker connected");
                self.workers.insert(
                    info.id.clone(),
                    WorkerSlot { info: info.clone(), conn, tx, running: kept, last_seen: Instant::now(), draining: false },
                );
                let _ = reply.send(Ok(conn));
                self.claim_reports(Some(&info.id)).await;
            }
            Msg::FromWorker { worker_id, conn, msg } => self.worker_message(worker_id, conn, msg).await,
            Msg::WorkerDown { worker_id, conn } => self.worker_lost(&worker_id, conn, "disconnected").await,
            Msg::Committed { assignment_id, result } => self.committed(assignment_id, result).await,
            Msg::CommitsLanded { assignment_id, worker_id, waiters, result } => {
                self.commits_landed(assignment_id, worker_id, waiters, result).await
            }
            Msg::Adopt { reply } => {
                let n = self.adopt().await;
                let _ = reply.send(n);
            }
            Msg::StepDown => self.step_down(),
            Msg::AttachSecrets { namespace, build_id, secrets, reply } => {
                let _ = reply.send(self.attach_secrets(&namespace, &build_id, secrets));
            }
            Msg::Running { assignment_id, reply } => {
                let running = self.assignments.get(&assignment_id).and_then(|k| self.execs.get(k)).and_then(|e| {
                    let r = e.running.as_ref().filter(|r| r.assignment_id == assignment_id && !r.committing)?;
                    Some(RunningAssignment {
                        worker_id: r.worker_id.clone(),
                        credential: self.workers.get(&r.worker_id).map(|w| w.info.credential.clone()).unwrap_or_default(),
                        namespace: e.namespace.clone(),
                        build_ids: e.waiters.iter().map(|(b, _)| b.clone()).collect(),
                    })
                });
                let _ = reply.send(running);
            }
            Msg::Workers { reply } => {
                let _ = reply.send(self.worker_views());
            }
            Msg::Tick => {
                let timeout = self.config.worker_timeout;
                let stale: Vec<_> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.last_seen.elapsed() > timeout)
                    .map(|(id, w)| (id.clone(), w.conn))
                    .collect();
                for (id, conn) in stale {
                    self.worker_lost(&id, conn, "stopped heartbeating").await;
                }
                self.grace_expired().await;
            }
        }
    }

    /// `req.steps` were validated (and keyed) by [`Scheduler::submit_with_secrets`].
    async fn submit(&mut self, req: BuildRequest) -> Result<(String, mpsc::UnboundedReceiver<BuildEvent>), SchedulerError> {
        self.check_quota(&req)?;
        let build_id = self.fresh_id("b");
        let steps_kv = req.steps.iter().map(|s| (s.id.clone(), s.key.clone())).collect();
        let now = now_ms();
        let create = Command::CreateBuild {
            build_id: build_id.clone(),
            namespace: req.namespace.clone(),
            steps: steps_kv,
            now_ms: now,
            graph: req.steps.clone(),
        };
        // Guarded: a context or base layer the client found present may be
        // in a batch the store collector is deleting (`gc_fence.rs`).
        let guarded = Command::Guarded { started_ms: now, packs: Vec::new(), cmd: Box::new(create) };
        match self.state.apply(guarded).await {
            Ok(Outcome::Refused { blobs }) => {
                let source = StateError::Unavailable(fenced_message(&blobs));
                return Err(SchedulerError::State { build_id, source });
            }
            Ok(_) => {}
            Err(source) => return Err(SchedulerError::State { build_id, source }),
        }
        let (events, rx) = self.hub.open(&build_id);
        let _ = events.send(BuildEvent::Accepted { build_id: build_id.clone(), total_steps: req.steps.len() as u32 });
        let index = req.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let waiting_on = req.steps.iter().map(|s| s.deps.len()).collect();
        let n = req.steps.len();
        let ready: Vec<String> = req.steps.iter().filter(|s| s.deps.is_empty()).map(|s| s.id.clone()).collect();
        self.builds.insert(
            build_id.clone(),
            LiveBuild {
                namespace: req.namespace,
                steps: req.steps,
                index,
                waiting_on,
                results: HashMap::new(),
                attempts: vec![0; n],
                remaining: n,
                no_cache: req.no_cache,
                started: Instant::now(),
                events,
            },
        );
        if n == 0 {
            self.end_build(&build_id, BuildState::Succeeded, String::new()).await;
        }
        for step in ready {
            self.step_ready(&build_id, &step).await;
        }
        Ok((build_id, rx))
    }

    /// A step whose deps are all satisfied: cached, joined to an identical
    /// in-flight execution, or queued.
    async fn step_ready(&mut self, build_id: &str, step_id: &str) {
        let Some(b) = self.builds.get(build_id) else { return };
        let node = b.steps[b.index[step_id]].clone();
        let ns = b.namespace.clone();
        if !b.no_cache
            && let Some(result) = query(&*self.state, |m| m.action(&ns, &node.key).cloned())
        {
            let _ = b.events.send(BuildEvent::Cached {
                step_id: node.id.clone(),
                name: node.name.clone(),
                layers: result.layers.clone(),
                config: result.config.clone(),
            });
            self.apply(Command::SetStep {
                build_id: build_id.into(),
                step_id: step_id.into(),
                state: StepState::Cached,
                worker_id: result.worker_id.clone(),
                attempts: 0,
                message: String::new(),
            })
            .await;
            Box::pin(self.step_done(build_id, step_id, result)).await;
            return;
        }
        let key = (ns.clone(), node.key.clone());
        if let Some(exec) = self.execs.get_mut(&key) {
            exec.waiters.push((build_id.into(), step_id.into()));
            if let Some(r) = &exec.running {
                let (worker_id, attempt) = (r.worker_id.clone(), exec.attempt);
                self.mark_running(build_id, step_id, &worker_id, attempt).await;
            }
            return;
        }
        let inputs = node
            .deps
            .iter()
            .map(|d| StepInput {
                step_id: d.clone(),
                key: b.steps[b.index[d]].key.clone(),
                result: b.results[d].clone(),
            })
            .collect();
        self.execs.insert(
            key.clone(),
            Exec {
                namespace: ns,
                node,
                first_build: build_id.into(),
                inputs,
                waiters: vec![(build_id.into(), step_id.into())],
                attempt: 0,
                running: None,
                unschedulable_since: None,
            },
        );
        if self.readopt_recorded(&key, build_id, step_id) {
            return;
        }
        self.queue.push_back(key);
    }

    async fn mark_running(&mut self, build_id: &str, step_id: &str, worker_id: &str, attempt: u32) {
        let Some(b) = self.builds.get_mut(build_id) else { return };
        let i = b.index[step_id];
        b.attempts[i] = attempt;
        let _ = b.events.send(BuildEvent::Started {
            step_id: step_id.into(),
            worker_id: worker_id.into(),
            attempt,
            name: b.steps[i].name.clone(),
        });
        self.apply(Command::SetStep {
            build_id: build_id.into(),
            step_id: step_id.into(),
            state: StepState::Running,
            worker_id: worker_id.into(),
            attempts: attempt,
            message: String::new(),
        })
        .await;
    }

    /// Records a finished (or cached) step and readies its dependents.
    async fn step_done(&mut self, build_id: &str, step_id: &str, result: ActionResult) {
        let Some(b) = self.builds.get_mut(build_id) else { return };
        b.results.insert(step_id.into(), result);
        b.remaining -= 1;
        let mut ready = Vec::new();
        for (i, s) in b.steps.iter().enumerate() {
            let n = s.deps.iter().filter(|d| *d == step_id).count();
            if n > 0 {
                b.waiting_on[i] -= n;
                if b.waiting_on[i] == 0 {
                    ready.push(s.id.clone());
                }
            }
        }
        if b.remaining == 0 {
            if !self.awaits_commits(build_id) {
                self.end_build(build_id, BuildState::Succeeded, String::new()).await;
            }
            return;
        }
        for s in ready {
            self.step_ready(build_id, &s).await;
        }
    }

    /// Ends a build: its unfinished steps are cancelled, executions no other
    /// build waits for are stopped, and the final event is sent.
    async fn end_build(&mut self, build_id: &str, state: BuildState, message: String) {
        self.secrets.remove(build_id);
        let Some(b) = self.builds.remove(build_id) else { return };
        let mut stop = Vec::new();
        for (key, exec) in self.execs.iter_mut() {
            exec.waiters.retain(|(bid, _)| bid != build_id);
            if exec.waiters.is_empty() {
                stop.push(key.clone());
            }
        }
        for key in stop {
            let exec = self.execs.remove(&key).expect("collected above");
            self.queue.retain(|k| *k != key);
            if let Some(r) = exec.running {
                self.assignments.remove(&r.assignment_id);
                if let Some(w) = self.workers.get_mut(&r.worker_id) {
                    w.running.remove(&r.assignment_id);
                    let _ = w.tx.send(ToWorker::Cancel { assignment_id: r.assignment_id.clone() });
                }
                let _ = self.heads.release(&r.assignment_id).await;
            }
        }
        if state != BuildState::Succeeded {
            let open: Vec<_> = b.steps.iter().filter(|s| !b.results.contains_key(&s.id)).map(|s| s.id.clone()).collect();
            let current = query(&*self.state, |m| m.build(build_id).cloned());
            for step_id in open {
                let already_failed = current
                    .as_ref()
                    .and_then(|r| r.steps.iter().find(|s| s.id == step_id))
                    .is_some_and(|s| s.state == StepState::Failed);
                if !already_failed {
                    self.apply(Command::SetStep {
                        build_id: build_id.into(),
                        step_id,
                        state: StepState::Cancelled,
                        worker_id: String::new(),
                        attempts: 0,
                        message: String::new(),
                    })
                    .await;
                }
            }
        }
        self.apply(Command::FinishBuild { build_id: build_id.into(), state, message: message.clone(), now_ms: now_ms() }).await;
        let _ = b.events.send(BuildEvent::BuildFinished {
            state,
            duration_ms: b.started.elapsed().as_millis() as u64,
            message,
        });
    }

    async fn worker_message(&mut self, worker_id: String, conn: u64, msg: FromWorker) {
        let Some(w) = self.workers.get_mut(&worker_id).filter(|w| w.conn == conn) else { return };
        w.last_seen = Instant::now();
        match msg {
            FromWorker::Heartbeat => {
                let holders: Vec<_> = w.running.iter().cloned().collect();
                for h in holders {
                    let _ = self.heads.renew(&h, now_ms(), self.config.lease_ttl.as_millis() as u64).await;
                }
                self.renew_late_commits(&worker_id).await;
            }
            FromWorker::Drain => {
                w.draining = true;
                let _ = w.tx.send(ToWorker::DrainAck);
            }
            FromWorker::Log { assignment_id, stream, line } => {
                let limit = self.config.max_step_log_bytes;
                let Some(exec) = self.assignments.get(&assignment_id).and_then(|k| self.execs.get_mut(k)) else { return };
                // Only the worker running the step speaks for it.
                let Some(running) = exec.running.as_mut().filter(|r| r.worker_id == worker_id) else { return };
                let Some(line) = log_clip::admit(&mut running.logged, limit, line) else { return };
                for (bid, sid) in &exec.waiters {
                    if let Some(b) = self.builds.get(bid) {
                        let _ = b.events.send(BuildEvent::Log {
                            step_id: sid.clone(),
                            worker_id: worker_id.clone(),
                            stream: stream.clone(),
                            line: line.clone(),
                        });
                    }
                }
            }
            FromWorker::Result { assignment_id, outcome } => self.step_result(&worker_id, assignment_id, outcome).await,
            FromWorker::Commits { assignment_id, commits, error } => self.commits_arrived(&worker_id, assignment_id, commits, error).await,
        }
    }

    #[tracing::instrument(name = "step_result", level = "info", skip_all, fields(worker = %worker_id, assignment_id = %assignment_id, build_id, step_id))]
    async fn step_result(&mut self, worker_id: &str, assignment_id: String, outcome: StepOutcome) {
        let Some(key) = self.assignments.get(&assignment_id).cloned() else {
            return self.unmatched_result(worker_id, assignment_id, outcome).await;
        };
        let Some(exec) = self.execs.get_mut(&key) else { return };
        let Some(running) = exec.running.as_mut().filter(|r| r.assignment_id == assignment_id && r.worker_id == worker_id)
        else {
            tracing::info!("ignoring a result for an assignment now held by another worker");
            return;
        };
        if running.committing {
            // Sent again after a broken session (workers re-send recent
            // results): the first one is being committed.
            tracing::info!("ignoring a repeated result of a step being committed");
            return;
        }
        if let Some((build_id, step_id)) = exec.waiters.first() {
            tracing::Span::current().record("build_id", tracing::field::display(&build_id)).record("step_id", tracing::field::display(&step_id));
        }
        let commits = match &outcome {
            StepOutcome::Succeeded { commits, .. } | StepOutcome::Failed { commits, .. } => commits,
        };
        let outcome = match foreign_commit(&exec.node, running.granted.as_deref(), commits) {
            None => outcome,
            Some(c) => {
                tracing::warn!(cache = %c.cache_id, slot = c.slot, "refused a result committing to a cache head the assignment was not granted");
                StepOutcome::Failed {
                    message: format!("worker {worker_id} tried to commit cache {:?} slot {}, which this step was not granted", c.cache_id, c.slot),
                    exit_code: -1,
                    commits: vec![],
                }
            }
        };
        match outcome {
            StepOutcome::Succeeded { layers, config, commits, bytes_restored, duration_ms, commits_follow } => {
                tracing::info!(duration_ms, bytes_restored, commits = commits.len(), commits_follow, "step succeeded; committing");
                running.committing = true;
                if commits_follow {
                    self.late.insert(
                        assignment_id.clone(),
                        late_commits::LateCommit {
                            worker_id: worker_id.to_owned(),
                            namespace: exec.namespace.clone(),
                            node: exec.node.clone(),
                            granted: running.granted.clone(),
                            waiters: exec.waiters.clone(),
                            started_ms: writer_started_ms(&*self.state, &exec.waiters),
                            arrived: false,
                        },
                    );
                }
                // Merging cache heads reads the store: off the actor.
                let heads = self.heads.clone();
                let state = self.state.clone();
                let ns = exec.namespace.clone();
                let step_key = exec.node.key.clone();
                let worker = worker_id.to_owned();
                let tx = self.self_tx.clone();
                let started_ms = writer_started_ms(&*self.state, &exec.waiters);
                tokio::spawn(async move {
                    let result = async {
                        // The worker holds what it captured; after a merge
                        // the head is newer than its copy.
                        let held = late_commits::commit_heads(&heads, &ns, commits, started_ms)
                            .await?
                            .into_iter()
                            .filter(|l| !l.merged)
                            .map(|l| (l.head, l.snapshot))
                            .collect();
                        let result = ActionResult { layers, config, duration_ms, worker_id: worker, created_ms: now_ms() };
                        let put = Command::PutAction { namespace: ns, key: step_key, result: result.clone() };
                        let guarded = Command::Guarded { started_ms, packs: Vec::new(), cmd: Box::new(put) };
                        if let Outcome::Refused { blobs } = state.apply(guarded).await.map_err(|e| e.to_string())? {
                            return Err(fenced_message(&blobs));
                        }
                        Ok((result, held, bytes_restored))
                    }
                    .await;
                    if !commits_follow {
                        // Else the late commits release it when they land.
                        let _ = heads.release(&assignment_id).await;
                    }
                    if let Some(tx) = tx.upgrade() {
                        let _ = tx.send(Msg::Committed { assignment_id, result });
                    }
                });
            }
            StepOutcome::Failed { message, exit_code, commits } => {
                tracing::info!(exit_code, "step failed: {message}");
                let exec = self.execs.remove(&key).expect("looked up above");
                self.assignments.remove(&assignment_id);
                if let Some(w) = self.workers.get_mut(worker_id) {
                    w.running.remove(&assignment_id);
                }
                if commits.is_empty() {
                    let _ = self.heads.release(&assignment_id).await;
                } else {
                    // Merging reads the store: off the actor; the lease is
                    // released once the commits are in.
                    let (heads, ns, holder) = (self.heads.clone(), exec.namespace.clone(), assignment_id.clone());
                    let started_ms = writer_started_ms(&*self.state, &exec.waiters);
                    tokio::spawn(async move {
                        for c in commits {
                            let head = HeadKey { namespace: ns.clone(), cache_id: c.cache_id.clone(), slot: c.slot };
                            if let Err(e) = heads.commit(&head, c.base_generation, c.snapshot, c.total_bytes, now_ms(), started_ms).await {
                                tracing::warn!("committing cache {} after a failed step: {e}", c.cache_id);
                            }
                        }
                        let _ = heads.release(&holder).await;
                    });
                }
                self.fail_exec(exec, worker_id, message, exit_code).await;
            }
        }
    }

    async fn fail_exec(&mut self, exec: Exec, worker_id: &str, message: String, exit_code: i32) {
        for (bid, sid) in exec.waiters {
            let Some(b) = self.builds.get(&bid) else { continue };
            let _ = b.events.send(BuildEvent::Failed {
                step_id: sid.clone(),
                worker_id: worker_id.into(),
                message: message.clone(),
                exit_code,
            });
            self.apply(Command::SetStep {
                build_id: bid.clone(),
                step_id: sid.clone(),
                state: StepState::Failed,
                worker_id: worker_id.into(),
                attempts: exec.attempt,
                message: message.clone(),
            })
            .await;
            self.end_build(&bid, BuildState::Failed, format!("step {sid} failed: {message}")).await;
        }
    }

    #[tracing::instrument(name = "commit", level = "info", skip_all, fields(assignment_id = %assignment_id, build_id, step_id, worker))]
    async fn committed(&mut self, assignment_id: String, result: CommitResult) {
        let Some(key) = self.assignments.remove(&assignment_id) else { return };
        let Some(exec) = self.execs.remove(&key) else { return };
        let Some(running) = exec.running.as_ref() else { return };
        let worker_id = running.worker_id.clone();
        let elapsed = running.started.elapsed().as_millis() as u64;
        if let Some((build_id, step_id)) = exec.waiters.first() {
            tracing::Span::current()
                .record("build_id", tracing::field::display(&build_id))
                .record("step_id", tracing::field::display(&step_id))
                .record("worker", tracing::field::display(&worker_id));
        }
        if let Some(w) = self.workers.get_mut(&worker_id) {
            w.running.remove(&assignment_id);
        }
        match result {
            Ok((result, held, bytes_restored)) => {
                tracing::info!(builds = exec.waiters.len(), "step done");
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.info.layers.extend(result.layers.iter().copied());
                    w.info.snapshots.retain(|(k, _)| !held.iter().any(|(h, _)| h == k));
                    w.info.snapshots.extend(held);
                }
                for (bid, sid) in &exec.waiters {
                    let Some(b) = self.builds.get(bid) else { continue };
                    let _ = b.events.send(BuildEvent::Finished {
                        step_id: sid.clone(),
                        worker_id: worker_id.clone(),
                        duration_ms: elapsed,
                        bytes_restored,
                        layers: result.layers.clone(),
                        config: result.config.clone(),
                    });
                    self.apply(Command::SetStep {
                        build_id: bid.clone(),
                        step_id: sid.clone(),
                        state: StepState::Done,
                        worker_id: worker_id.clone(),
                        attempts: exec.attempt,
                        message: String::new(),
                    })
                    .await;
                    self.step_done(bid, sid, result.clone()).await;
                }
            }
            Err(message) => {
                tracing::warn!("committing the step's result failed: {message}");
                self.fail_exec(exec, &worker_id, message, -1).await
            }
        }
    }

    /// A worker is gone: its executions go back to the queue (bounded).
    async fn worker_lost(&mut self, worker_id: &str, conn: u64, why: &str) {
        if self.workers.get(worker_id).is_none_or(|w| w.conn != conn) {
            return;
        }
        let w = self.workers.remove(worker_id).expect("checked above");
        self.late_commits_lost(worker_id).await;
        if w.running.is_empty() {
            // An idle worker leaving (a drained worker, `rbk build` at exit)
            // loses nothing: not worth a warning.
            tracing::info!(worker = worker_id, "worker {why}; it held no step");
        } else {
            tracing::warn!(worker = worker_id, "worker {why}; retrying its {} steps", w.running.len());
        }
        for assignment_id in w.running {
            let _ = self.heads.release(&assignment_id).await;
            let Some(key) = self.assignments.remove(&assignment_id) else { continue };
            let Some(exec) = self.execs.get_mut(&key) else { continue };
            if exec.running.as_ref().is_some_and(|r| r.committing) {
                // The result arrived; only the commit is in progress.
                self.assignments.insert(assignment_id, key);
                continue;
            }
            exec.running = None;
            if exec.attempt >= self.config.max_attempts {
                let exec = self.execs.remove(&key).expect("looked up above");
                let message = format!("worker {worker_id} {why}; gave up after {} attempts", exec.attempt);
                self.fail_exec(exec, worker_id, message, -1).await;
            } else {
                self.queue.push_front(key);
            }
        }
    }

    /// Dispatches queued executions to workers while any can take them.
    async fn schedule(&mut self) {
        let mut waiting = VecDeque::new();
        while let Some(key) = self.queue.pop_front() {
            if !self.try_dispatch(&key).await {
                waiting.push_back(key);
            }
        }
        self.queue = waiting;
    }

    #[tracing::instrument(name = "dispatch", level = "info", skip_all, fields(build_id, step_id, assignment_id, worker))]
    async fn try_dispatch(&mut self, key: &ExecKey) -> bool {
        if let Some(done) = self.hold_for_secrets(key).await {
            return done;
        }
        let Some(exec) = self.execs.get(key) else { return true };
        if self.awaits_late_commit(exec) {
            return false;
        }
        let Some(worker_id) = self.pick_worker(exec) else { return self.expire_if_unschedulable(key).await };
        let assignment_id = self.fresh_id("a");
        let exec = self.execs.get(key).expect("checked above");
        let ttl = self.config.lease_ttl.as_millis() as u64;
        let mut mounts = Vec::new();
        for m in &exec.node.cache_mounts {
            match self.heads.acquire(&exec.namespace, &m.id, m.sharing, &assignment_id, now_ms(), ttl).await {
                Ok(Some(slot)) => {
                    let head_key = HeadKey { namespace: exec.namespace.clone(), cache_id: m.id.clone(), slot };
                    let head = self.heads.head(&head_key).map(|h| (h.snapshot, h.generation));
                    mounts.push(MountGrant { cache_id: m.id.clone(), sharing: m.sharing, slot, head });
                }
                Ok(None) => {
                    let _ = self.heads.release(&assignment_id).await;
                    return false;
                }
                Err(e) => {
                    tracing::error!("lease for cache {}: {e}", m.id);
                    let _ = self.heads.release(&assignment_id).await;
                    return false;
                }
            }
        }
        let exec = self.execs.get_mut(key).expect("checked above");
        exec.attempt += 1;
        let (build_id, step_id) = exec.waiters[0].clone();
        tracing::Span::current()
            .record("build_id", tracing::field::display(&build_id))
            .record("step_id", tracing::field::display(&step_id))
            .record("assignment_id", tracing::field::display(&assignment_id))
            .record("worker", tracing::field::display(&worker_id));
        tracing::info!(attempt = exec.attempt, "step dispatched");
        let build_id = if exec.waiters.iter().any(|(b, _)| *b == exec.first_build) { exec.first_build.clone() } else { build_id };
        let secrets = self.secrets.get(&build_id).cloned().unwrap_or_default();
        let granted = Some(mounts.iter().map(|m| (m.cache_id.clone(), m.slot)).collect());
        let assignment = Assignment {
            assignment_id: assignment_id.clone(),
            secrets,
            build_id,
            step_id,
            key: exec.node.key.clone(),
            namespace: exec.namespace.clone(),
            attempt: exec.attempt,
            payload: exec.node.payload.clone(),
            mounts,
            inputs: exec.inputs.clone(),
        };
        exec.running = Some(Running {
            assignment_id: assignment_id.clone(),
            worker_id: worker_id.clone(),
            granted,
            started: Instant::now(),
            committing: false,
            logged: 0,
        });
        let attempt = exec.attempt;
        let waiters = exec.waiters.clone();
        self.assignments.insert(assignment_id.clone(), key.clone());
        self.workers.get_mut(&worker_id).expect("picked from workers").running.insert(assignment_id.clone());
        // Recorded before the worker hears of it: the `Content` service lets
        // a worker read the blobs of the tenants whose steps the state shows
        // running on it (`blob_owners.rs`), and the worker reads at once.
        for (bid, sid) in waiters {
            self.mark_running(&bid, &sid, &worker_id, attempt).await;
        }
        let Some(w) = self.workers.get_mut(&worker_id) else { return true };
        if w.tx.send(ToWorker::Assign(assignment)).is_err() {
            // The connection is closing; WorkerDown will requeue it.
            tracing::debug!(worker = %worker_id, "assignment to a closing connection");
        }
        true
    }

    fn pick_worker(&self, exec: &Exec) -> Option<String> {
        let node = &exec.node;
        let heads: Vec<_> = node
            .cache_mounts
            .iter()
            .filter_map(|m| {
                let k = HeadKey { namespace: exec.namespace.clone(), cache_id: m.id.clone(), slot: 0 };
                self.heads.head(&k).map(|h| (k, h.snapshot))
            })
            .collect();
        let parent_layers: Vec<Digest> = exec.inputs.iter().flat_map(|i| i.result.layers.iter().copied()).collect();
        let candidate = |w: &WorkerSlot| {
            !w.draining && w.info.tenants.contains(&exec.namespace) && node.labels.iter().all(|(k, v)| w.info.labels.get(k) == Some(v))
        };
        let needed = platform::required_fit(&node.platform, self.workers.values().filter(|w| candidate(w)).map(|w| &w.info));
        self.workers
            .iter()
            .filter(|(_, w)| {
                candidate(w)
                    && (w.running.len() as u32) < w.info.max_parallel.max(1)
                    && platform::fit(&node.platform, &w.info) == Some(needed)
            })
            .max_by_key(|(id, w)| {
                let snapshot_score = heads.iter().filter(|h| w.info.snapshots.contains(h)).count() * 10;
                let layer_score = parent_layers.iter().filter(|l| w.info.layers.contains(l)).count();
                (snapshot_score + layer_score, std::cmp::Reverse(w.running.len()), std::cmp::Reverse((*id).clone()))
            })
            .map(|(id, _)| id.clone())
    }
}

pub mod events;
mod failover;
mod late_commits;
mod platform;

mod secrets;
mod log_clip;
mod quota;
mod unschedulable;
pub mod worker_view;

#[cfg(test)]
mod tests;
