//! All durable coordinator state behind one interface.
//!
//! Every change is a [`Command`] applied by [`StateMachine::apply`], which is
//! deterministic: it reads no clock (times travel inside commands), no
//! randomness, and iterates only ordered maps. That is what lets the Raft
//! issue put the same commands in a replicated log and get the same state on
//! every node. Nothing else in the coordinator keeps durable state: worker
//! connections and in-flight scheduling are rebuilt from workers and builds.

use std::collections::BTreeMap;
use std::sync::RwLock;

use rbk_store::Digest;
use serde::{Deserialize, Serialize};

// The state speaks the coordinator's vocabulary (see `model.rs`).
pub use crate::model::{ActionResult, BuildState, HeadKey, Sharing};
use crate::blob_owners::BlobOwners;
use crate::usage::Usage;
use crate::gc_fence::{GcCommand, GcFences};
use crate::model::StepNode;
use crate::references::References;

/// How many recent builds are remembered; older finished ones are dropped.
pub const MAX_BUILDS: usize = 1000;
/// How many past generations of a cache head are kept as merge bases.
pub const HEAD_HISTORY: usize = 32;

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    /// A tenant (team or project); its name is the namespace of all its
    /// cache ids and action-cache entries.
    Tenant(String),
    /// A worker of the given pool, from state written before pools listed
    /// their tenants: it serves no tenant (the safe reading of an old log;
    /// the token file re-installed at start replaces it).
    Worker(String),
    /// A worker bound to the tenants its pool serves, with the identity and
    /// labels the token file gives it (see `auth.rs`).
    BoundWorker(WorkerGrant),
    /// A token removed from the token file (see [`Command::SetTokens`]):
    /// refused everywhere with "token revoked", also by followers, which
    /// otherwise answer an unknown token with "retry" (their state may lag).
    /// Kept by hash only, at most [`MAX_REVOKED`] of them.
    Revoked { revoked_ms: u64 },
}

/// How many revoked token hashes are remembered (oldest forgotten first;
/// a forgotten one is simply unknown, which is still refused).
pub const MAX_REVOKED: usize = 10_000;

/// What a worker token allows: which pool, which tenants it serves, and the
/// identity it runs under. Labels and tenants come from the coordinator's
/// token file, never from what the worker says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerGrant {
    pub pool: String,
    /// The worker id this token is for; `None`: a pool token shared by many
    /// workers, each naming its own id (a second session under an id in
    /// use is refused unless it presents the same token).
    pub id: Option<String>,
    /// The pool's labels overlaid with the worker's own.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Tenants whose steps the scheduler may assign to this worker.
    pub tenants: std::collections::BTreeSet<String>,
}

/// The newest snapshot of one cache mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHead {
    pub snapshot: Digest,
    /// Starts at 1 with the first commit and grows by one per commit.
    pub generation: u64,
    pub total_bytes: u64,
    pub updated_ms: u64,
    /// Recent `(generation, snapshot)` pairs, oldest first, newest included:
    /// the merge base for a commit that started from an older generation.
    pub history: Vec<(u64, Digest)>,
    /// The sizes of the last [`HEAD_HISTORY`] generations, oldest first
    /// (the dashboard's chart); only generations committed since sizes
    /// were kept.
    #[serde(default)]
    pub sizes: Vec<GenerationSize>,
}

/// One generation of a head: its size and when it was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationSize {
    pub generation: u64,
    pub bytes: u64,
    pub at_ms: u64,
}

/// A head as snapshots up to `rbksnap3` held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHeadV3 {
    pub snapshot: Digest,
    pub generation: u64,
    pub total_bytes: u64,
    pub updated_ms: u64,
    pub history: Vec<(u64, Digest)>,
}

impl From<CacheHeadV3> for CacheHead {
    fn from(h: CacheHeadV3) -> Self {
        let CacheHeadV3 { snapshot, generation, total_bytes, updated_ms, history } = h;
        CacheHead { snapshot, generation, total_bytes, updated_ms, history, sizes: Vec::new() }
    }
}

/// The builds and heads of an old layout in today's.
fn upgrade<K: Ord, A: Into<B>, B>(m: BTreeMap<K, A>) -> BTreeMap<K, B> {
    m.into_iter().map(|(k, v)| (k, v.into())).collect()
}

impl CacheHead {
    pub fn snapshot_at(&self, generation: u64) -> Option<Digest> {
        self.history.iter().find(|(g, _)| *g == generation).map(|(_, d)| *d)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Pending,
    Cached,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl StepState {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Cached => "cached",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub key: String,
    pub state: StepState,
    pub worker_id: String,
    pub attempts: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub id: String,
    pub namespace: String,
    pub state: BuildState,
    pub steps: Vec<StepRecord>,
    pub created_ms: u64,
    pub finished_ms: u64,
    pub message: String,
    /// The whole step graph (payloads, deps, cache mounts), so a new Raft
    /// leader can resume the build; empty for builds created without it.
    #[serde(default)]
    pub graph: Vec<StepNode>,
    /// The name of the token that submitted it (the token file's name for
    /// it, never the token); empty for builds from before names.
    #[serde(default)]
    pub submitter: String,
}

/// A build as snapshots up to `rbksnap3` held it (bincode has no field
/// names: a layout change needs its old form to read old snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecordV3 {
    pub id: String,
    pub namespace: String,
    pub state: BuildState,
    pub steps: Vec<StepRecord>,
    pub created_ms: u64,
    pub finished_ms: u64,
    pub message: String,
    pub graph: Vec<StepNode>,
}

impl From<BuildRecordV3> for BuildRecord {
    fn from(b: BuildRecordV3) -> Self {
        let BuildRecordV3 { id, namespace, state, steps, created_ms, finished_ms, message, graph } = b;
        BuildRecord { id, namespace, state, steps, created_ms, finished_ms, message, graph, submitter: String::new() }
    }
}

/// A farm-wide lease on one head (locked mounts, private slots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub expires_ms: u64,
}

