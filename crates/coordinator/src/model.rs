//! The coordinator's vocabulary: the types every part of it speaks, and
//! nothing that does anything with them.
//!
//! A build graph as a client submits it ([`StepNode`], [`BuildRequest`]);
//! what the durable state records about builds, results and cache heads
//! ([`BuildState`], [`ActionResult`], [`HeadKey`]); what a build tells its
//! clients ([`BuildEvent`]); and what the scheduler and a worker say to each
//! other ([`Assignment`], [`ToWorker`], [`FromWorker`], [`StepOutcome`]).
//! They live below the state, the scheduler and the services, so those
//! import them downwards and never each other for a type. Wire (protobuf)
//! forms are converted in `wire.rs`, not here.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use rbk_store::Digest;
use serde::{Deserialize, Serialize};

/// A cache mount's concurrency mode, as in `RUN --mount=type=cache,sharing=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharing {
    /// Many users at once; concurrent commits are merged. Never blocks.
    Shared,
    /// Each concurrent user gets its own copy (a "slot"); never blocks.
    Private,
    /// One user at a time, farm-wide (a lease with expiry).
    Locked,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        }
    }
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "shared" => Ok(Sharing::Shared),
            "private" => Ok(Sharing::Private),
            "locked" => Ok(Sharing::Locked),
            other => Err(format!("sharing={other:?}: expected shared, private or locked")),
        }
    }
}

/// Names one cache-mount head. Slot 0 is the shared/locked head; private
/// users get slots 1, 2, ... so concurrent private users never share one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HeadKey {
    pub namespace: String,
    pub cache_id: String,
    pub slot: u32,
}

impl fmt::Display for HeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.cache_id)?;
        if self.slot != 0 {
            write!(f, "#{}", self.slot)?;
        }
        Ok(())
    }
}

/// What a step produced: enough to skip it next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub layers: Vec<Digest>,
    /// Image config changes, opaque JSON from the worker.
    pub config: Vec<u8>,
    pub duration_ms: u64,
    pub worker_id: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
        }
    }
}

/// A cache mount as a step declares it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheMountSpec {
    pub id: String,
    pub sharing: Sharing,
}

/// One step of a build graph, neutral of the Dockerfile language: the
/// frontend maps its steps onto this. Serde: it is replicated inside
/// `Command::CreateBuild` so a new leader can resume the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepNode {
    pub id: String,
    pub key: String,
    pub deps: Vec<String>,
    /// Empty: any platform.
    pub platform: String,
    /// Labels a worker must carry (exact values).
    pub labels: BTreeMap<String, String>,
    pub cache_mounts: Vec<CacheMountSpec>,
    /// What the worker executes, opaque here.
    pub payload: Vec<u8>,
    /// For progress lines.
    pub name: String,
    /// Ids of the secrets the step mounts (never their values), filled by
    /// the client's planner: what a new leader that adopted the build
    /// waits for its client to re-supply (`scheduler/secrets.rs`). Absent
    /// in graphs replicated before the field existed.
    #[serde(default)]
    pub secret_ids: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub namespace: String,
    pub steps: Vec<StepNode>,
    pub no_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    Accepted { build_id: String, total_steps: u32 },
    Started { step_id: String, worker_id: String, attempt: u32, name: String },
    /// `config` is the cached result's opaque config (what the worker
    /// reported), so a client can assemble the image without asking again.
    Cached { step_id: String, name: String, layers: Vec<Digest>, config: Vec<u8> },
    Log { step_id: String, worker_id: String, stream: String, line: String },
    Finished { step_id: String, worker_id: String, duration_ms: u64, bytes_restored: u64, layers: Vec<Digest>, config: Vec<u8> },
    Failed { step_id: String, worker_id: String, message: String, exit_code: i32 },
    BuildFinished { state: BuildState, duration_ms: u64, message: String },
}

/// A connected worker: what it said about itself (platform, capacity, what
/// it holds) and what the token file says of it (id, labels, tenants).
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    pub id: String,
    pub platform: String,
    /// Platforms it runs under emulation (QEMU), besides `platform`.
    pub emulated_platforms: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_parallel: u32,
    pub layers: HashSet<Digest>,
    pub snapshots: HashSet<(HeadKey, Digest)>,
    /// Assignments it holds from an earlier session (a new leader keeps
    /// them on it; see `scheduler/failover.rs`).
    pub running: Vec<HeldAssignment>,
    /// Tenants whose steps it may run (its pool's, from the token file).
    pub tenants: BTreeSet<String>,
    /// Hash of the token its session presented: a second session under the
    /// same id is refused unless it presents the same one.
    pub credential: String,
}


#[cfg(test)]
impl WorkerInfo {
    /// A worker of a pool serving the tenants the unit tests submit as.
    pub(crate) fn serving_test_tenants() -> Self {
        Self { tenants: ["team", "a", "b"].map(String::from).into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountGrant {
    pub cache_id: String,
    pub sharing: Sharing,
    pub slot: u32,
    /// `(snapshot, generation)` to restore, `None` if the cache is empty.
    pub head: Option<(Digest, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInput {
    pub step_id: String,
    pub key: String,
    pub result: ActionResult,
}

/// A build's `--secret` values: held in memory for the build's lifetime and
/// sent only inside assignments, never into coordinator state (so never
/// into the Raft log). `Debug` shows the ids, not the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub assignment_id: String,
    pub build_id: String,
    pub step_id: String,
    pub key: String,
    pub namespace: String,
    pub attempt: u32,
    pub payload: Vec<u8>,
    pub mounts: Vec<MountGrant>,
    pub inputs: Vec<StepInput>,
    pub secrets: Secrets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    Assign(Assignment),
    Cancel { assignment_id: String },
    /// The worker's drain was read: no assignment follows.
    DrainAck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheCommit {
    pub cache_id: String,
    pub slot: u32,
    pub base_generation: u64,
    pub snapshot: Digest,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// `commits_follow`: the worker captures the cache mounts after this
    /// result; they arrive as [`FromWorker::Commits`] (and `commits` is
    /// empty).
    Succeeded { layers: Vec<Digest>, config: Vec<u8>, commits: Vec<CacheCommit>, bytes_restored: u64, duration_ms: u64, commits_follow: bool },
    /// `commits`: cache mounts keep what a failed step wrote (as in
    /// BuildKit), so they are committed too.
    Failed { message: String, exit_code: i32, commits: Vec<CacheCommit> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    Heartbeat,
    Log { assignment_id: String, stream: String, line: String },
    Result { assignment_id: String, outcome: StepOutcome },
    /// The commits of a step whose result said `commits_follow`; `error`
    /// when capturing failed (nothing to commit).
    Commits { assignment_id: String, commits: Vec<CacheCommit>, error: String },
    Drain,
}

/// One assignment a worker says it holds when it registers: running, or
/// finished with its result still to be delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldAssignment {
    pub assignment_id: String,
    pub build_id: String,
    pub step_id: String,
    pub attempt: u32,
}

/// An assignment as the scheduler runs it now: what a forward must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningAssignment {
    pub worker_id: String,
    /// Hash of the token the running worker's session presented.
    pub credential: String,
    pub namespace: String,
    /// Every build waiting on the step (identical steps run once).
    pub build_ids: Vec<String>,
}
