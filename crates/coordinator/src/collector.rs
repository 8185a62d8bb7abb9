//! The store collector as the coordinator runs it: `rbk_snapshot::collect`
//! over the replicated state, on the leader only, on a schedule (`[gc]
//! interval`) and on demand (the Admin service's `CollectGarbage`,
//! `rbk store gc [--dry-run]`).
//!
//! # What is live
//!
//! [`StateRoots`] reads, in one read of the state machine: every cache
//! head's snapshot and its kept history (the merge bases,
//! `state::HEAD_HISTORY` generations), every action-cache entry's layers
//! and what its config names, and what the graphs of running builds name
//! (contexts as snapshots, base-image layers as blobs); see
//! `references.rs` for how opaque payloads are read.
//!
//! # Why concurrent builds are safe: grace plus a fence through Raft
//!
//! The collector keeps every blob younger than `grace` (uploads of builds
//! that have not committed yet), re-reads the roots before each batch, and
//! fences the batch *through the replicated log* at the epoch it read
//! (`gc_fence.rs`): the fence fails if any reference was committed since,
//! and once held, the leader's guarded commits (`Command::Guarded`: build
//! graphs, action-cache entries, head commits with their packs) that name
//! a fenced blob are refused. Being in the log, the fence binds every node
//! that ever becomes leader, with no clock shared between them.
//!
//! # Eviction first
//!
//! Each run (dry or not) first plans the evictions the per-tenant budgets
//! ask for (`eviction.rs`) and, unless dry, applies them through Raft; what
//! they drop is then unreachable, so the same run deletes it.
//!
//! # Leader changes
//!
//! Only the serving leader runs the collector, and its deletes go through
//! [`LeaderOnlyStore`], which refuses to delete once this node no longer
//! leads: a deposed leader stops within one delete (Raft's check-quorum
//! steps it down before a new leader can be elected). A new leader starts
//! a fresh run at once; its `Begin` releases the old run's fences, which
//! keep refusing writers that started before the release plus the
//! existence cache's TTL. A half-deleted batch is never referenced: its
//! blobs were fenced before the first delete.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rbk_snapshot::{CollectError, CollectOptions, CollectReport, Fence, RootSource, Roots, collect};
use rbk_store::{Digest, Store, StoreError, StoreResult};

use crate::blob_owners::OWN_BATCH_MAX;
use crate::eviction::{EvictionPolicy, Evictions};
use crate::gc_fence::GcCommand;
use crate::references::References;
use crate::state::{Command, CoordinatorState, EvictCommand, Outcome, StateError, now_ms, query};

/// Heads or entries dropped per eviction command (a bound on its size).
const EVICT_BATCH: usize = 1000;

/// How the collector runs (`[gc]` in the coordinator config).
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Between scheduled runs; `None`: only on demand.
    pub interval: Option<Duration>,
    /// Blobs written more recently are kept whatever references them.
    pub grace: Duration,
    /// The existence cache's TTL: how long after a delete a "present"
    /// answer given before it may still be believed.
    pub existence_ttl: Duration,
    /// Blobs fenced and deleted together.
    pub batch: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self { interval: Some(Duration::from_secs(3600)), grace: Duration::from_secs(3600), existence_ttl: Duration::from_secs(600), batch: 1000 }
    }
}

/// Why a run did not happen or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("this coordinator is not the leader; only the leader collects")]
    NotLeader,
    #[error("starting the run: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Collect(#[from] CollectError),
}

/// Whether this node leads now.
pub type IsLeader = Arc<dyn Fn() -> bool + Send + Sync>;

/// The roots over the coordinator's state, and its fences.
pub struct StateRoots {
    state: Arc<dyn CoordinatorState>,
    run: String,
    hold_ms: u64,
}

impl StateRoots {
    pub fn new(state: Arc<dyn CoordinatorState>, run: String, existence_ttl: Duration) -> Self {
        Self { state, run, hold_ms: existence_ttl.as_millis() as u64 }
    }
}

/// The roots of one read of the state machine (see the module docs).
pub fn roots_of(m: &crate::state::StateMachine) -> Roots {
    let mut refs = References::default();
    for (_, head) in m.all_heads() {
        refs.snapshots.insert(head.snapshot);
        refs.snapshots.extend(head.history.iter().map(|(_, d)| *d));
    }
    for (_, result) in m.all_actions() {
        refs.add_result(result);
    }
    for build in m.running_builds() {
        refs.add_graph(&build.graph);
    }
    Roots { generation: m.gc().epoch(), snapshots: refs.snapshots, blobs: refs.blobs }
}

#[async_trait::async_trait]
impl RootSource for StateRoots {
    async fn roots(&self) -> Result<Roots, Box<dyn std::error::Error + Send + Sync>> {
        Ok(query(&*self.state, roots_of))
    }

