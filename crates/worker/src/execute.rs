//! The worker's one entry point: execute a [`Step`] on its base layers and
//! return the layer it produced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rbk_image::{Compression, Layer, LayerOptions, OciLayout, layer_from_upper};

use crate::copy::{CopyStats, copy, fetch_url, seed_dir};
use crate::entitlements::{Entitlement, refusal, required};
use crate::error::{IoContext, Result, WorkerError};
use crate::layers::{LayerLease, LayerStore};
use crate::limits::{LimitHit, effective};
use crate::logs::{DEFAULT_LOG_LIMIT_BYTES, LogSink};
use crate::mounts::{MountStubs, StepInputs, prepare};
use crate::container_options::{MAX_EXTRA_HOSTS, hosts_file};
use crate::network::{HOSTS, NetworkPool, find_pasta, resolv_conf};
use crate::rootfs::OverlayRootfs;
use crate::runtime::{RunOptions, RunOutcome, Runtime, RuntimeKind, container_id};
use crate::scope::{clean_abs, resolve_in_root};
use crate::spec::{SpecInput, bind_ro, build_spec};
use crate::step::{Command, CopySource, CopyStep, LayerRef, Limits, Mount, MountKind, Network, RunStep, Step, StepKind};
use crate::users::resolve_user;

/// Docker's default `PATH` for containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the worker keeps its state and how it runs steps.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Holds `layers/`, `steps/` (per-step scratch), `runtime/` (the OCI
    /// runtime's state) and `tmp/` (layer blobs being written).
    pub state_dir: PathBuf,
    pub runtime: RuntimeKind,
    pub runtime_program: PathBuf,
    /// Size limit of the local layer store (unused layers beyond it are
    /// evicted, least recently used first).
    pub layer_store_bytes: u64,
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: clamp layer mtimes for reproducible layers.
    pub source_date_epoch: Option<i64>,
    /// The pool's per-step limits: every RUN gets them, a step may only
    /// ask for lower ones ([`crate::limits::effective`]).
    pub limits: Limits,
    /// A step's log is clipped after this many bytes of output.
    pub log_limit_bytes: u64,
    /// Pool policy: sandboxed steps keep `CAP_NET_RAW` (ping, raw
    /// sockets), which Docker grants and rbk does not by default.
    pub allow_net_raw: bool,
    /// Pool policy: sandboxed steps may make 32-bit (and x32) system calls,
    /// as Docker's profile allows; off, only the native ABI (stricter, and
    /// ~14 ms less per step start: `crate::seccomp::for_capabilities`).
    pub compat_syscall_arches: bool,
    /// Pool policy: the entitlements steps may be granted (each also needs
    /// the build's `--allow`). Default none.
    pub entitlements: Vec<Entitlement>,
    /// pasta, which gives default-network steps their egress; default:
    /// found on `PATH`. Without it such steps fail, naming it.
    pub pasta: Option<PathBuf>,
    /// How many step network namespaces are kept ready.
    pub netns_pool: usize,
}

/// The pool limits a worker applies when its configuration sets none: no
/// memory limit (the pod's or host's own limit applies; a pool sets one
/// from its nodes' size), 4096 tasks (a fork bomb stops there) and 6 hours
/// (a hung step does not hold a worker slot forever).
pub const DEFAULT_POOL_LIMITS: Limits = Limits { memory_bytes: None, pids: Some(4096), wall_time_ms: Some(6 * 3600 * 1000) };

impl WorkerConfig {
    /// runc, gzip, a 20 GiB layer store, under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>, runtime: RuntimeKind, runtime_program: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            state_dir: state_dir.into(),
            runtime,
            runtime_program: runtime_program.into(),
            layer_store_bytes: 20 << 30,
            compression: Compression::Gzip,
            source_date_epoch: None,
            limits: DEFAULT_POOL_LIMITS,
            log_limit_bytes: DEFAULT_LOG_LIMIT_BYTES,
            allow_net_raw: false,
            compat_syscall_arches: false,
            entitlements: Vec::new(),
            pasta: find_pasta(),
            netns_pool: 2,
        }
    }
}

/// How long each phase of a step took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Unpacking missing layers, mounting, preparing mounts.
    pub prepare: Duration,
    /// The container (RUN) or the copy (COPY/ADD).
    pub run: Duration,
    /// Upper dir → compressed layer.
    pub diff: Duration,
}

