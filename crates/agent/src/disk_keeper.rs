//! The disk-limit sweep, off the steps' critical path.
//!
//! A step's result goes back as soon as its layer is stored; the sweep that
//! keeps the worker under `--disk-limit` (see [`crate::disk_budget`]) and
//! its layer blobs under the layer budget (see [`crate::blob_budget`]) runs
//! after it, in the background. Requests coalesce: steps finishing during a
//! sweep cause one more sweep, never a queue of them (one task, counters).
//! A sweep that finds the disk within the limit takes no lock at all, so a
//! step starting meanwhile never waits for it; only an eviction takes the
//! context lock and the locks of the cache directories it may remove.
//!
//! [`DiskKeeper::settled`] waits until every sweep requested before it has
//! run; `rbk_worker_disk_sweeps_pending` shows the same to an observer (a
//! sweep is requested before the step's result is sent, so once a build is
//! done and the gauge reads 0, the worker's disk is within its limit).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rbk_worker::layers::LayerStore;
use tokio::sync::watch;

use crate::disk_budget::{ContextSizes, Sweep, Swept};
use crate::step_locks::StepLocks;

/// Sweeps requested and done, and what the last one saw.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    requested: u64,
    done: u64,
    /// Whether the sweeping task runs (it ends when nothing is pending).
    running: bool,
    last: Swept,
}

/// Keeps one worker's local state under its disk limit and layer budget.
#[derive(Debug)]
pub struct DiskKeeper {
    /// The worker's state dir.
    pub root: PathBuf,
    pub cache_root: PathBuf,
    pub layers: LayerStore,
    /// The OCI layout's `blobs/sha256` and the `held-layers/` markers.
    pub blobs: PathBuf,
    pub held: PathBuf,
    /// Bytes of compressed layer blobs kept (`--max-layer-bytes`).
    pub blob_budget: u64,
    /// `--disk-limit`.
    limit: AtomicU64,
    pub context_sizes: Arc<Mutex<ContextSizes>>,
    pub locks: Arc<StepLocks>,
    progress: watch::Sender<Progress>,
}

impl DiskKeeper {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        root: PathBuf,
        cache_root: PathBuf,
        layers: LayerStore,
        blobs: PathBuf,
        held: PathBuf,
        blob_budget: u64,
        limit: u64,
        locks: Arc<StepLocks>,
    ) -> Self {
        DiskKeeper {
            root,
            cache_root,
            layers,
            blobs,
            held,
            blob_budget,
            limit: AtomicU64::new(limit),
            context_sizes: Arc::default(),
            locks,
            progress: watch::Sender::new(Progress::default()),
        }
    }

    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// `--disk-limit`.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// What the last sweep measured, once one has run (heartbeats carry
    /// it to the coordinator's Workers page).
    pub fn last(&self) -> Option<Swept> {
        let p = *self.progress.borrow();
        (p.done > 0).then_some(p.last)
    }

    /// Asks for a sweep after what just happened (a step ended). Returns at
    /// once; the sweep runs on a task of its own, started here when none
    /// runs.
    pub fn request(self: &Arc<Self>) {
        let mut start = false;
        self.progress.send_modify(|p| {
            p.requested += 1;
            if !p.running {
                p.running = true;
                start = true;
            }
        });
        rbk_metrics::global().worker_disk_sweep_pending(true);
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.sweep_until_settled().await });
        }
    }

    /// Waits until every sweep requested before this call has run; returns
    /// what the last one saw.
    pub async fn settled(&self) -> Swept {
        let target = self.progress.borrow().requested;
        let mut rx = self.progress.subscribe();
        match rx.wait_for(|p| p.done >= target).await {
            Ok(p) => p.last,
            Err(_) => Swept::default(),
        }
    }

    async fn sweep_until_settled(self: Arc<Self>) {
        loop {
            let target = self.progress.borrow().requested;
            let swept = self.sweep().await;
            rbk_metrics::global().worker_disk_bytes(swept.used.saturating_sub(swept.freed));
            let mut finished = false;
            self.progress.send_modify(|p| {
                p.done = target;
                p.last = swept;
                if p.requested == target {
                    p.running = false;
                    finished = true;
                }
            });
            if finished {
                rbk_metrics::global().worker_disk_sweep_pending(false);
                return;
            }
        }
    }

    /// One pass: layer blobs over their budget (only when no step runs),
    /// then the whole disk over its limit.
    async fn sweep(&self) -> Swept {
        if let Ok(_alone) = self.locks.blobs.try_write() {
            let (blobs, held, budget) = (self.blobs.clone(), self.held.clone(), self.blob_budget);
            let _ = tokio::task::spawn_blocking(move || crate::blob_budget::trim(&blobs, &held, budget)).await;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        // Measured without locks (nothing is removed at an unreachable
        // limit): the usual answer is "within the limit".
        let measured = self.run(self.pass(u64::MAX, false, Default::default(), Default::default())).await;
        if measured.used <= limit {
            return measured;
        }
        let _no_context_restores = self.locks.context.lock().await;
        let blobs_alone = self.locks.blobs.try_write().ok();
        let contexts_in_use = self.locks.contexts_in_use();
        let mut guards = Vec::new();
        let mut free_slots = std::collections::HashSet::new();
        for e in std::fs::read_dir(&self.cache_root).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
            // A slot names its key in `id`; one without is a leftover no
            // step can be using.
            if let Ok(key) = std::fs::read_to_string(e.path().join("id")) {
                match self.locks.cache(&key).try_lock_owned() {
                    Ok(g) => guards.push(g),
                    Err(_) => continue,
                }
            }
            free_slots.insert(name);
        }
        let swept = self.run(self.pass(limit, blobs_alone.is_some(), contexts_in_use, free_slots)).await;
        drop(guards);
        drop(blobs_alone);
        swept
    }

    fn pass(
        &self,
        limit: u64,
        blobs_free: bool,
        contexts_in_use: std::collections::HashSet<String>,
        free_slots: std::collections::HashSet<String>,
    ) -> Sweep {
        Sweep {
            root: self.root.clone(),
            cache_root: self.cache_root.clone(),
            layers: self.layers.clone(),
            context_sizes: self.context_sizes.clone(),
            limit,
            contexts_in_use,
            blobs_free,
            free_slots,
        }
    }

    async fn run(&self, sweep: Sweep) -> Swept {
        tokio::task::spawn_blocking(move || sweep.run()).await.unwrap_or_default()
    }
}