    async fn fence(&self, generation: u64, batch: &[Digest]) -> Result<Fence, Box<dyn std::error::Error + Send + Sync>> {
        let cmd = Command::Gc(GcCommand::Fence { run: self.run.clone(), generation, blobs: batch.to_vec() });
        match self.state.apply(cmd).await? {
            Outcome::Gc { held: true } => Ok(Fence::Held),
            _ => Ok(Fence::Stale),
        }
    }

    async fn release(&self, batch: &[Digest]) {
        let cmd = Command::Gc(GcCommand::Release { run: self.run.clone(), blobs: batch.to_vec(), now_ms: now_ms(), hold_ms: self.hold_ms });
        if let Err(e) = self.state.apply(cmd).await {
            // The next run's `Begin` releases them.
            tracing::warn!(run = %self.run, "releasing {} fenced blobs: {e}", batch.len());
        }
    }
}

/// A store whose deletes are refused once this node stops leading, and
/// whose deletes make the blobs' owners forget them (`blob_owners.rs`), in
/// batches of [`OWN_BATCH_MAX`], so ownership never outlives the blob.
pub struct LeaderOnlyStore {
    inner: Arc<dyn Store>,
    leader: IsLeader,
    state: Arc<dyn CoordinatorState>,
    deleted: tokio::sync::Mutex<Vec<Digest>>,
}

impl LeaderOnlyStore {
    /// Forgets the owners of the blobs deleted since the last flush.
    async fn flush_forgotten(&self) {
        let blobs = std::mem::take(&mut *self.deleted.lock().await);
        if blobs.is_empty() {
            return;
        }
        if let Err(e) = self.state.apply(Command::ForgetBlobs { blobs: blobs.clone() }).await {
            // Harmless but for its size: an owner of a blob that is gone
            // reads NotFound as anyone does, and a new upload owns it anew.
            tracing::warn!("forgetting the owners of {} deleted blobs: {e}", blobs.len());
        }
    }
}

impl std::fmt::Debug for LeaderOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderOnlyStore").field("inner", &self.inner).finish_non_exhaustive()
    }
}

rbk_store::forward_store!(LeaderOnlyStore => inner [find_missing, put, get, list, list_page] {
    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        if !(self.leader)() {
            return Err(StoreError::Backend { backend: "collector", message: "this node stopped leading; deletes stop".into(), retryable: true });
        }
        self.inner.delete(digest).await?;
        let full = {
            let mut deleted = self.deleted.lock().await;
            deleted.push(digest);
            deleted.len() >= OWN_BATCH_MAX
        };
        if full {
            self.flush_forgotten().await;
        }
        Ok(())
    }
});

/// What one run did: the evictions, then the collection.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Dropped (dry run: would be) before the collection.
    pub evicted: Evictions,
    pub collect: CollectReport,
}

impl std::ops::Deref for RunReport {
    type Target = CollectReport;
    fn deref(&self) -> &CollectReport {
        &self.collect
    }
}