/// The result of a step.
#[derive(Debug)]
pub struct StepOutput {
    /// The step's layer; `None` when the step failed.
    pub layer: Option<Layer>,
    /// 0 for success (and for COPY/ADD).
    pub exit_code: i32,
    /// Killed at its wall-time limit.
    pub timed_out: bool,
    /// The limit the step ran into, if any (the step then failed).
    pub limit_hit: Option<LimitHit>,
    /// Its log passed the log limit and was clipped.
    pub log_clipped: bool,
    /// Last lines of output, secrets scrubbed.
    pub tail: Vec<String>,
    pub timings: Timings,
    /// What a COPY/ADD wrote.
    pub copied: Option<CopyStats>,
}

impl StepOutput {
    /// A step that ran into a limit failed even if its command exited 0
    /// (a process of it was killed or refused a fork).
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && !self.timed_out && self.limit_hit.is_none()
    }

    /// Why the step failed, for its failure message: the limit it ran
    /// into, else its exit code.
    pub fn why(&self) -> String {
        /// 128 + SIGSYS: what a shell reports for a process the seccomp
        /// filter killed (a system call of a foreign ABI).
        const SIGSYS_EXIT: i32 = 128 + 31;
        match (&self.limit_hit, self.exit_code) {
            (Some(hit), 0) => hit.to_string(),
            (Some(hit), code) => format!("{hit}; exit code {code}"),
            (None, _) if self.timed_out => "killed at its time limit".to_owned(),
            (None, SIGSYS_EXIT) => format!(
                "exit code {SIGSYS_EXIT}: killed by SIGSYS, a system call the step's seccomp filter refuses \
                 (32-bit x86 programs need the worker pool's compat_syscall_arches policy)"
            ),
            (None, code) => format!("exit code {code}"),
        }
    }
}

/// Whether a line of a step's output says a fork or clone failed with
/// `EAGAIN` (`sh: can't fork: Resource temporarily unavailable`, bash's
/// `fork: retry: ...`, Python's `BlockingIOError: [Errno 11]` on fork).
fn fork_refused(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    (l.contains("fork") || l.contains("clone")) && (l.contains("resource temporarily unavailable") || l.contains("errno 11"))
}

/// A read-only rootfs of a layer chain, for use as another step's `--from`
/// stage (COPY --from, bind mounts). Layers stay leased while it lives.
#[derive(Debug)]
pub struct ReadonlyRootfs {
    overlay: OverlayRootfs,
    _leases: Vec<LayerLease>,
}

impl ReadonlyRootfs {
    pub fn path(&self) -> &Path {
        &self.overlay.merged
    }
}

/// A step's scratch directory, removed when the step is over.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Executes steps on this machine.
#[derive(Debug)]
pub struct Executor {
    config: WorkerConfig,
    layers: LayerStore,
    runtime: Runtime,
    network: Option<NetworkPool>,
}