/// Every mutation of coordinator state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a token (by its blake3 hash: the state never holds tokens).
    PutToken { token_hash: String, principal: Principal },
    /// `graph` (optional for compatibility) is what a new leader resumes
    /// the build from.
    CreateBuild {
        build_id: String,
        namespace: String,
        steps: Vec<(String, String)>,
        now_ms: u64,
        #[serde(default)]
        graph: Vec<StepNode>,
        /// The submitting token's name (see [`BuildRecord::submitter`]).
        #[serde(default)]
        submitter: String,
    },
    SetStep { build_id: String, step_id: String, state: StepState, worker_id: String, attempts: u32, message: String },
    FinishBuild { build_id: String, state: BuildState, message: String, now_ms: u64 },
    /// Records a step's result in the namespace's action cache.
    PutAction { namespace: String, key: String, result: ActionResult },
    /// Compare-and-set of a cache head: succeeds only if the head is still
    /// at `base_generation` (0 = no head yet); otherwise answers
    /// [`Outcome::HeadMoved`] so the caller merges and tries again.
    CommitHead { head: HeadKey, base_generation: u64, snapshot: Digest, total_bytes: u64, now_ms: u64 },
    /// Locked: the lease on slot 0. Private: the lowest slot >= 1 without a
    /// live lease. Shared needs no lease.
    AcquireLease { namespace: String, cache_id: String, sharing: Sharing, holder: String, now_ms: u64, ttl_ms: u64 },
    /// Extends every lease `holder` has.
    RenewLeases { holder: String, now_ms: u64, ttl_ms: u64 },
    ReleaseLeases { holder: String },
    /// Forgets a head (eviction); its snapshot becomes garbage.
    DropHead { head: HeadKey },
    /// The store collector's fences (see `gc_fence.rs`).
    Gc(GcCommand),
    /// Applies `cmd` (a command that adds references) unless a blob it
    /// names, or one of `packs` (the packs of a committed snapshot), is
    /// fenced against a writer that started at `started_ms`: then nothing
    /// changes and the answer is [`Outcome::Refused`].
    Guarded { started_ms: u64, packs: Vec<Digest>, cmd: Box<Command> },
    /// Eviction (see `eviction.rs`).
    Evict(EvictCommand),
    /// Makes the token table exactly `tokens` (the token file, by hash):
    /// every other known token becomes [`Principal::Revoked`]. One command
    /// for the whole file, so a removal reaches every node with the same
    /// log entry.
    SetTokens {
        tokens: BTreeMap<String, Principal>,
        now_ms: u64,
        /// Token hash → the name the token file gives it (for the
        /// dashboard's "submitted by"; never the token).
        #[serde(default)]
        names: BTreeMap<String, String>,
    },
    /// `namespace` uploaded these blobs through the `Content` service (the
    /// bytes verified against each digest): it has them from now on (see
    /// `blob_owners.rs`). At most `blob_owners::OWN_BATCH_MAX` per command.
    OwnBlobs { namespace: String, blobs: Vec<Digest> },
    /// The store collector deleted these blobs: nobody has them any more.
    /// At most `blob_owners::OWN_BATCH_MAX` per command.
    ForgetBlobs { blobs: Vec<Digest> },
}

/// The eviction's commands. Each names what it drops with the last use
/// the plan saw: one used since (a commit, a hit, a new build mounting it)
/// is kept, so a plan made from a read never drops what just became hot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvictCommand {
    DropHeads { heads: Vec<(HeadKey, u64)> },
    /// `((namespace, key), last used)` action-cache entries.
    DropActions { entries: Vec<((String, String), u64)> },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Committed { generation: u64 },
    HeadMoved { current: CacheHead },
    LeaseGranted { slot: u32 },
    LeaseBusy { holder: String, expires_ms: u64 },
    /// A [`GcCommand`]: whether it took effect (a fence is refused when
    /// references were committed since its generation).
    Gc { held: bool },
    /// A guarded command named blobs the store collector fenced: the
    /// writer must upload them again (or fail with a retryable error).
    Refused { blobs: Vec<Digest> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("build {0} is unknown")]
    UnknownBuild(String),
    #[error("build {build}: step {step} is unknown")]
    UnknownStep { build: String, step: String },
    #[error("build {0} already exists")]
    DuplicateBuild(String),
    #[error("sharing=shared needs no lease (cache {0})")]
    SharedLease(String),
    #[error("coordinator state unavailable: {0}")]
    Unavailable(String),
    /// A replicated coordinator's follower cannot change state; `leader`
    /// is the leader's client URL when known.
    #[error("this coordinator is not the raft leader (leader: {})", leader.as_deref().unwrap_or("unknown, election in progress"))]
    NotLeader { leader: Option<String> },
}

impl Command {
    /// Whether applying this may make a blob reachable.
    pub fn may_add_references(&self) -> bool {
        matches!(self, Command::CreateBuild { .. } | Command::PutAction { .. } | Command::CommitHead { .. } | Command::Guarded { .. })
    }

