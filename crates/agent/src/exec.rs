//! A farm worker's half of a step: one [`Assign`] (a [`FarmStep`] payload
//! plus the coordinator's cache-mount grants and dependency results) run on
//! this machine, answered with the [`StepResult`] to send back.
//!
//! Everything it reads arrives by name through the content store (blob
//! fetch and WORKDIR layers in [`crate::layer_io`], cache directories in
//! [`crate::cache_mounts`]) and the cache heads are the coordinator's: the worker restores the granted
//! head, runs, captures, and *reports* the commit (`base_generation` says
//! where it started, so the coordinator can merge a head that moved).
//!
//! Local state under the worker's directory: `images/` (an OCI layout of
//! layer blobs), `worker/` (the executor: unpacked layers, scratch),
//! `caches/` (one directory per namespace, cache id and slot),
//! `contexts/<digest>` (restored build contexts, reused by later steps) and
//! `held-layers/<blake3>` (what the worker tells the scheduler it holds).
//! `images/` is kept under the layer budget (see [`crate::blob_budget`]);
//! all of it, with the cache directories, under the disk limit (see
//! [`crate::disk_budget`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rbk_image::{OciDigest, OciLayout};
use rbk_proto::worker::{Assign, StepPhases, StepResult};
use rbk_snapshot::{RestoreOptions, Snapshot, restore};
use rbk_store::{Digest, Store};
use rbk_worker::{Executor, LayerRef, LogSink, RuntimeKind, SecretValue, StepInputs, WorkerConfig, WorkerPolicy};

use crate::background_commit::{BackgroundCommit, capture_grants};
use crate::cache_mounts::{CacheDirs, cache_key, granted_head};
use crate::disk_keeper::DiskKeeper;
use crate::step_locks::StepLocks;
use crate::exec_error::{ExecError, Result};
use rbk_worker::payload::{FARM_STEP_VERSION, FarmResult, FarmStep, ImageSource, LayerDesc, Work};
use crate::layer_io::{fetch_blob, mkdir_layer};

/// Mount points under `dir`, deepest first, from `/proc/self/mounts`
/// (whose paths escape space, tab, newline and backslash in octal).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return vec![];
    };
    let unescape = |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
    let mut out: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// A worker that was killed (SIGKILL, OOM, power) mid-step leaves the
/// step's overlay mounted under its scratch dir; the next start detaches
/// those mounts and removes the scratch, so they neither pile up nor block
/// cleaning the state dir. Best effort: a failure is logged, never fatal.
fn release_stale_mounts(steps: &Path) {
    for m in mounts_under(steps) {
        let ok = std::process::Command::new("umount").arg("-l").arg(&m).status().is_ok_and(|s| s.success());
        if !ok {
            tracing::warn!("could not detach the stale mount {}", m.display());
        }
    }
    if let Ok(rd) = std::fs::read_dir(steps) {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A cache mount the worker holds locally, for `Register.snapshots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCache {
    pub namespace: String,
    pub cache_id: String,
    pub slot: u32,
    pub snapshot: Digest,
}

/// Runs farm steps on this machine. Shared by the worker's concurrent
/// assignments (`&self` everywhere).
pub struct FarmExecutor {
    root: PathBuf,
    executor: Executor,
    layout: OciLayout,
    store: Arc<dyn Store>,
    caches: CacheDirs,
    /// One step at a time per local cache directory (two steps restoring
    /// and capturing one directory at once would corrupt each other's
    /// view), context and blob use: what the disk keeper respects.
    locks: Arc<StepLocks>,
    /// The disk limit (`rbk worker --disk-limit`: everything above plus
    /// the cache directories) and the layer budget (`images/`, `rbk worker
    /// --max-layer-bytes`), kept in the background after each step.
    keeper: Arc<DiskKeeper>,
}

/// Restored build contexts kept on disk for later steps; older unused
/// ones are removed beyond this many (a long-lived worker sees a new
/// context with every commit of every repository).
pub const KEEP_CONTEXTS: usize = 8;

/// A running step's use of a restored context.
struct ContextLease {
    dir: PathBuf,
    name: String,
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ContextLease {
    fn drop(&mut self) {
        let mut m = self.in_use.lock().expect("context use map");
        if let Some(n) = m.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

/// Keeps the `keep` most recently used context directories of `dir` and
/// removes the older ones, except those named in `in_use` (and restores in
/// progress, whose names start with a dot).
pub fn evict_contexts(dir: &Path, keep: usize, in_use: &dyn Fn(&str) -> bool) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut all: Vec<(std::time::SystemTime, PathBuf, String)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if name.starts_with('.') {
                return None;
            }
            let t = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((t, e.path(), name))
        })
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for (_, path, name) in all.into_iter().take(excess) {
        if !in_use(&name) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl std::fmt::Debug for FarmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmExecutor").field("root", &self.root).finish_non_exhaustive()
    }
}

fn layer_ref(l: &LayerDesc) -> Result<LayerRef> {
    let parse = |what: &'static str, s: &str| -> Result<OciDigest> {
        s.parse().map_err(|e: rbk_image::ImageError| ExecError::LayerDigest {
            layer: format!("layer {}", l.blake3),
            field: what,
            value: s.to_owned(),
            message: e.to_string(),
        })
    };
    Ok(LayerRef { digest: parse("digest", &l.digest)?, diff_id: parse("diff_id", &l.diff_id)? })
}