impl Executor {
    pub fn new(mut config: WorkerConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.state_dir).ctx(|| format!("creating worker state dir {}", config.state_dir.display()))?;
        config.state_dir = config.state_dir.canonicalize().ctx(|| format!("resolving {}", config.state_dir.display()))?;
        crate::hygiene::private_dir(&config.state_dir)?;
        for d in ["steps", "tmp", "runtime", "layers"] {
            let p = config.state_dir.join(d);
            std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
            crate::hygiene::private_dir(&p)?;
        }
        let layers = LayerStore::open(config.state_dir.join("layers"), config.layer_store_bytes)?;
        let runtime = Runtime::new(config.runtime, &config.runtime_program, config.state_dir.join("runtime"));
        let network = match &config.pasta {
            Some(pasta) => Some(NetworkPool::new(pasta, config.state_dir.join("netns"), config.netns_pool)?),
            None => None,
        };
        Ok(Executor { config, layers, runtime, network })
    }

    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Leases every layer of `base`, unpacking from `blobs` what is missing.
    async fn lease_all(&self, base: &[LayerRef], blobs: &OciLayout) -> Result<Vec<LayerLease>> {
        let store = self.layers.clone();
        let jobs: Vec<(LayerRef, PathBuf)> = base.iter().map(|l| (*l, blobs.blob_path(&l.digest))).collect();
        tokio::task::spawn_blocking(move || {
            jobs.iter()
                .map(|(l, blob)| {
                    if !store.contains(&l.diff_id) && !blob.exists() {
                        return Err(WorkerError::path(blob, format!("layer {} is neither unpacked here nor in the image layout", l.digest)));
                    }
                    store.lease(l, blob)
                })
                .collect()
        })
        .await
        .map_err(|e| WorkerError::step("base", format!("unpacking task failed: {e}")))?
    }

    fn scratch(&self) -> (String, PathBuf) {
        let id = container_id();
        let dir = self.config.state_dir.join("steps").join(&id);
        (id, dir)
    }

    /// Unpacks `base` into the layer store ahead of [`Executor::execute`],
    /// which then finds it ready: a worker overlaps this with its other
    /// preparation (restoring cache mounts) instead of doing both in turn.
    pub async fn unpack(&self, base: &[LayerRef], blobs: &OciLayout) -> Result<()> {
        self.lease_all(base, blobs).await.map(drop)
    }

    /// Mounts `base` read-only (for another step's `Source::Stage`).
    pub async fn mount_readonly(&self, base: &[LayerRef], blobs: &OciLayout) -> Result<ReadonlyRootfs> {
        let leases = self.lease_all(base, blobs).await?;
        let (_, dir) = self.scratch();
        let lowers: Vec<PathBuf> = leases.iter().map(|l| l.path().to_path_buf()).collect();
        let overlay = OverlayRootfs::mount(&lowers, &dir, false)?;
        Ok(ReadonlyRootfs { overlay, _leases: leases })
    }

    /// Runs `step` on its base layers (blobs read from `blobs` when not yet
    /// unpacked here), with host material from `inputs`, streaming output
    /// to `sink`. A failing command is not an `Err`: the output says how
    /// it failed; `Err` means the worker could not do its part.
    pub async fn execute(&self, step: &Step, blobs: &OciLayout, inputs: &StepInputs, sink: LogSink) -> Result<StepOutput> {
        let t0 = Instant::now();
        if let StepKind::Run(run) = &step.kind {
            // Before anything of the step runs or is even unpacked.
            for e in required(run) {
                if let Some(reason) = refusal(e, &self.config.entitlements, &inputs.allow) {
                    return Err(WorkerError::Entitlement { entitlement: e, reason });
                }
            }
            if run.network == Network::Private {
                if let Some(pool) = &self.network {
                    pool.refill();
                }
            }
        }
        let leases = self.lease_all(&step.base, blobs).await?;
        let lowers: Vec<PathBuf> = leases.iter().map(|l| l.path().to_path_buf()).collect();
        let (id, dir) = self.scratch();
        // Declared before the overlay, so dropped (removed) after it is
        // unmounted, on every path out of here.
        let _scratch = RemoveOnDrop(dir.clone());
        let mut overlay = OverlayRootfs::mount(&lowers, &dir.join("rootfs"), true)?;
        let mut out = match &step.kind {
            StepKind::Run(run) => self.run(run, &id, &dir, &overlay, inputs, sink, t0).await?,
            StepKind::Copy(c) => self.copy(c, &dir, &overlay, inputs, t0).await?,
        };
        overlay.unmount()?;
        if out.succeeded() {
            let t = Instant::now();
            let upper = match &step.kind {
                StepKind::Copy(c) if c.link => dir.join("link"),
                _ => overlay.upper.clone().expect("writable overlay"),
            };
            let mut opts = LayerOptions::new(self.config.state_dir.join("tmp"));
            opts.compression = self.config.compression;
            opts.source_date_epoch = self.config.source_date_epoch;
            let keep_tree = opts.source_date_epoch.is_none();
            let layers = self.layers.clone();
            let layer = tokio::task::spawn_blocking(move || -> Result<Layer> {
                let layer = layer_from_upper(&upper, &opts)?;
                // The upper dir holds exactly the layer's content, in the
                // layout an unpack would give: keep it as the unpacked layer
                // so the next step does not unpack what this one just
                // packed. (Not with SOURCE_DATE_EPOCH: the layer's mtimes
                // are clamped, the tree's are not.)
                if keep_tree {
                    layers.adopt(&layer.diff_id, &upper)?;
                }
                Ok(layer)
            })
            .await
            .map_err(|e| WorkerError::step("diff", format!("layer task failed: {e}")))??;
            out.layer = Some(layer);
            out.timings.diff = t.elapsed();
        }
        tracing::debug!(
            prepare_ms = out.timings.prepare.as_millis() as u64,
            run_ms = out.timings.run.as_millis() as u64,
            diff_ms = out.timings.diff.as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "step executed"
        );
        drop(overlay);
        drop(leases);
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(&self, run: &RunStep, id: &str, dir: &Path, overlay: &OverlayRootfs, inputs: &StepInputs, sink: LogSink, t0: Instant) -> Result<StepOutput> {
        let root = overlay.merged.clone();
        let user = resolve_user(&root, run.user.as_deref())?;
        let cwd = clean_abs("/", run.workdir.as_deref().unwrap_or("/"));
        let cwd_host = resolve_in_root(&root, &cwd)?;
        if !cwd_host.exists() {
            // Docker creates a missing WORKDIR (owned by root).
            std::fs::create_dir_all(&cwd_host).ctx(|| format!("creating workdir {cwd}"))?;
        }
        let args = match &run.command {
            Command::Exec(a) if a.is_empty() => return Err(WorkerError::step("command", "exec form with no arguments")),
            Command::Exec(a) => a.clone(),
            Command::Shell(s) => {
                if run.shell.is_empty() {
                    return Err(WorkerError::step("shell", "is empty"));
                }
                let mut a = run.shell.clone();
                a.push(s.clone());
                a
            }
        };
        let limits = effective(&self.config.limits, &run.limits);
        seed_new_caches(&run.mounts, inputs)?;
        let prepared = prepare(&run.mounts, inputs, dir)?;
        let mut env = run.env.clone();
        env.extend(prepared.env.iter().cloned());
        env.extend(prepared.secret_env.0.iter().cloned());
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let mut stub_targets: Vec<String> = ["/proc", "/dev", "/sys"].iter().map(|s| s.to_string()).collect();
        if run.network != Network::None {
            stub_targets.extend(["/etc/resolv.conf".to_string(), "/etc/hosts".to_string()]);
        }
        let mut oci_mounts = Vec::new();
        let netns = match run.network {
            Network::Private => {
                let pool = self.network.as_ref().ok_or_else(|| WorkerError::Runtime {
                    program: "pasta".into(),
                    reason: "not installed (package passt): a RUN step's default network needs it; install it, or use RUN --network=none".into(),
                })?;
                let ns = pool.take().await?;
                let resolv = dir.join("resolv.conf");
                let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                std::fs::write(&resolv, resolv_conf(&host_resolv)).ctx(|| format!("writing {}", resolv.display()))?;
                oci_mounts.push(bind_ro("/etc/resolv.conf", &resolv)?);
                Some(ns)
            }
            _ => None,
        };
        // `/etc/hosts`: Docker's for the step's own network; with
        // `--add-host` entries, also for `none` (whose image file it
        // replaces) and `host` (the worker's, bound over it by the spec).
        let hosts_base = match (run.network, run.container.extra_hosts.is_empty()) {
            (Network::Private, _) => Some(HOSTS.to_owned()),
            (_, true) => None,
            (Network::None, false) => {
                stub_targets.push("/etc/hosts".to_string());
                Some(HOSTS.to_owned())
            }
            (Network::Host, false) => Some(std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS.to_owned())),
        };
        if let Some(base) = hosts_base {
            if run.container.extra_hosts.len() > MAX_EXTRA_HOSTS {
                return Err(WorkerError::step("add-host", format!("{} entries; at most {MAX_EXTRA_HOSTS}", run.container.extra_hosts.len())));
            }
            for h in &run.container.extra_hosts {
                h.check().map_err(|m| WorkerError::step("add-host", m))?;
            }
            let hosts = dir.join("hosts");
            std::fs::write(&hosts, hosts_file(&base, &run.container.extra_hosts)).ctx(|| format!("writing {}", hosts.display()))?;
            oci_mounts.push(bind_ro("/etc/hosts", &hosts)?);
        }
        oci_mounts.extend(prepared.oci.iter().cloned());
        stub_targets.extend(prepared.targets.iter().cloned());
        let stubs = MountStubs::before(&root, &stub_targets)?;
        let spec = build_spec(&SpecInput {
            rootfs: root.clone(),
            args,
            env,
            user,
            cwd,
            network: run.network,
            limits,
            security: run.security,
            net_raw: self.config.allow_net_raw,
            compat_syscall_arches: self.config.compat_syscall_arches,
            netns: netns.as_ref().map(|n| n.path().to_path_buf()),
            mounts: oci_mounts,
            shm_size_bytes: run.container.shm_size_bytes,
            ulimits: run.container.ulimits.clone(),
        })?;
        // With secret variables in it, config.json lives on the secrets
        // tmpfs (gone with the step), never on the worker's disk.
        let bundle = prepared.secret_bundle_dir().unwrap_or_else(|| dir.join("bundle"));
        std::fs::create_dir_all(&bundle).ctx(|| format!("creating {}", bundle.display()))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| WorkerError::Spec(e.to_string()))?;
        std::fs::write(bundle.join("config.json"), json).ctx(|| format!("writing {}/config.json", bundle.display()))?;
        let prepare_time = t0.elapsed();

        let t = Instant::now();
        let redactor = inputs.redactor();
        let opts = RunOptions { wall_time: limits.wall_time_ms.map(Duration::from_millis), log_limit_bytes: self.config.log_limit_bytes };
        let RunOutcome { exit_code, timed_out, tail, log_clipped, cgroup } = self.runtime.run(&bundle, id, opts, &sink, &redactor).await?;
        let run_time = t.elapsed();
        drop(netns);
        let limit_hit = match (limits, cgroup) {
            (Limits { wall_time_ms: Some(ms), .. }, _) if timed_out => Some(LimitHit::WallTime { limit: Duration::from_millis(ms) }),
            (Limits { memory_bytes: Some(m), .. }, Some(ev)) if ev.oom_kills > 0 => Some(LimitHit::Memory { limit_bytes: m, certain: true }),
            (Limits { pids: Some(p), .. }, Some(ev)) if ev.pids_refused > 0 => Some(LimitHit::Pids { limit: p, refused: ev.pids_refused }),
            // No counters (crun removed the cgroup): a SIGKILL with a
            // memory limit set is almost always the OOM killer.
            (Limits { memory_bytes: Some(m), .. }, None) if exit_code == 128 + 9 => Some(LimitHit::Memory { limit_bytes: m, certain: false }),
            // Likewise a failed step whose last words are a fork refused
            // with EAGAIN ran into its pids limit.
            (Limits { pids: Some(p), .. }, None) if exit_code != 0 && tail.iter().any(|l| fork_refused(l)) => Some(LimitHit::PidsLikely { limit: p }),
            _ => None,
        };
        stubs.cleanup(&root)?;
        drop(prepared);
        Ok(StepOutput {
            layer: None,
            exit_code,
            timed_out,
            limit_hit,
            log_clipped,
            tail,
            timings: Timings { prepare: prepare_time, run: run_time, diff: Duration::ZERO },
            copied: None,
        })
    }

    async fn copy(&self, c: &CopyStep, dir: &Path, overlay: &OverlayRootfs, inputs: &StepInputs, t0: Instant) -> Result<StepOutput> {
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).ctx(|| format!("creating {}", downloads.display()))?;
        let mut fetched = HashMap::new();
        for s in &c.sources {
            match s {
                CopySource::Url { url, checksum } => {
                    fetched.insert(url.clone(), fetch_url(url, checksum.as_deref(), &downloads).await?);
                }
                CopySource::Git { repo, reference, commit, subdir, keep_git_dir } => {
                    let tree = crate::git_source::fetch_git(repo, reference, commit, subdir, *keep_git_dir, &downloads).await?;
                    fetched.insert(crate::copy::git_key(repo, commit), (tree, String::new()));
                }
                CopySource::Path { .. } | CopySource::Inline { .. } => {}
            }
        }
        let prepare_time = t0.elapsed();
        let t = Instant::now();
        let root = overlay.merged.clone();
        let dest_root = if c.link {
            let d = dir.join("link");
            std::fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
            d
        } else {
            root.clone()
        };
        let (step, inputs) = (c.clone(), inputs.clone());
        let stats = tokio::task::spawn_blocking(move || copy(&step, &dest_root, &root, &inputs, &fetched))
            .await
            .map_err(|e| WorkerError::step("copy", format!("copy task failed: {e}")))??;
        Ok(StepOutput {
            layer: None,
            exit_code: 0,
            timed_out: false,
            limit_hit: None,
            log_clipped: false,
            tail: vec![],
            timings: Timings { prepare: prepare_time, run: t.elapsed(), diff: Duration::ZERO },
            copied: Some(stats),
        })
    }
}

/// `--mount=type=cache,from=...,source=...`: a cache directory that is new
/// (missing or empty) starts as a copy of the seed's directory, as BuildKit
/// makes the seed the cache's first content; a used cache keeps its own.
fn seed_new_caches(mounts: &[Mount], inputs: &StepInputs) -> Result<()> {
    for m in mounts {
        let MountKind::Cache { id, seed: Some(seed), .. } = &m.kind else { continue };
        let dir = inputs.caches.get(id).ok_or_else(|| WorkerError::mount(&m.target, format!("no host directory was given for cache id {id:?}")))?;
        std::fs::create_dir_all(dir).ctx(|| format!("creating cache dir {}", dir.display()))?;
        if std::fs::read_dir(dir).ctx(|| format!("reading cache dir {}", dir.display()))?.next().is_some() {
            continue;
        }
        let from = resolve_in_root(inputs.source_root(&seed.from)?, &seed.path)?;
        seed_dir(&from, dir).map_err(|e| WorkerError::mount(&m.target, format!("seeding the cache from {:?}: {e}", seed.path)))?;
    }
    Ok(())
}