    /// What this command would make reachable (head commits: the manifest
    /// only; its packs travel in [`Command::Guarded`]'s `packs`).
    pub fn references(&self) -> References {
        let mut r = References::default();
        match self {
            Command::CreateBuild { graph, .. } => r.add_graph(graph),
            Command::PutAction { result, .. } => r.add_result(result),
            Command::CommitHead { snapshot, .. } => {
                r.snapshots.insert(*snapshot);
            }
            Command::Guarded { packs, cmd, .. } => {
                r = cmd.references();
                r.blobs.extend(packs.iter().copied());
            }
            _ => {}
        }
        r
    }
}

/// The state machine as snapshots held it before the store collector and
/// eviction added their parts (`gc`, `usage`): what a coordinator upgraded
/// across that change reads from its last snapshot, once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LegacyStateMachine {
    pub tokens: BTreeMap<String, Principal>,
    pub builds: BTreeMap<String, BuildRecordV3>,
    pub actions: BTreeMap<(String, String), ActionResult>,
    pub heads: BTreeMap<HeadKey, CacheHeadV3>,
    pub leases: BTreeMap<HeadKey, Lease>,
}

impl From<LegacyStateMachine> for StateMachine {
    fn from(l: LegacyStateMachine) -> Self {
        let mut m = StateMachine {
            tokens: l.tokens,
            builds: upgrade(l.builds),
            actions: l.actions,
            heads: upgrade(l.heads),
            leases: l.leases,
            ..Default::default()
        };
        m.own_what_results_and_heads_name();
        m
    }
}

/// The deterministic state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    tokens: BTreeMap<String, Principal>,
    builds: BTreeMap<String, BuildRecord>,
    /// (namespace, key) → result: one tenant's results never satisfy
    /// another's steps, so a tenant cannot poison another's builds.
    actions: BTreeMap<(String, String), ActionResult>,
    heads: BTreeMap<HeadKey, CacheHead>,
    leases: BTreeMap<HeadKey, Lease>,
    /// The store collector's epoch and fences.
    gc: GcFences,
    /// When heads and action-cache entries were last used (eviction).
    #[serde(default)]
    usage: Usage,
    /// Which tenants have which blobs (`blob_owners.rs`): what the
    /// `Content` service lets each caller see.
    #[serde(default)]
    blob_owners: BlobOwners,
    /// Token hash → the name the token file gives it.
    #[serde(default)]
    token_names: BTreeMap<String, String>,
}

/// The state machine as `rbksnap2` snapshots held it, before blob
/// ownership: bincode has no field names, so a snapshot of that layout is
/// read through this and converted (its tenants then own nothing until
/// they upload again or their next results and commits name blobs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineV2 {
    pub tokens: BTreeMap<String, Principal>,
    pub builds: BTreeMap<String, BuildRecordV3>,
    pub actions: BTreeMap<(String, String), ActionResult>,
    pub heads: BTreeMap<HeadKey, CacheHeadV3>,
    pub leases: BTreeMap<HeadKey, Lease>,
    pub gc: GcFences,
    #[serde(default)]
    pub usage: Usage,
}

impl From<StateMachineV2> for StateMachine {
    fn from(v: StateMachineV2) -> Self {
        let StateMachineV2 { tokens, builds, actions, heads, leases, gc, usage } = v;
        let blob_owners = BlobOwners::default();
        let mut m: StateMachine = StateMachineV3 { tokens, builds, actions, heads, leases, gc, usage, blob_owners }.into();
        m.own_what_results_and_heads_name();
        m
    }
}

/// The state machine as `rbksnap3` snapshots held it, before token names,
/// build submitters and generation sizes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineV3 {
    pub tokens: BTreeMap<String, Principal>,
    pub builds: BTreeMap<String, BuildRecordV3>,
    pub actions: BTreeMap<(String, String), ActionResult>,
    pub heads: BTreeMap<HeadKey, CacheHeadV3>,
    pub leases: BTreeMap<HeadKey, Lease>,
    pub gc: GcFences,
    pub usage: Usage,
    pub blob_owners: BlobOwners,
}

impl From<StateMachineV3> for StateMachine {
    fn from(v: StateMachineV3) -> Self {
        let StateMachineV3 { tokens, builds, actions, heads, leases, gc, usage, blob_owners } = v;
        StateMachine { tokens, builds: upgrade(builds), actions, heads: upgrade(heads), leases, gc, usage, blob_owners, token_names: BTreeMap::new() }
    }
}