/// Runs collections, one at a time.
#[derive(Clone)]
pub struct Collector {
    state: Arc<dyn CoordinatorState>,
    store: Arc<dyn Store>,
    config: GcConfig,
    eviction: Arc<EvictionPolicy>,
    leader: IsLeader,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Collector {
    pub fn new(state: Arc<dyn CoordinatorState>, store: Arc<dyn Store>, config: GcConfig, leader: IsLeader) -> Self {
        Self { state, store, config, eviction: Arc::default(), leader, one_at_a_time: Arc::default() }
    }

    /// Evicts by `policy` at the start of every run.
    pub fn with_eviction(mut self, policy: EvictionPolicy) -> Self {
        self.eviction = Arc::new(policy);
        self
    }

    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    pub fn eviction(&self) -> &EvictionPolicy {
        &self.eviction
    }

    /// Plans the evictions and, unless `dry_run`, applies them.
    async fn evict(&self, dry_run: bool) -> Result<Evictions, CollectorError> {
        let planned = query(&*self.state, |m| crate::eviction::plan(m, &self.eviction, now_ms()));
        if dry_run || (planned.heads.is_empty() && planned.actions.is_empty()) {
            return Ok(planned);
        }
        for chunk in planned.heads.chunks(EVICT_BATCH) {
            if !(self.leader)() {
                return Err(CollectorError::NotLeader);
            }
            self.state.apply(Command::Evict(EvictCommand::DropHeads { heads: chunk.to_vec() })).await?;
        }
        for chunk in planned.actions.chunks(EVICT_BATCH) {
            if !(self.leader)() {
                return Err(CollectorError::NotLeader);
            }
            self.state.apply(Command::Evict(EvictCommand::DropActions { entries: chunk.to_vec() })).await?;
        }
        // A drop keeps what was used since the plan: report what went.
        let mut planned = planned;
        query(&*self.state, |m| {
            planned.heads.retain(|(h, _)| match m.head(h) {
                Some(kept) => {
                    planned.heads_bytes = planned.heads_bytes.saturating_sub(kept.total_bytes);
                    false
                }
                None => true,
            });
            planned.actions.retain(|((ns, key), _)| match m.action(ns, key) {
                Some(kept) => {
                    planned.actions_bytes = planned.actions_bytes.saturating_sub(crate::eviction::result_bytes(kept));
                    false
                }
                None => true,
            });
        });
                rbk_metrics::global().gc_evicted(planned.heads.len() as u64, planned.actions.len() as u64, planned.heads_bytes + planned.actions_bytes);
        for (head, used) in &planned.heads {
            tracing::info!(head = %head, last_used_ms = used, "evicted a cache head");
        }
        tracing::info!(
            heads = planned.heads.len(),
            heads_bytes = planned.heads_bytes,
            actions = planned.actions.len(),
            actions_bytes = planned.actions_bytes,
            "evicted over-budget and unused state"
        );
        Ok(planned)
    }

    /// One collection; a dry run decides but deletes and fences nothing.
    /// Waits for a run in progress to end first.
    pub async fn run(&self, dry_run: bool) -> Result<RunReport, CollectorError> {
        self.run_verified(dry_run, false).await
    }

    /// [`Self::run`], then, with `verify`, a check that the store holds
    /// every live blob (`rbk store gc --verify`).
    pub async fn run_verified(&self, dry_run: bool, verify: bool) -> Result<RunReport, CollectorError> {
        let _one = self.one_at_a_time.lock().await;
        if !(self.leader)() {
            return Err(CollectorError::NotLeader);
        }
        let evicted = self.evict(dry_run).await?;
        let run = format!("{:016x}", rand::random::<u64>());
        let began = std::time::Instant::now();
        // Taken before the roots are read (see `rbk_snapshot::collect`).
        let started = SystemTime::now();
        if !dry_run {
            let begin = GcCommand::Begin { run: run.clone(), now_ms: now_ms(), hold_ms: self.config.existence_ttl.as_millis() as u64 };
            self.state.apply(Command::Gc(begin)).await?;
        }
        let source = StateRoots::new(self.state.clone(), run.clone(), self.config.existence_ttl);
        let store = LeaderOnlyStore { inner: self.store.clone(), leader: self.leader.clone(), state: self.state.clone(), deleted: Default::default() };
        let mut options = CollectOptions::new(started, self.config.grace);
        options.batch = self.config.batch.max(1);
        options.dry_run = dry_run;
        options.verify = verify;
        tracing::info!(%run, dry_run, grace_s = self.config.grace.as_secs(), "store collection started");
        let collected = collect(&store, &source, options).await;
        store.flush_forgotten().await;
        match collected {
            Ok(report) => {
                if !dry_run {
                    rbk_metrics::global().gc_finished(
                        report.objects_scanned,
                        report.bytes_scanned,
                        report.deleted_objects,
                        report.freed_bytes,
                        report.duration,
                    );
                }
                for blob in &report.missing_live {
                    tracing::warn!(%run, %blob, "a live blob is missing from the store");
                }
                for root in &report.missing_roots {
                    tracing::warn!(%run, snapshot = %root, "a live snapshot's manifest is missing from the store");
                }
                tracing::info!(
                    %run,
                    dry_run,
                    scanned = report.objects_scanned,
                    scanned_bytes = report.bytes_scanned,
                    live = report.live_objects,
                    young = report.young_objects,
                    rescued = report.rescued_objects,
                    contended = report.contended_objects,
                    deleted = report.deleted_objects,
                    freed_bytes = report.freed_bytes,
                    duration_ms = report.duration.as_millis() as u64,
                    "store collection finished"
                );
                Ok(RunReport { evicted, collect: report })
            }
            Err(e) => {
                if !dry_run {
                    rbk_metrics::global().gc_failed(began.elapsed());
                }
                tracing::warn!(%run, dry_run, "store collection failed: {e}");
                Err(e.into())
            }
        }
    }

    /// Runs a collection every `interval` while this node leads, and one
    /// at once on becoming leader (a new leader starts a fresh run, which
    /// releases the fences of a run its predecessor left unfinished).
    pub fn spawn_schedule(self) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.config.interval?;
        let poll = interval.min(Duration::from_secs(5));
        Some(tokio::spawn(async move {
            let mut led = false;
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(poll).await;
                let leads = (self.leader)();
                let due = leads && (!led || last.elapsed() >= interval);
                led = leads;
                if due {
                    last = tokio::time::Instant::now();
                    match self.run(false).await {
                        // Collection failures are logged by `run`.
                        Ok(_) | Err(CollectorError::NotLeader) | Err(CollectorError::Collect(_)) => {}
                        Err(e) => tracing::warn!("scheduled store collection: {e}"),
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests;