/// What [`FarmExecutor::restore_caches`] hands back: the grants, the
/// per-id locks held until the commit, bytes restored, each id's directory.
type RestoredCaches = (Vec<rbk_proto::worker::MountGrant>, Vec<tokio::sync::OwnedMutexGuard<()>>, u64, Vec<(String, PathBuf)>);

/// The result's phases, created on first use.
fn phases(out: &mut StepResult) -> &mut StepPhases {
    out.phases.get_or_insert_with(StepPhases::default)
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// Why a step could not run or failed, as the coordinator hears it.
struct Failure {
    message: String,
    exit_code: i32,
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        Failure { message: e.to_string(), exit_code: -1 }
    }
}

impl FarmExecutor {
    /// Opens (creating) the worker's local state under `root`; cache-mount
    /// directories go to `cache_dir` (default `root/caches`), which a CI
    /// system may keep between jobs. `layer_store_bytes` is the local layer
    /// store's eviction threshold (`rbk worker --max-layer-bytes`; `None`:
    /// the executor's default), so a worker on a size-limited volume evicts
    /// layers before the volume fills; `policy` is the pool's sandbox policy
    /// (`rbk worker --policy`: entitlements, step limits, log size).
    pub fn open(
        root: &Path,
        cache_dir: Option<&Path>,
        runtime: RuntimeKind,
        runtime_program: &Path,
        store: Arc<dyn Store>,
        layer_store_bytes: Option<u64>,
        policy: &WorkerPolicy,
    ) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| ExecError::io(root, e))?;
        let root = std::path::absolute(root).map_err(|e| ExecError::io(root, e))?;
        // Tenants' contexts, caches and layers: root only.
        rbk_worker::hygiene::private_dir(&root)?;
        for d in ["contexts", "held-layers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ExecError::io(&p, e))?;
        }
        release_stale_mounts(&root.join("worker").join("steps"));
        let mut config = WorkerConfig::new(root.join("worker"), runtime, runtime_program);
        policy.apply(&mut config);
        if let Some(bytes) = layer_store_bytes {
            config.layer_store_bytes = bytes;
        }
        let blob_budget = config.layer_store_bytes;
        let executor = Executor::new(config)?;
        let layout = OciLayout::create(root.join("images"))?;
        let cache_root = match cache_dir {
            Some(d) => std::path::absolute(d).map_err(|e| ExecError::io(d, e))?,
            None => root.join("caches"),
        };
        std::fs::create_dir_all(&cache_root).map_err(|e| ExecError::io(&cache_root, e))?;
        rbk_worker::hygiene::private_dir(&cache_root)?;
        let caches = CacheDirs::new(cache_root);
        let locks = Arc::new(StepLocks::default());
        let keeper = Arc::new(DiskKeeper::new(
            root.clone(),
            caches.root().to_owned(),
            executor.layers().clone(),
            layout.root().join("blobs/sha256"),
            root.join("held-layers"),
            blob_budget,
            crate::disk_budget::DEFAULT_DISK_LIMIT,
            locks.clone(),
        ));
        Ok(FarmExecutor { root, executor, layout, store, caches, locks, keeper })
    }

    /// Keeps the worker's local disk use (state dir and cache dirs) under
    /// `bytes` (`rbk worker --disk-limit`; default
    /// [`crate::disk_budget::DEFAULT_DISK_LIMIT`]) by evicting the least
    /// recently used local copies after each step (in the background, see
    /// [`crate::disk_keeper`]).
    pub fn with_disk_limit(self, bytes: u64) -> Self {
        self.keeper.set_limit(bytes);
        self
    }

    /// Sweeps now: measures the local disk use and evicts, least recently
    /// used first, what no running step uses until it fits the disk limit
    /// (and layer blobs over their budget when no step runs). Returns once
    /// that sweep (and any requested before) has run.
    pub async fn keep_disk_limit(&self) -> crate::disk_budget::Swept {
        self.keeper.request();
        self.keeper.settled().await
    }

    /// Waits for the disk-limit sweeps requested so far (one follows every
    /// step) and returns what the last one saw.
    pub async fn disk_settled(&self) -> crate::disk_budget::Swept {
        self.keeper.settled().await
    }

    /// Measures the local disk (a sweep, in the background): what the
    /// first heartbeats report before any step ran.
    pub fn measure_disk(&self) {
        self.keeper.request();
    }

    /// The local disk use against the limits, as the last sweep measured
    /// it (`Heartbeat.disk`; `None` before the first sweep).
    pub fn disk_use(&self) -> Option<rbk_proto::worker::DiskUse> {
        let s = self.keeper.last()?;
        Some(rbk_proto::worker::DiskUse {
            used_bytes: s.used.saturating_sub(s.freed),
            limit_bytes: self.keeper.limit(),
            layer_bytes: s.layer_bytes,
            layer_limit_bytes: self.keeper.blob_budget,
            cache_bytes: s.cache_bytes,
            blob_bytes: s.blob_bytes,
        })
    }

    /// blake3 names of the layer blobs held locally (`Register.layers`).
    pub fn held_layers(&self) -> Vec<String> {
        let dir = self.root.join("held-layers");
        let mut out: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.parse::<Digest>().is_ok())
            .collect();
        out.sort();
        out
    }

    /// Cache mounts held locally (`Register.snapshots`).
    pub fn held_caches(&self) -> Vec<HeldCache> {
        self.caches
            .held()
            .into_iter()
            .filter_map(|(key, snapshot)| {
                let (namespace, cache_id, slot): (String, String, u32) = serde_json::from_str(&key).ok()?;
                Some(HeldCache { namespace, cache_id, slot, snapshot })
            })
            .collect()
    }

    /// Notes that the blob `digest` (named `blake3` in the store) is held;
    /// the marker names the blob so eviction can drop it with the blob.
    fn mark_held(&self, blake3: &str, digest: &str) {
        // Best effort: the marker only steers scheduling.
        if blake3.parse::<Digest>().is_ok() {
            let _ = std::fs::write(self.root.join("held-layers").join(blake3), digest);
        }
    }

    /// Runs `assign`, streaming the step's output to `log`. Never fails:
    /// what went wrong is in the result (`ok = false`, a message naming the
    /// step, and the exit code or -1 when rbk itself failed).
    pub async fn run(&self, assign: &Assign, log: LogSink) -> StepResult {
        self.run_with_ssh(assign, log, HashMap::new()).await
    }

    /// [`Self::run`] with SSH agent sockets by ssh id (`RUN
    /// --mount=type=ssh`): host paths outside the rootfs that the caller
    /// serves for the step's lifetime (the agent crate relays them to the
    /// client's agent).
    pub async fn run_with_ssh(&self, assign: &Assign, log: LogSink, ssh: HashMap<String, PathBuf>) -> StepResult {
        let (mut result, later) = self.run_committing_later(assign, log, ssh).await;
        if let Some(c) = later {
            c.run_into(&mut result).await;
        }
        result
    }

    /// [`Self::run_with_ssh`], except that a successful step's cache mounts
    /// are not captured yet: the result says `commits_follow` and the
    /// returned [`BackgroundCommit`] captures them (its commits are sent
    /// after the result). A failed step's are in its result, as before.
    pub async fn run_committing_later(&self, assign: &Assign, log: LogSink, ssh: HashMap<String, PathBuf>) -> (StepResult, Option<BackgroundCommit>) {
        let t0 = Instant::now();
        let mut result = StepResult { assignment_id: assign.assignment_id.clone(), ..StepResult::default() };
        let mut later = None;
        let blobs_in_use = self.locks.blobs.read().await;
        let outcome = self.try_run(assign, log, ssh, &mut result, &mut later).await;
        drop(blobs_in_use);
        // Before the result is sent, so an observer who saw the result
        // also sees the sweep pending.
        self.keeper.request();
        match outcome {
            Ok(()) => result.ok = true,
            Err(f) => {
                result.ok = false;
                result.message = f.message;
                result.exit_code = f.exit_code;
                result.layers.clear();
                result.config.clear();
                // Failed after the step ran (storing its layer): its
                // cache writes are kept, committed with the failure.
                if let Some(c) = later.take() {
                    c.run_into(&mut result).await;
                }
            }
        }
        result.commits_follow = later.is_some();
        result.duration_ms = t0.elapsed().as_millis() as u64;
        (result, later)
    }

    async fn try_run(
        &self,
        assign: &Assign,
        log: LogSink,
        ssh: HashMap<String, PathBuf>,
        out: &mut StepResult,
        later: &mut Option<BackgroundCommit>,
    ) -> std::result::Result<(), Failure> {
        let step: FarmStep = serde_json::from_slice(&assign.payload).map_err(|e| Failure {
            message: format!("step {}: the payload is not a farm step: {e}", assign.step_id),
            exit_code: -1,
        })?;
        if step.version != FARM_STEP_VERSION {
            return Err(Failure {
                message: format!(
                    "{}: payload version {} is not the version this worker runs ({FARM_STEP_VERSION}); upgrade the worker or the client",
                    step.label, step.version
                ),
                exit_code: -1,
            });
        }
        let where_ = format!("{} ({}:{})", step.label, step.file, step.line);
        let started = Instant::now();
        // The parent's layers are fetched and unpacked while the cache
        // mounts are restored: on a fresh worker both are large and neither
        // needs the other.
        let parent_ready = async {
            let parent = self.image_layers(assign, &step.parent).await?;
            if matches!(step.work, Work::Step { .. }) {
                let refs = parent.iter().map(layer_ref).collect::<Result<Vec<_>>>()?;
                self.executor.unpack(&refs, &self.layout).await.map_err(ExecError::from)?;
            }
            Ok::<_, ExecError>(parent)
        };
        let timed_restore = async {
            let t = Instant::now();
            (self.restore_caches(assign, &step, &where_).await, t.elapsed())
        };
        let (parent, (caches, cache_time)) = tokio::join!(parent_ready, timed_restore);
        phases(out).cache_restore_ms = ms(cache_time);
        let parent = parent?;
        let (grants, _held, restored, cache_dirs) = caches?;
        out.bytes_restored += restored;
        let mut inputs = StepInputs { ssh, allow: step.allow.clone(), ..StepInputs::default() };
        inputs.caches.extend(cache_dirs);
        for (k, v) in &assign.secrets {
            inputs.secrets.insert(k.clone(), SecretValue(v.clone()));
        }
        let mut _context = None;
        if let Some(ctx) = &step.context {
            let lease = self.context(ctx).await?;
            inputs.context = Some(lease.dir.clone());
            _context = Some(lease);
        }
        let mut rootfs = Vec::new();
        for (name, source) in &step.stages {
            let layers = self.image_layers(assign, source).await?;
            let refs = layers.iter().map(layer_ref).collect::<Result<Vec<_>>>()?;
            let r = self.executor.mount_readonly(&refs, &self.layout).await.map_err(ExecError::from)?;
            inputs.stages.insert(name.clone(), r.path().to_owned());
            rootfs.push(r);
        }
        phases(out).restore_ms = ms(started.elapsed());

        let outcome = match &step.work {
            Work::Mkdir { path } => {
                let t = Instant::now();
                let made = mkdir_layer(&self.root.join("worker"), path).await?;
                phases(out).run_ms = ms(t.elapsed());
                made.map_err(|m| Failure { message: format!("{where_}: {m}"), exit_code: -1 })
            }
            Work::Step { step: kind } => {
                let base = parent.iter().map(layer_ref).collect::<Result<Vec<_>>>()?;
                let wstep = rbk_worker::Step { base, kind: kind.clone() };
                let r = self.executor.execute(&wstep, &self.layout, &inputs, log).await.map_err(ExecError::from);
                drop(rootfs);
                if let Ok(o) = &r {
                    let p = phases(out);
                    p.restore_ms += ms(o.timings.prepare);
                    p.run_ms = ms(o.timings.run);
                    p.upload_ms = ms(o.timings.diff);
                }
                match r {
                    Ok(o) => match o.layer {
                        Some(layer) if o.succeeded() => Ok(layer),
                        _ => {
                            Err(Failure { message: format!("{where_} failed: {}", o.why()), exit_code: o.exit_code })
                        }
                    },
                    Err(e @ ExecError::Worker(rbk_worker::WorkerError::Entitlement { .. })) => {
                        Err(Failure { message: format!("{where_}: {e}"), exit_code: -1 })
                    }
                    Err(e) => Err(Failure::from(e)),
                }
            }
        };

        // Cache mounts keep what the step wrote even when it fails (as in
        // BuildKit): a failed step's commit travels with the result, a
        // successful one's is captured after it (the locks go along).
        if outcome.is_ok() && !grants.is_empty() {
            *later = Some(BackgroundCommit {
                assignment_id: assign.assignment_id.clone(),
                namespace: assign.namespace.clone(),
                caches: self.caches.clone(),
                store: self.store.clone(),
                grants,
                held: _held,
                keeper: self.keeper.clone(),
            });
        } else {
            let t = Instant::now();
            let (commits, uploaded) = capture_grants(&self.caches, &self.store, &assign.namespace, &grants).await?;
            out.commits = commits;
            let p = phases(out);
            p.commit_ms = ms(t.elapsed());
            p.cache_bytes_uploaded = uploaded;
            drop(_held);
        }
        let layer = outcome?;

        let t = Instant::now();
        layer.add_to_layout(&self.layout).map_err(ExecError::from)?;
        layer.put_into(&*self.store).await.map_err(ExecError::from)?;
        let p = phases(out);
        p.upload_ms += ms(t.elapsed());
        p.layer_bytes = layer.size;
        self.mark_held(&layer.blake3.to_string(), &layer.digest.to_string());
        let mut layers = parent;
        layers.push(LayerDesc {
            digest: layer.digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            blake3: layer.blake3.to_string(),
            size: layer.size,
            media_type: layer.media_type.clone(),
        });
        out.layers = layers.iter().map(|l| l.blake3.clone()).collect();
        out.config = serde_json::to_vec(&FarmResult { layers }).map_err(|source| ExecError::EncodeResult { step: where_.clone(), source })?;
        Ok(())
    }

    /// Cache mounts: lock each granted id on this worker, restore its head
    /// into the local directory. Returns the grants, the held locks (kept
    /// until the commit), bytes restored and each id's directory.
    async fn restore_caches(&self, assign: &Assign, step: &FarmStep, where_: &str) -> std::result::Result<RestoredCaches, Failure> {
        let mut grants = Vec::new();
        for id in &step.cache_ids {
            let g = assign.mounts.iter().find(|m| &m.cache_id == id).ok_or_else(|| Failure {
                message: format!("{where_}: the coordinator granted no cache mount for id {id:?}"),
                exit_code: -1,
            })?;
            grants.push(g.clone());
        }
        let mut keys: Vec<String> = grants.iter().map(|g| cache_key(&assign.namespace, &g.cache_id, g.slot)).collect();
        keys.sort();
        keys.dedup();
        let locks: Vec<_> = keys
            .iter()
            .map(|k| self.locks.cache(k))
            .collect();
        let mut held = Vec::new();
        let (mut restored, mut dirs) = (0, Vec::new());
        for l in &locks {
            held.push(l.clone().lock_owned().await);
        }
        for g in &grants {
            let key = cache_key(&assign.namespace, &g.cache_id, g.slot);
            let p = self.caches.prepare_head(&self.store, &key, granted_head(g)?).await?;
            restored += p.bytes_restored;
            dirs.push((g.cache_id.clone(), self.caches.dir(&key)));
        }
        Ok((grants, held, restored, dirs))
    }

    /// The layer chain of `source`, with every blob in the local layout.
    async fn image_layers(&self, assign: &Assign, source: &ImageSource) -> Result<Vec<LayerDesc>> {
        let layers = match source {
            ImageSource::Scratch => vec![],
            ImageSource::Layers { layers } => layers.clone(),
            ImageSource::Step { step_id } => {
                let input = assign
                    .inputs
                    .iter()
                    .find(|i| &i.step_id == step_id)
                    .ok_or_else(|| ExecError::MissingInput { step_id: assign.step_id.clone(), input: step_id.clone() })?;
                let r: FarmResult = serde_json::from_slice(&input.config).map_err(|source| ExecError::BadInput {
                    step_id: assign.step_id.clone(),
                    input: step_id.clone(),
                    source,
                })?;
                r.layers
            }
        };
        for l in &layers {
            let held = l.digest.parse::<OciDigest>().is_ok_and(|d| self.layout.has_blob(&d));
            rbk_metrics::global().cache_lookup(rbk_metrics::CacheKind::Layer, held);
            fetch_blob(&*self.store, &self.layout, &l.digest, &l.blake3, &format!("step {}", assign.step_id)).await?;
            if let Ok(d) = l.digest.parse::<OciDigest>() {
                crate::blob_budget::touch(&self.layout.blob_path(&d));
            }
            self.mark_held(&l.blake3, &l.digest);
        }
        Ok(layers)
    }

    /// The build context snapshot `digest`, restored once per worker (and
    /// kept while steps use it; see [`KEEP_CONTEXTS`]).
    async fn context(&self, digest: &str) -> Result<ContextLease> {
        let d: Digest = digest.parse().map_err(|source| ExecError::ContextDigest { value: digest.to_owned(), source })?;
        let name = d.to_string();
        let contexts = self.root.join("contexts");
        let dir = contexts.join(&name);
        let _g = self.locks.context.lock().await;
        *self.locks.contexts_in_use.lock().expect("context use map").entry(name.clone()).or_default() += 1;
        let lease = ContextLease { dir: dir.clone(), name, in_use: self.locks.contexts_in_use.clone() };
        if dir.is_dir() {
            // Most recently used: evicted last.
            let _ = std::fs::File::open(&dir).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(lease);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".restoring-")
            .tempdir_in(&contexts)
            .map_err(|e| ExecError::io(&contexts, e))?;
        let snap = Snapshot::load(&*self.store, d).await?;
        restore(self.store.clone(), &snap, tmp.path(), &RestoreOptions::default()).await?;
        // Visible only when complete: a restore cut short leaves nothing a
        // later step would mistake for the context.
        let tmp = tmp.keep();
        std::fs::rename(&tmp, &dir).map_err(|e| ExecError::io(&dir, e))?;
        let in_use = self.locks.contexts_in_use.lock().expect("context use map").clone();
        evict_contexts(&contexts, KEEP_CONTEXTS, &|n| in_use.contains_key(n));
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_at(root: &Path, name: &str, age_s: u64) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
        std::fs::File::open(&d).unwrap().set_modified(t).unwrap();
    }

    fn names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_least_recently_used_contexts_beyond_the_limit_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, age) in [("old", 300), ("mid", 200), ("new", 100), ("newest", 0)] {
            dir_at(tmp.path(), name, age);
        }
        evict_contexts(tmp.path(), 2, &|_| false);
        assert_eq!(names(tmp.path()), ["new", "newest"]);
    }

    #[test]
    fn contexts_in_use_and_restores_in_progress_are_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, age) in [("old", 300), ("mid", 200), ("newest", 0), (".restoring-x", 400)] {
            dir_at(tmp.path(), name, age);
        }
        evict_contexts(tmp.path(), 1, &|n| n == "old");
        assert_eq!(names(tmp.path()), [".restoring-x", "newest", "old"]);
    }

    #[test]
    fn mount_points_are_listed_deepest_first() {
        // `/proc` is always mounted, with nothing mounted under `/proc/nonexistent`.
        assert!(mounts_under(Path::new("/proc/nonexistent-rbk")).is_empty());
        let sys = mounts_under(Path::new("/sys"));
        let depths: Vec<usize> = sys.iter().map(|p| p.components().count()).collect();
        assert!(depths.windows(2).all(|w| w[0] >= w[1]), "{sys:?}");
    }
}