impl StateMachine {
    pub fn apply(&mut self, cmd: Command) -> Result<Outcome, StateError> {
        if cmd.may_add_references() {
            self.gc.note_reference();
        }
        match cmd {
            Command::PutToken { token_hash, principal } => {
                self.tokens.insert(token_hash, principal);
            }
            Command::CreateBuild { build_id, namespace, steps, now_ms, graph, submitter } => {
                if self.builds.contains_key(&build_id) {
                    return Err(StateError::DuplicateBuild(build_id));
                }
                self.note_mounts_used(&namespace, &graph, now_ms);
                let steps = steps
                    .into_iter()
                    .map(|(id, key)| StepRecord {
                        id,
                        key,
                        state: StepState::Pending,
                        worker_id: String::new(),
                        attempts: 0,
                        message: String::new(),
                    })
                    .collect();
                self.builds.insert(
                    build_id.clone(),
                    BuildRecord {
                        id: build_id,
                        namespace,
                        state: BuildState::Running,
                        steps,
                        created_ms: now_ms,
                        finished_ms: 0,
                        message: String::new(),
                        graph,
                        submitter,
                    },
                );
                self.evict_old_builds();
            }
            Command::SetStep { build_id, step_id, state, worker_id, attempts, message } => {
                let build = self.builds.get_mut(&build_id).ok_or_else(|| StateError::UnknownBuild(build_id.clone()))?;
                let step = build
                    .steps
                    .iter_mut()
                    .find(|s| s.id == step_id)
                    .ok_or_else(|| StateError::UnknownStep { build: build_id.clone(), step: step_id.clone() })?;
                if state == StepState::Cached && self.actions.contains_key(&(build.namespace.clone(), step.key.clone())) {
                    // A hit, at the build's time (the command has none).
                    self.usage.action_used(&build.namespace, &step.key, build.created_ms);
                }
                step.state = state;
                step.worker_id = worker_id;
                step.attempts = attempts;
                step.message = message;
            }
            Command::FinishBuild { build_id, state, message, now_ms } => {
                let build = self.builds.get_mut(&build_id).ok_or(StateError::UnknownBuild(build_id))?;
                build.state = state;
                build.message = message;
                build.finished_ms = now_ms;
            }
            Command::PutAction { namespace, key, result } => {
                self.usage.action_used(&namespace, &key, result.created_ms);
                let mut refs = References::default();
                refs.add_result(&result);
                self.blob_owners.grant(&namespace, refs.all());
                self.actions.insert((namespace, key), result);
            }
            Command::CommitHead { head, base_generation, snapshot, total_bytes, now_ms } => {
                // An absent head (never committed, or dropped by eviction)
                // accepts any base: there is nothing to merge with.
                if let Some(current) = self.heads.get(&head)
                    && current.generation != base_generation
                {
                    return Ok(Outcome::HeadMoved { current: current.clone() });
                }
                let head_key = head.clone();
                let entry = self.heads.entry(head).or_insert_with(|| CacheHead {
                    snapshot,
                    generation: 0,
                    total_bytes,
                    updated_ms: now_ms,
                    history: Vec::new(),
                    sizes: Vec::new(),
                });
                entry.generation += 1;
                entry.snapshot = snapshot;
                entry.total_bytes = total_bytes;
                entry.updated_ms = now_ms;
                entry.history.push((entry.generation, snapshot));
                if entry.history.len() > HEAD_HISTORY {
                    entry.history.remove(0);
                }
                entry.sizes.push(GenerationSize { generation: entry.generation, bytes: total_bytes, at_ms: now_ms });
                if entry.sizes.len() > HEAD_HISTORY {
                    entry.sizes.remove(0);
                }
                let generation = entry.generation;
                self.usage.head_used(&head_key, now_ms);
                self.blob_owners.grant(&head_key.namespace, [&snapshot]);
                return Ok(Outcome::Committed { generation });
            }
            Command::AcquireLease { namespace, cache_id, sharing, holder, now_ms, ttl_ms } => {
                let mut key = HeadKey { namespace, cache_id, slot: 0 };
                match sharing {
                    Sharing::Shared => return Err(StateError::SharedLease(key.to_string())),
                    Sharing::Locked => {
                        if let Some(lease) = self.leases.get(&key)
                            && lease.expires_ms > now_ms
                            && lease.holder != holder
                        {
                            return Ok(Outcome::LeaseBusy { holder: lease.holder.clone(), expires_ms: lease.expires_ms });
                        }
                    }
                    Sharing::Private => {
                        key.slot = 1;
                        while let Some(lease) = self.leases.get(&key)
                            && lease.expires_ms > now_ms
                            && lease.holder != holder
                        {
                            key.slot += 1;
                        }
                    }
                }
                let slot = key.slot;
                if self.heads.contains_key(&key) {
                    self.usage.head_used(&key, now_ms);
                }
                self.leases.insert(key, Lease { holder, expires_ms: now_ms.saturating_add(ttl_ms) });
                return Ok(Outcome::LeaseGranted { slot });
            }
            Command::RenewLeases { holder, now_ms, ttl_ms } => {
                for lease in self.leases.values_mut().filter(|l| l.holder == holder) {
                    lease.expires_ms = now_ms.saturating_add(ttl_ms);
                }
            }
            Command::ReleaseLeases { holder } => {
                self.leases.retain(|_, l| l.holder != holder);
            }
            Command::DropHead { head } => {
                self.heads.remove(&head);
                self.usage.head_dropped(&head);
            }
            Command::Evict(EvictCommand::DropHeads { heads }) => {
                for (key, seen) in heads {
                    if self.heads.get(&key).is_some_and(|h| self.usage.head_used_at(&key, h.updated_ms) <= seen) {
                        self.heads.remove(&key);
                        self.usage.head_dropped(&key);
                    }
                }
            }
            Command::Evict(EvictCommand::DropActions { entries }) => {
                for ((namespace, key), seen) in entries {
                    if self.actions.get(&(namespace.clone(), key.clone())).is_some_and(|r| self.usage.action_used_at(&namespace, &key, r.created_ms) <= seen) {
                        self.usage.action_dropped(&namespace, &key);
                        self.actions.remove(&(namespace, key));
                    }
                }
            }
            Command::Gc(gc) => {
                let oldest = self.builds.values().filter(|b| b.state == BuildState::Running).map(|b| b.created_ms).min();
                return Ok(Outcome::Gc { held: self.gc.apply(gc, oldest) });
            }
            Command::Guarded { started_ms, packs, cmd } => {
                let refs = cmd.references();
                let blobs = self.gc.refused(refs.all().chain(packs.iter()), started_ms);
                if !blobs.is_empty() {
                    return Ok(Outcome::Refused { blobs });
                }
                let committer = match &*cmd {
                    Command::CommitHead { head, .. } => Some(head.namespace.clone()),
                    _ => None,
                };
                let outcome = self.apply(*cmd)?;
                if let (Some(ns), Outcome::Committed { .. }) = (committer, &outcome) {
                    // The packs of the snapshot the head now names.
                    self.blob_owners.grant(&ns, packs.iter());
                }
                return Ok(outcome);
            }
            Command::SetTokens { tokens, now_ms, names } => {
                // Names of tokens the file keeps; a revoked token's goes.
                self.token_names = names.into_iter().filter(|(h, _)| tokens.contains_key(h)).collect();
                self.set_tokens(tokens, now_ms)
            }
            Command::OwnBlobs { namespace, blobs } => self.blob_owners.grant(&namespace, blobs.iter()),
            Command::ForgetBlobs { blobs } => self.blob_owners.forget(blobs.iter()),
        }
        Ok(Outcome::Ok)
    }

