//! Every metric an rbk node exposes, registered once, recorded through
//! named methods (so call sites say what happened, not which counter to
//! bump) and encoded for `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::labels::{
    BuildInfoLabels, BuildResult, CacheKind, CacheLabels, DirectionLabels, Readopted, ResultLabels, StepResult, StoreErrorLabels, StoreLabels, StoreOp,
};

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Which series a process exposes (see [`Metrics::for_role`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Worker,
    /// Both: `rbk build`'s in-process farm.
    All,
}

/// Registers `metric` only in a process whose role records it (`on`), and
/// returns it either way: recording into an unexposed series is harmless.
fn register_if<M: Metric + Clone>(r: &mut Registry, on: bool, name: &str, help: &str, metric: M) -> M {
    if on {
        r.register(name, help, metric.clone());
    }
    metric
}

/// Build and step durations: 100 ms .. ~27 min.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// Store operations: 0.5 ms .. ~33 s.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A set of rbk metrics with its own registry. Cheap to clone; clones
/// record into the same series.
///
/// A process uses [`crate::global`]; tests create their own with
/// [`Metrics::new`] so they can assert exact values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    build_info: Family<BuildInfoLabels, Gauge>,
    builds: Family<ResultLabels, Counter>,
    build_duration: HistogramFamily<ResultLabels>,
    builds_running: Gauge,
    steps: Family<ResultLabels, Counter>,
    steps_readopted: Family<ResultLabels, Counter>,
    step_duration: Histogram,
    steps_running: Gauge,
    queue_depth: Gauge,
    workers_connected: Gauge,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_mount_bytes_restored: Counter,
    cache_mount_commits: Counter,
    cache_mount_bytes_committed: Counter,
    store_duration: HistogramFamily<StoreLabels>,
    store_errors: Family<StoreErrorLabels, Counter>,
    store_bytes: Family<DirectionLabels, Counter>,
    raft_term: Gauge,
    raft_leader_id: Gauge,
    raft_is_leader: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    worker_steps_running: Gauge,
    worker_steps: Family<ResultLabels, Counter>,
    worker_bytes_restored: Counter,
    worker_disk_bytes: Gauge,
    worker_disk_sweeps_pending: Gauge,
    worker_bytes_committed: Counter,
    gc_runs: Family<ResultLabels, Counter>,
    gc_scanned_objects: Counter,
    gc_deleted_objects: Counter,
    gc_freed_bytes: Counter,
    gc_duration: Histogram,
    gc_store_bytes: Gauge,
    gc_evicted_heads: Counter,
    gc_evicted_actions: Counter,
    gc_evicted_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every rbk metric registered (both roles: an
    /// in-process farm, and tests). Labelled series whose values are known
    /// in advance start at zero.
    pub fn new() -> Self {
        Self::for_role(Role::All)
    }

    /// A registry exposing only what a process of `role` records (plus
    /// the store's series, `rbk_build_info` and the `process_*` series
    /// every role has): a worker exports no `rbk_raft_*` or scheduler
    /// series stuck at 0, which would match alerts such as "no leader".
    /// Recording a series of another role is harmless; it is not exposed.
    pub fn for_role(role: Role) -> Self {
        let coordinator = role != Role::Worker;
        let worker = role != Role::Coordinator;
        let mut r = Registry::default();
        let build_info = register_if(&mut r, true, "rbk_build_info", "Always 1; the labels say which rbk this process runs (version, git commit)", Family::<BuildInfoLabels, Gauge>::default());
        r.register_collector(Box::new(crate::process::ProcessCollector));
        // Counters are registered without `_total`; the encoder appends it.
        let builds = register_if(&mut r, coordinator, "rbk_builds", "Builds that ended, by result (succeeded, failed, cancelled)", Family::<ResultLabels, Counter>::default());
        let build_duration: HistogramFamily<ResultLabels> = register_if(&mut r, coordinator, "rbk_build_duration_seconds", "Wall time of builds from submit to end, by result", Family::new_with_constructor(duration_histogram));
        let builds_running = register_if(&mut r, coordinator, "rbk_builds_running", "Builds accepted by this coordinator and not yet ended", Gauge::default());
        let steps = register_if(&mut r, coordinator, "rbk_steps", "Build steps by result: cached (action-cache hit), done, failed, retried (re-queued after a lost worker)", Family::<ResultLabels, Counter>::default());
        let steps_readopted = register_if(&mut r, coordinator, "rbk_steps_readopted", "Steps a new coordinator leader found running on a worker, by result: kept (the worker re-reported it), retried (it did not come back in the grace period), ignored (a result for an assignment the leader does not know)", Family::<ResultLabels, Counter>::default());
        let step_duration = register_if(&mut r, coordinator, "rbk_step_duration_seconds", "Wall time of steps that ran on a worker and succeeded", duration_histogram());
        let steps_running = register_if(&mut r, coordinator, "rbk_steps_running", "Step executions assigned to workers and not yet finished (coordinator view)", Gauge::default());
        let queue_depth = register_if(&mut r, coordinator, "rbk_queue_depth", "Ready step executions waiting for a worker", Gauge::default());
        let workers_connected = register_if(&mut r, coordinator, "rbk_workers_connected", "Workers with an open session to this coordinator", Gauge::default());
        let cache_hits = register_if(&mut r, true, "rbk_cache_hits", "Cache hits by cache: action, layer, cache_mount", Family::<CacheLabels, Counter>::default());
        let cache_misses = register_if(&mut r, true, "rbk_cache_misses", "Cache misses by cache: action, layer, cache_mount", Family::<CacheLabels, Counter>::default());
        let cache_mount_bytes_restored = register_if(&mut r, coordinator, "rbk_cache_mount_restored_bytes", "Bytes of cache-mount snapshots workers restored for steps (as reported with each step result)", Counter::default());
        let cache_mount_commits = register_if(&mut r, coordinator, "rbk_cache_mount_commits", "Cache-mount snapshots workers committed with step results", Counter::default());
        let cache_mount_bytes_committed = register_if(&mut r, coordinator, "rbk_cache_mount_committed_bytes", "Total size of the cache-mount snapshots committed (each commit counts its whole tree)", Counter::default());
        let store_duration: HistogramFamily<StoreLabels> = register_if(&mut r, true, "rbk_store_operation_duration_seconds", "Content store operations by operation and backend; a get lasts until its stream ends", Family::new_with_constructor(store_histogram));
        let store_errors = register_if(&mut r, true, "rbk_store_errors", "Failed content store operations by operation, backend and error kind", Family::<StoreErrorLabels, Counter>::default());
        let store_bytes = register_if(&mut r, true, "rbk_store_bytes", "Bytes read from and written to the content store, by direction and backend", Family::<DirectionLabels, Counter>::default());
        let raft_term = register_if(&mut r, coordinator, "rbk_raft_term", "This node's current Raft term", Gauge::default());
        let raft_leader_id = register_if(&mut r, coordinator, "rbk_raft_leader_id", "The Raft node id this node believes leads (0: none known)", Gauge::default());
        let raft_is_leader = register_if(&mut r, coordinator, "rbk_raft_is_leader", "1 while this node is the Raft leader, else 0", Gauge::default());
        let raft_commit_index = register_if(&mut r, coordinator, "rbk_raft_commit_index", "Highest Raft log index known committed on this node", Gauge::default());
        let raft_applied_index = register_if(&mut r, coordinator, "rbk_raft_applied_index", "Highest Raft log index applied to this node's state machine", Gauge::default());
        let worker_steps_running = register_if(&mut r, worker, "rbk_worker_steps_running", "Steps this worker process is executing now", Gauge::default());
        let worker_steps = register_if(&mut r, worker, "rbk_worker_steps", "Steps this worker process finished, by result (done, failed)", Family::<ResultLabels, Counter>::default());
        let worker_bytes_restored = register_if(&mut r, worker, "rbk_worker_restored_bytes", "Bytes this worker process restored into cache mounts from the store (as it reports with each step result)", Counter::default());
        let worker_bytes_committed = register_if(&mut r, worker, "rbk_worker_committed_bytes", "Bytes this worker process uploaded when capturing cache mounts (new packs and manifests)", Counter::default());
        let worker_disk_bytes = register_if(&mut r, worker, "rbk_worker_disk_bytes", "Bytes this worker keeps on its disk (state dir and cache directories) after its last disk-limit sweep", Gauge::default());
        let worker_disk_sweeps_pending = register_if(&mut r, worker, "rbk_worker_disk_sweeps_pending", "1 while a disk-limit sweep is requested or running on this worker, 0 once the disk is settled", Gauge::default());

        let gc_runs = register_if(&mut r, coordinator, "rbk_gc_runs", "Store collections by result: done, failed (dry runs are not counted)", Family::<ResultLabels, Counter>::default());
        let gc_scanned_objects = register_if(&mut r, coordinator, "rbk_gc_scanned_objects", "Blobs the store collector listed", Counter::default());
        let gc_deleted_objects = register_if(&mut r, coordinator, "rbk_gc_deleted_objects", "Blobs the store collector deleted", Counter::default());
        let gc_freed_bytes = register_if(&mut r, coordinator, "rbk_gc_freed_bytes", "Stored bytes the store collector deleted", Counter::default());
        let gc_duration = register_if(&mut r, coordinator, "rbk_gc_duration_seconds", "Wall time of store collections (mark, sweep and deletes)", duration_histogram());
        let gc_store_bytes = register_if(&mut r, coordinator, "rbk_gc_store_bytes", "Stored bytes the last store collection listed, before its deletes", Gauge::default());
        let gc_evicted_heads = register_if(&mut r, coordinator, "rbk_gc_evicted_heads", "Cache heads dropped for a tenant's budget or keep_duration", Counter::default());
        let gc_evicted_actions = register_if(&mut r, coordinator, "rbk_gc_evicted_actions", "Action-cache entries dropped for a tenant's budget", Counter::default());
        let gc_evicted_bytes = register_if(&mut r, coordinator, "rbk_gc_evicted_bytes", "Bytes charged to the heads and entries evicted (freed by the collection that follows)", Counter::default());

        for c in CacheKind::ALL.into_iter().filter(|c| if *c == CacheKind::Layer { worker } else { coordinator }) {
            let _ = cache_hits.get_or_create(&CacheLabels { cache: c.as_str() });
            let _ = cache_misses.get_or_create(&CacheLabels { cache: c.as_str() });
        }
        for r in ["done", "failed"] {
            let _ = gc_runs.get_or_create(&ResultLabels { result: r });
        }
        for b in BuildResult::ALL {
            let _ = builds.get_or_create(&ResultLabels { result: b.as_str() });
        }
        for s in StepResult::ALL {
            let _ = steps.get_or_create(&ResultLabels { result: s.as_str() });
        }
        for s in Readopted::ALL {
            let _ = steps_readopted.get_or_create(&ResultLabels { result: s.as_str() });
        }
        for s in [StepResult::Done, StepResult::Failed] {
            let _ = worker_steps.get_or_create(&ResultLabels { result: s.as_str() });
        }

        Self {
            inner: Arc::new(Inner {
                registry: r,
                build_info,
                builds,
                build_duration,
                builds_running,
                steps,
                steps_readopted,
                step_duration,
                steps_running,
                queue_depth,
                workers_connected,
                cache_hits,
                cache_misses,
                cache_mount_bytes_restored,
                cache_mount_commits,
                cache_mount_bytes_committed,
                store_duration,
                store_errors,
                store_bytes,
                raft_term,
                raft_leader_id,
                raft_is_leader,
                raft_commit_index,
                raft_applied_index,
                worker_steps_running,
                worker_steps,
                worker_bytes_restored,
                worker_disk_bytes,
                worker_disk_sweeps_pending,
                worker_bytes_committed,
                gc_runs,
                gc_scanned_objects,
                gc_deleted_objects,
                gc_freed_bytes,
                gc_duration,
                gc_store_bytes,
                gc_evicted_heads,
                gc_evicted_actions,
                gc_evicted_bytes,
            }),
        }
    }

    /// Sets `rbk_build_info{version,commit} 1` (once, at start-up).
    pub fn set_build_info(&self, version: &str, commit: &str) {
        self.inner.build_info.get_or_create(&BuildInfoLabels { version: version.to_owned(), commit: commit.to_owned() }).set(1);
    }

    // ---- coordinator: builds and steps ----

    /// A build ended after `duration`.
    pub fn build_finished(&self, result: BuildResult, duration: Duration) {
        let l = ResultLabels { result: result.as_str() };
        self.inner.builds.get_or_create(&l).inc();
        self.inner.build_duration.get_or_create(&l).observe(duration.as_secs_f64());
    }

    /// One step of one build reached `result` (or was retried).
    pub fn step(&self, result: StepResult) {
        self.inner.steps.get_or_create(&ResultLabels { result: result.as_str() }).inc();
    }

    /// What a new leader did with a step found running on a worker.
    pub fn step_readopted(&self, result: Readopted) {
        self.inner.steps_readopted.get_or_create(&ResultLabels { result: result.as_str() }).inc();
    }

    /// A step that ran succeeded after `duration`.
    pub fn step_succeeded_after(&self, duration: Duration) {
        self.inner.step_duration.observe(duration.as_secs_f64());
    }

    /// The scheduler's live numbers, set after every change.
    pub fn set_scheduler(&self, queue_depth: usize, workers_connected: usize, steps_running: usize, builds_running: usize) {
        let i = &self.inner;
        i.queue_depth.set(gauge_value(queue_depth as u64));
        i.workers_connected.set(gauge_value(workers_connected as u64));
        i.steps_running.set(gauge_value(steps_running as u64));
        i.builds_running.set(gauge_value(builds_running as u64));
    }

    // ---- store collector ----

    /// A store collection (not a dry run) ended: what it listed and freed.
    pub fn gc_finished(&self, scanned_objects: u64, scanned_bytes: u64, deleted_objects: u64, freed_bytes: u64, duration: Duration) {
        let i = &self.inner;
        i.gc_runs.get_or_create(&ResultLabels { result: "done" }).inc();
        i.gc_scanned_objects.inc_by(scanned_objects);
        i.gc_deleted_objects.inc_by(deleted_objects);
        i.gc_freed_bytes.inc_by(freed_bytes);
        i.gc_duration.observe(duration.as_secs_f64());
        i.gc_store_bytes.set(gauge_value(scanned_bytes));
    }

    /// Eviction dropped heads and action-cache entries charged `bytes`.
    pub fn gc_evicted(&self, heads: u64, actions: u64, bytes: u64) {
        let i = &self.inner;
        i.gc_evicted_heads.inc_by(heads);
        i.gc_evicted_actions.inc_by(actions);
        i.gc_evicted_bytes.inc_by(bytes);
    }

    /// A store collection failed (it deleted what it had fenced so far).
    pub fn gc_failed(&self, duration: Duration) {
        self.inner.gc_runs.get_or_create(&ResultLabels { result: "failed" }).inc();
        self.inner.gc_duration.observe(duration.as_secs_f64());
    }

    // ---- caches ----

    /// One lookup in `cache`: a hit or a miss.
    pub fn cache_lookup(&self, cache: CacheKind, hit: bool) {
        let l = CacheLabels { cache: cache.as_str() };
        if hit { self.inner.cache_hits.get_or_create(&l).inc() } else { self.inner.cache_misses.get_or_create(&l).inc() };
    }

    /// A worker reported restoring `bytes` of cache mounts for a step.
    pub fn cache_mount_restored(&self, bytes: u64) {
        self.inner.cache_mount_bytes_restored.inc_by(bytes);
    }

    /// A worker committed a cache-mount snapshot whose tree holds `total_bytes`.
    pub fn cache_mount_committed(&self, total_bytes: u64) {
        self.inner.cache_mount_commits.inc();
        self.inner.cache_mount_bytes_committed.inc_by(total_bytes);
    }

    // ---- content store (recorded by `MetricsStore`) ----

    pub(crate) fn store_op(&self, op: StoreOp, backend: &'static str, took: Duration, error: Option<&'static str>) {
        let i = &self.inner;
        i.store_duration.get_or_create(&StoreLabels { op: op.as_str(), backend }).observe(took.as_secs_f64());
        if let Some(kind) = error {
            i.store_errors.get_or_create(&StoreErrorLabels { op: op.as_str(), backend, kind }).inc();
        }
    }

    pub(crate) fn store_bytes(&self, direction: &'static str, backend: &'static str, n: u64) {
        self.inner.store_bytes.get_or_create(&DirectionLabels { direction, backend }).inc_by(n);
    }

    /// Makes a backend's series visible at zero before its first operation.
    pub(crate) fn store_backend_seen(&self, backend: &'static str) {
        for direction in ["read", "written"] {
            let _ = self.inner.store_bytes.get_or_create(&DirectionLabels { direction, backend });
        }
    }

    // ---- Raft (set by the replication layer whenever its status changes) ----

    pub fn set_raft_term(&self, term: u64) {
        self.inner.raft_term.set(gauge_value(term));
    }

    /// `leader_id` 0 = no leader known; `is_self` = this node leads.
    pub fn set_raft_leader(&self, leader_id: u64, is_self: bool) {
        self.inner.raft_leader_id.set(gauge_value(leader_id));
        self.inner.raft_is_leader.set(i64::from(is_self));
    }

    pub fn set_raft_commit_index(&self, index: u64) {
        self.inner.raft_commit_index.set(gauge_value(index));
    }

    pub fn set_raft_applied_index(&self, index: u64) {
        self.inner.raft_applied_index.set(gauge_value(index));
    }

    // ---- worker process ----

    /// A step starts on this worker; the gauge drops again when the guard
    /// is dropped, so an early return or a panic cannot leave it counted.
    pub fn worker_step_running(&self) -> RunningStep {
        self.inner.worker_steps_running.inc();
        RunningStep { metrics: self.clone() }
    }

    /// A step this worker ran ended: `Done` or `Failed`.
    pub fn worker_step_finished(&self, result: StepResult) {
        self.inner.worker_steps.get_or_create(&ResultLabels { result: result.as_str() }).inc();
    }

    pub fn worker_restored(&self, bytes: u64) {
        self.inner.worker_bytes_restored.inc_by(bytes);
    }

    pub fn worker_committed(&self, bytes: u64) {
        self.inner.worker_bytes_committed.inc_by(bytes);
    }

    /// A disk-limit sweep was requested (`true`) or the last one ended
    /// with nothing more requested (`false`).
    pub fn worker_disk_sweep_pending(&self, pending: bool) {
        self.inner.worker_disk_sweeps_pending.set(i64::from(pending));
    }

    /// What a disk-limit sweep left on the worker's disk.
    pub fn worker_disk_bytes(&self, bytes: u64) {
        self.inner.worker_disk_bytes.set(gauge_value(bytes));
    }

    // ---- exposition ----

    /// Prometheus text format 0.0.4 (what every scraper accepts).
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// OpenMetrics text 1.0 (for scrapers that ask for it).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Holds `rbk_worker_steps_running` up while a step runs.
#[must_use = "the step counts as running only while this guard lives"]
pub struct RunningStep {
    metrics: Metrics,
}

impl Drop for RunningStep {
    fn drop(&mut self) {
        self.metrics.inner.worker_steps_running.dec();
    }
}