    /// Grants every tenant what its action-cache entries and heads name
    /// (heads: their manifests; packs are only known at commit time, so a
    /// head restored this way has its packs uploaded again when needed).
    fn own_what_results_and_heads_name(&mut self) {
        for ((ns, _), result) in &self.actions {
            let mut refs = References::default();
            refs.add_result(result);
            self.blob_owners.grant(ns, refs.all());
        }
        for (key, head) in &self.heads {
            self.blob_owners.grant(&key.namespace, std::iter::once(&head.snapshot).chain(head.history.iter().map(|(_, d)| d)));
        }
    }

    /// Whether tenant `namespace` has `digest` (see `blob_owners.rs`).
    pub fn tenant_has_blob(&self, namespace: &str, digest: &Digest) -> bool {
        self.blob_owners.has(namespace, digest)
    }

    /// Whether any of `namespaces` has `digest`.
    pub fn any_tenant_has_blob(&self, namespaces: &std::collections::BTreeSet<String>, digest: &Digest) -> bool {
        self.blob_owners.any_has(namespaces, digest)
    }

    /// How many blobs have an owner (bounded by the store's blobs).
    pub fn owned_blobs(&self) -> usize {
        self.blob_owners.len()
    }

    /// The tenants of the builds whose steps run on `worker_id` now: whose
    /// blobs that worker may read through the `Content` service.
    pub fn tenants_running_on(&self, worker_id: &str) -> std::collections::BTreeSet<String> {
        self.builds
            .values()
            .filter(|b| b.state == BuildState::Running)
            .filter(|b| b.steps.iter().any(|s| s.state == StepState::Running && s.worker_id == worker_id))
            .map(|b| b.namespace.clone())
            .collect()
    }

    /// See [`Command::SetTokens`].
    fn set_tokens(&mut self, tokens: BTreeMap<String, Principal>, now_ms: u64) {
        for (hash, principal) in self.tokens.iter_mut() {
            if !tokens.contains_key(hash) && !matches!(principal, Principal::Revoked { .. }) {
                *principal = Principal::Revoked { revoked_ms: now_ms };
            }
        }
        // A file cannot revoke by naming a token: only absence does.
        self.tokens.extend(tokens.into_iter().filter(|(_, p)| !matches!(p, Principal::Revoked { .. })));
        let revoked = |p: &Principal| match p {
            Principal::Revoked { revoked_ms } => Some(*revoked_ms),
            _ => None,
        };
        let mut excess = self.tokens.values().filter(|p| revoked(p).is_some()).count().saturating_sub(MAX_REVOKED);
        if excess > 0 {
            let mut oldest: Vec<(u64, String)> = self.tokens.iter().filter_map(|(h, p)| Some((revoked(p)?, h.clone()))).collect();
            oldest.sort();
            for (_, hash) in oldest {
                if excess == 0 {
                    break;
                }
                self.tokens.remove(&hash);
                excess -= 1;
            }
        }
    }

    /// A new build mounts these heads (slot 0; private slots are used
    /// through their leases): they are in use now.
    fn note_mounts_used(&mut self, namespace: &str, graph: &[StepNode], now_ms: u64) {
        for mount in graph.iter().flat_map(|s| &s.cache_mounts) {
            let key = HeadKey { namespace: namespace.to_owned(), cache_id: mount.id.clone(), slot: 0 };
            if self.heads.contains_key(&key) {
                self.usage.head_used(&key, now_ms);
            }
        }
    }

    fn evict_old_builds(&mut self) {
        while self.builds.len() > MAX_BUILDS {
            let oldest = self
                .builds
                .values()
                .filter(|b| b.state != BuildState::Running)
                .min_by_key(|b| (b.created_ms, b.id.clone()))
                .map(|b| b.id.clone());
            match oldest {
                Some(id) => self.builds.remove(&id),
                None => break,
            };
        }
    }

    /// Who a token hash belongs to; `None` for unknown and revoked ones.
    pub fn principal(&self, token_hash: &str) -> Option<&Principal> {
        self.tokens.get(token_hash).filter(|p| !matches!(p, Principal::Revoked { .. }))
    }

    /// The name the token file gives this token (by hash), if any.
    pub fn token_name(&self, token_hash: &str) -> Option<&str> {
        self.token_names.get(token_hash).map(String::as_str)
    }

    /// Whether this token was removed from the token file.
    pub fn token_revoked(&self, token_hash: &str) -> bool {
        matches!(self.tokens.get(token_hash), Some(Principal::Revoked { .. }))
    }

    /// Whether a worker token of its own names this worker id: then only
    /// that token may register under it (a pool token cannot squat it).
    pub fn worker_id_is_owned(&self, worker_id: &str) -> bool {
        self.tokens.values().any(|p| matches!(p, Principal::BoundWorker(g) if g.id.as_deref() == Some(worker_id)))
    }

    pub fn build(&self, build_id: &str) -> Option<&BuildRecord> {
        self.builds.get(build_id)
    }

    /// A namespace's builds, newest first.
    pub fn builds_of(&self, namespace: &str, limit: usize) -> Vec<BuildRecord> {
        let mut v: Vec<_> = self.builds.values().filter(|b| b.namespace == namespace).cloned().collect();
        v.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        v.truncate(limit);
        v
    }

    /// A namespace's builds, borrowed, in no particular order (a reader
    /// that shapes many builds without copying their graphs).
    pub fn builds_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a BuildRecord> + 'a {
        self.builds.values().filter(move |b| b.namespace == namespace)
    }

    /// How many builds the state holds (every tenant's).
    pub fn builds_count(&self) -> usize {
        self.builds.len()
    }

    /// Builds still running, oldest first (what a new leader resumes).
    pub fn running_builds(&self) -> Vec<BuildRecord> {
        let mut v: Vec<_> = self.builds.values().filter(|b| b.state == BuildState::Running).cloned().collect();
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        v
    }

    pub fn action(&self, namespace: &str, key: &str) -> Option<&ActionResult> {
        self.actions.get(&(namespace.to_owned(), key.to_owned()))
    }

    pub fn head(&self, key: &HeadKey) -> Option<&CacheHead> {
        self.heads.get(key)
    }

    /// A namespace's heads; never another namespace's.
    pub fn heads_of(&self, namespace: &str) -> Vec<(HeadKey, CacheHead)> {
        self.heads.iter().filter(|(k, _)| k.namespace == namespace).map(|(k, h)| (k.clone(), h.clone())).collect()
    }

    pub fn lease(&self, key: &HeadKey) -> Option<&Lease> {
        self.leases.get(key)
    }

    /// The store collector's epoch and fences.
    pub fn gc(&self) -> &GcFences {
        &self.gc
    }

    /// When heads and action-cache entries were last used.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Every head of every namespace (what the store collector marks from).
    pub fn all_heads(&self) -> impl Iterator<Item = (&HeadKey, &CacheHead)> {
        self.heads.iter()
    }

    /// Every action-cache entry of every namespace.
    pub fn all_actions(&self) -> impl Iterator<Item = (&(String, String), &ActionResult)> {
        self.actions.iter()
    }
}

/// The one interface to coordinator state. The in-memory implementation
/// applies commands directly; the Raft implementation will append them to a
/// replicated log and apply them once committed.
#[async_trait::async_trait]
pub trait CoordinatorState: Send + Sync + 'static {
    async fn apply(&self, cmd: Command) -> Result<Outcome, StateError>;
    /// Runs a read against the current state machine.
    fn read(&self, f: &mut dyn FnMut(&StateMachine));
}

/// Reads a value out of the state (a typed wrapper over `read`).
pub fn query<R>(state: &dyn CoordinatorState, f: impl FnOnce(&StateMachine) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    state.read(&mut |m| out = Some((f.take().expect("read calls back once"))(m)));
    out.expect("read calls back once")
}

/// Single-node state: the machine behind a lock.
#[derive(Debug, Default)]
pub struct MemoryState {
    machine: RwLock<StateMachine>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl CoordinatorState for MemoryState {
    async fn apply(&self, cmd: Command) -> Result<Outcome, StateError> {
        self.machine.write().unwrap_or_else(|e| e.into_inner()).apply(cmd)
    }

    fn read(&self, f: &mut dyn FnMut(&StateMachine)) {
        f(&self.machine.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Milliseconds since the Unix epoch, for the times commands carry.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, id: &str) -> HeadKey {
        HeadKey { namespace: ns.into(), cache_id: id.into(), slot: 0 }
    }

    fn commit(m: &mut StateMachine, head: &HeadKey, base: u64, data: &[u8]) -> Outcome {
        m.apply(Command::CommitHead {
            head: head.clone(),
            base_generation: base,
            snapshot: Digest::of(data),
            total_bytes: data.len() as u64,
            now_ms: 1,
        })
        .unwrap()
    }

    #[test]
    fn first_commit_creates_generation_one() {
        let mut m = StateMachine::default();
        assert_eq!(commit(&mut m, &key("a", "pip"), 0, b"x"), Outcome::Committed { generation: 1 });
        assert_eq!(m.head(&key("a", "pip")).unwrap().snapshot, Digest::of(b"x"));
    }

    #[test]
    fn commit_from_a_stale_generation_reports_the_moved_head() {
        let mut m = StateMachine::default();
        let k = key("a", "pip");
        commit(&mut m, &k, 0, b"1");
        commit(&mut m, &k, 1, b"2");
        match commit(&mut m, &k, 1, b"3") {
            Outcome::HeadMoved { current } => {
                assert_eq!(current.generation, 2);
                assert_eq!(current.snapshot_at(1), Some(Digest::of(b"1")));
            }
            other => panic!("expected HeadMoved, got {other:?}"),
        }
        assert_eq!(m.head(&k).unwrap().snapshot, Digest::of(b"2"));
    }

    #[test]
    fn commit_on_a_dropped_head_starts_it_afresh() {
        let mut m = StateMachine::default();
        let k = key("a", "pip");
        commit(&mut m, &k, 0, b"1");
        m.apply(Command::DropHead { head: k.clone() }).unwrap();
        assert_eq!(commit(&mut m, &k, 1, b"2"), Outcome::Committed { generation: 1 });
    }

    #[test]
    fn heads_are_namespaced() {
        let mut m = StateMachine::default();
        commit(&mut m, &key("a", "pip"), 0, b"1");
        assert!(m.head(&key("b", "pip")).is_none());
        assert!(m.heads_of("b").is_empty());
        assert_eq!(m.heads_of("a").len(), 1);
    }

    /// Tenant `a`'s request for a lease on cache `pip`.
    fn lease(sharing: Sharing, holder: &str, now_ms: u64, ttl_ms: u64) -> Command {
        Command::AcquireLease { namespace: "a".into(), cache_id: "pip".into(), sharing, holder: holder.into(), now_ms, ttl_ms }
    }

    #[test]
    fn locked_lease_excludes_others_until_released_or_expired() {
        let mut m = StateMachine::default();
        let acquire = |m: &mut StateMachine, holder: &str, now| m.apply(lease(Sharing::Locked, holder, now, 100)).unwrap();
        assert_eq!(acquire(&mut m, "s1", 0), Outcome::LeaseGranted { slot: 0 });
        assert!(matches!(acquire(&mut m, "s2", 50), Outcome::LeaseBusy { .. }));
        m.apply(Command::RenewLeases { holder: "s1".into(), now_ms: 90, ttl_ms: 100 }).unwrap();
        assert!(matches!(acquire(&mut m, "s2", 150), Outcome::LeaseBusy { .. }));
        assert_eq!(acquire(&mut m, "s2", 191), Outcome::LeaseGranted { slot: 0 });
        m.apply(Command::ReleaseLeases { holder: "s2".into() }).unwrap();
        assert_eq!(acquire(&mut m, "s3", 192), Outcome::LeaseGranted { slot: 0 });
    }

    #[test]
    fn private_users_get_distinct_slots_and_reuse_freed_ones() {
        let mut m = StateMachine::default();
        let acquire = |m: &mut StateMachine, holder: &str| m.apply(lease(Sharing::Private, holder, 0, 1000)).unwrap();
        assert_eq!(acquire(&mut m, "s1"), Outcome::LeaseGranted { slot: 1 });
        assert_eq!(acquire(&mut m, "s2"), Outcome::LeaseGranted { slot: 2 });
        m.apply(Command::ReleaseLeases { holder: "s1".into() }).unwrap();
        assert_eq!(acquire(&mut m, "s3"), Outcome::LeaseGranted { slot: 1 });
    }

    #[test]
    fn shared_mounts_take_no_lease() {
        let mut m = StateMachine::default();
        let err = m.apply(lease(Sharing::Shared, "s", 0, 1)).unwrap_err();
        assert!(matches!(err, StateError::SharedLease(_)));
    }

    #[test]
    fn action_cache_is_namespaced() {
        let mut m = StateMachine::default();
        let result = ActionResult { layers: vec![], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 0 };
        m.apply(Command::PutAction { namespace: "a".into(), key: "k".into(), result }).unwrap();
        assert!(m.action("a", "k").is_some());
        assert!(m.action("b", "k").is_none());
    }

    #[test]
    fn step_of_an_unknown_build_is_an_error_naming_it() {
        let mut m = StateMachine::default();
        let err = m
            .apply(Command::SetStep {
                build_id: "b1".into(),
                step_id: "s".into(),
                state: StepState::Done,
                worker_id: String::new(),
                attempts: 1,
                message: String::new(),
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "build b1 is unknown");
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_state() {
        let cmds = vec![
            Command::CreateBuild { build_id: "b1".into(), namespace: "a".into(), steps: vec![("s".into(), "k".into())], now_ms: 5, graph: vec![], submitter: String::new() },
            Command::CommitHead { head: key("a", "pip"), base_generation: 0, snapshot: Digest::of(b"1"), total_bytes: 1, now_ms: 6 },
            Command::AcquireLease {
                namespace: "a".into(),
                cache_id: "apt".into(),
                sharing: Sharing::Private,
                holder: "h".into(),
                now_ms: 7,
                ttl_ms: 10,
            },
            Command::FinishBuild { build_id: "b1".into(), state: BuildState::Succeeded, message: String::new(), now_ms: 8 },
        ];
        let run = || {
            let mut m = StateMachine::default();
            for c in cmds.clone() {
                m.apply(c).unwrap();
            }
            m
        };
        assert_eq!(run(), run());
        // Commands survive serialisation, as a replicated log needs.
        let json = serde_json::to_string(&cmds).unwrap();
        let back: Vec<Command> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cmds);
    }

    #[test]
    fn old_finished_builds_are_evicted_beyond_the_limit() {
        let mut m = StateMachine::default();
        for i in 0..=MAX_BUILDS {
            let id = format!("b{i:05}");
            m.apply(Command::CreateBuild { build_id: id.clone(), namespace: "a".into(), steps: vec![], now_ms: i as u64, graph: vec![], submitter: String::new() }).unwrap();
            m.apply(Command::FinishBuild { build_id: id, state: BuildState::Succeeded, message: String::new(), now_ms: i as u64 })
                .unwrap();
        }
        m.apply(Command::CreateBuild { build_id: "last".into(), namespace: "a".into(), steps: vec![], now_ms: 9999, graph: vec![], submitter: String::new() }).unwrap();
        assert!(m.build("b00000").is_none());
        assert!(m.build("last").is_some());
    }

    #[test]
    fn a_tenant_has_what_it_uploaded_and_what_its_results_and_head_commits_name_but_not_what_its_graph_names() {
        let mut m = StateMachine::default();
        let (uploaded, layer, manifest, pack, named) = (Digest::of(b"u"), Digest::of(b"l"), Digest::of(b"m"), Digest::of(b"p"), Digest::of(b"n"));
        m.apply(Command::OwnBlobs { namespace: "a".into(), blobs: vec![uploaded] }).unwrap();
        let result = ActionResult { layers: vec![layer], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 0 };
        m.apply(Command::PutAction { namespace: "a".into(), key: "k".into(), result }).unwrap();
        let commit = Command::CommitHead { head: key("a", "pip"), base_generation: 0, snapshot: manifest, total_bytes: 1, now_ms: 1 };
        m.apply(Command::Guarded { started_ms: 0, packs: vec![pack], cmd: Box::new(commit) }).unwrap();
        let payload = serde_json::to_vec(&serde_json::json!({ "context": named.to_string() })).unwrap();
        let graph = vec![StepNode { id: "s".into(), key: "k".into(), payload, ..Default::default() }];
        m.apply(Command::CreateBuild { build_id: "b".into(), namespace: "a".into(), steps: vec![], now_ms: 1, graph, submitter: String::new() }).unwrap();
        for d in [uploaded, layer, manifest, pack] {
            assert!(m.tenant_has_blob("a", &d), "{d}");
            assert!(!m.tenant_has_blob("b", &d), "{d}");
        }
        assert!(!m.tenant_has_blob("a", &named), "naming a digest in a graph grants it");
    }

    #[test]
    fn a_collected_blob_has_no_owner_left() {
        let mut m = StateMachine::default();
        let d = Digest::of(b"u");
        m.apply(Command::OwnBlobs { namespace: "a".into(), blobs: vec![d] }).unwrap();
        m.apply(Command::ForgetBlobs { blobs: vec![d] }).unwrap();
        assert!(!m.tenant_has_blob("a", &d));
        assert_eq!(m.owned_blobs(), 0);
    }

    #[test]
    fn a_worker_sees_the_tenants_of_the_steps_running_on_it() {
        let mut m = StateMachine::default();
        m.apply(Command::CreateBuild { build_id: "b".into(), namespace: "a".into(), steps: vec![("s".into(), "k".into())], now_ms: 1, graph: vec![], submitter: String::new() }).unwrap();
        assert!(m.tenants_running_on("w1").is_empty());
        let set = |state| Command::SetStep { build_id: "b".into(), step_id: "s".into(), state, worker_id: "w1".into(), attempts: 1, message: String::new() };
        m.apply(set(StepState::Running)).unwrap();
        assert_eq!(m.tenants_running_on("w1"), ["a".to_string()].into());
        assert!(m.tenants_running_on("w2").is_empty());
        m.apply(set(StepState::Done)).unwrap();
        assert!(m.tenants_running_on("w1").is_empty());
    }

    fn tokens(names: &[&str]) -> Command {
        let tokens = names.iter().map(|n| (format!("hash-{n}"), Principal::Tenant(n.to_string()))).collect();
        Command::SetTokens { tokens, now_ms: 7, names: BTreeMap::new() }
    }

    #[test]
    fn a_tokens_name_is_kept_while_the_file_keeps_the_token() {
        let mut m = StateMachine::default();
        let names = BTreeMap::from([("hash-a".to_string(), "ci".to_string()), ("hash-gone".to_string(), "x".to_string())]);
        let Command::SetTokens { tokens: file, now_ms, .. } = tokens(&["a"]) else { unreachable!() };
        m.apply(Command::SetTokens { tokens: file, now_ms, names }).unwrap();
        assert_eq!(m.token_name("hash-a"), Some("ci"));
        assert_eq!(m.token_name("hash-gone"), None, "a name without its token is not kept");
        m.apply(tokens(&["a"])).unwrap();
        assert_eq!(m.token_name("hash-a"), None, "the file no longer names it");
    }

    #[test]
    fn each_commit_records_its_generations_size_and_only_the_last_ones_are_kept() {
        let mut m = StateMachine::default();
        let head = HeadKey { namespace: "a".into(), cache_id: "pip".into(), slot: 0 };
        for g in 0..(HEAD_HISTORY as u64 + 3) {
            let commit = Command::CommitHead { head: head.clone(), base_generation: g, snapshot: Digest::of(&g.to_le_bytes()), total_bytes: 100 + g, now_ms: 1000 + g };
            m.apply(commit).unwrap();
        }
        let sizes = &m.head(&head).unwrap().sizes;
        assert_eq!(sizes.len(), HEAD_HISTORY);
        assert_eq!(sizes.last(), Some(&GenerationSize { generation: HEAD_HISTORY as u64 + 3, bytes: 100 + HEAD_HISTORY as u64 + 2, at_ms: 1000 + HEAD_HISTORY as u64 + 2 }));
        assert_eq!(sizes[0].generation, 4);
    }

    #[test]
    fn a_token_left_out_of_the_file_is_revoked_and_comes_back_when_re_added() {
        let mut m = StateMachine::default();
        m.apply(tokens(&["a", "b"])).unwrap();
        m.apply(tokens(&["a"])).unwrap();
        assert_eq!(m.principal("hash-a"), Some(&Principal::Tenant("a".into())));
        assert_eq!(m.principal("hash-b"), None);
        assert!(m.token_revoked("hash-b"));
        assert!(!m.token_revoked("hash-never"));
        m.apply(tokens(&["a", "b"])).unwrap();
        assert_eq!(m.principal("hash-b"), Some(&Principal::Tenant("b".into())));
    }

    #[test]
    fn revoked_token_hashes_are_bounded_oldest_forgotten_first() {
        let mut m = StateMachine::default();
        let many: Vec<String> = (0..MAX_REVOKED + 3).map(|i| format!("t{i:05}")).collect();
        m.apply(tokens(&many.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
        m.apply(tokens(&[])).unwrap();
        assert_eq!(m.tokens.len(), MAX_REVOKED);
        assert!(!m.token_revoked("hash-t00000"), "the oldest (then smallest) hashes go first");
        assert!(m.token_revoked(&format!("hash-t{:05}", MAX_REVOKED + 2)));
    }
}
