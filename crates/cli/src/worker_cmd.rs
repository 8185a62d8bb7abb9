//! `rbk worker`: joins a farm as a worker (connects out to the coordinator,
//! runs the steps it is given). SIGTERM or Ctrl-C drains: running steps
//! finish and report, no new ones are taken, then it exits 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rbk_agent::{Agent, AgentConfig};
use rbk_agent::FarmExecutor;
use rbk_client::RemoteStore;
use rbk_metrics::{MetricsServer, MetricsStore};
use rbk_store::{Store, StoreConfig, build_store};
use rbk_worker::RuntimeKind;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The coordinator, e.g. http://10.0.0.1:7070.
    #[arg(long, env = "RBK_COORDINATOR")]
    coordinator: String,
    /// A worker-pool token from the coordinator's token file.
    #[arg(long, env = "RBK_WORKER_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    tls: crate::flags::TlsCaFlag,
    /// Labels steps can require, e.g. `zone=a,gpu=none` (repeatable).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Layers, restored contexts and the executor's scratch space.
    #[arg(long, default_value = "/var/lib/rbk/worker")]
    state_dir: PathBuf,
    /// Cache-mount directories (default STATE_DIR/caches); may be kept by a
    /// CI system between jobs, or start empty (restored from the store).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Steps run at once.
    #[arg(long, default_value_t = 1)]
    max_parallel: u32,
    /// Also run steps of other platforms through QEMU user-mode emulation:
    /// every platform with a binfmt_misc handler registered with the
    /// fix-binary (F) flag (`update-binfmts --enable qemu-aarch64` with
    /// Debian's qemu-user-static). The scheduler prefers native workers.
    #[arg(long, env = "RBK_WORKER_EMULATION")]
    emulation: bool,
    /// runc or crun.
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// The runtime binary (default: the runtime's name, from PATH).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    /// Reach the content store directly (a TOML file with a `[store]`
    /// table, e.g. S3 in-cluster) instead of through the coordinator.
    #[arg(long)]
    store_config: Option<PathBuf>,
    /// The worker's name (default: the host name); keep it stable so a
    /// restarted worker is recognised.
    #[arg(long)]
    id: Option<String>,
    /// Drain and exit once no step has run for this long (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    until_idle: Option<Duration>,
    /// For CI jobs: serve until idle for 10 s, then drain and exit
    /// (`--until-idle 10s`).
    #[arg(long, conflicts_with = "until_idle")]
    once: bool,
    /// Evict unused local layers (least recently used first) above this
    /// size, e.g. 20GiB, 512MiB or a byte count: the unpacked layers, and
    /// separately their compressed blobs; keep twice it below the local
    /// volume's size so scratch space and cache dirs still fit.
    #[arg(long, value_parser = parse_size, default_value = "20GiB")]
    max_layer_bytes: u64,
    /// Keep the worker's whole local disk use (state dir and cache dirs:
    /// restored contexts, layer blobs, unpacked layers, cache-mount dirs)
    /// under this size, e.g. 50GiB: after each step the least recently
    /// used of them that no running step uses are removed (each is a copy
    /// of something in the store, fetched again when needed).
    #[arg(long, value_parser = parse_size, default_value = "50GiB")]
    disk_limit: u64,
    /// The pool's sandbox policy (JSON: entitlements, step limits, log
    /// size; docs/security.md). Default: no entitlements, default limits.
    #[arg(long, env = "RBK_WORKER_POLICY")]
    policy: Option<PathBuf>,
    /// Longest wait between reconnect attempts.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    max_backoff: Duration,
    /// Serve Prometheus metrics at `GET /metrics` on this address, e.g.
    /// 0.0.0.0:9465 (docs/metrics.md); off when absent.
    #[arg(long, env = "RBK_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// `<n>ms|s|m|h` → a duration.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a number followed by ms, s, m or h");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

/// `<n>[B|KiB|MiB|GiB|TiB]` (binary units) → bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: expected a number of bytes, optionally followed by KiB, MiB, GiB or TiB");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?}: too large"))
}

fn parse_labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in raw.iter().filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once('=').with_context(|| format!("--labels {l:?}: expected key=value"))?;
        if k.is_empty() {
            bail!("--labels {l:?}: the key is empty");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    crate::build_info::init_metrics(rbk_metrics::Role::Worker);
    let runtime = match args.runtime.as_str() {
        "runc" => RuntimeKind::Runc,
        "crun" => RuntimeKind::Crun,
        r => bail!("--runtime {r}: expected runc or crun"),
    };
    let program = args.runtime_path.clone().unwrap_or_else(|| PathBuf::from(&args.runtime));
    let labels = parse_labels(&args.labels)?;
    let tls = args.tls.load()?;
    // Kept alive while the worker runs.
    let _metrics = match args.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::start(addr, rbk_metrics::global().clone()).await.context("--metrics-listen")?;
            eprintln!("rbk metrics listening on {}", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let worker_id = args.id.clone().unwrap_or_else(hostname);
    let mut backend = "remote";
    let store: Arc<dyn Store> = match &args.store_config {
        Some(f) => {
            let config = StoreConfig::load(f)?;
            tracing::info!("store: {}", config.describe());
            backend = if config.describe().rsplit(" > ").next().is_some_and(|b| b.starts_with("s3")) { "s3" } else { "fs" };
            build_store(&config).await.with_context(|| format!("opening the store of {}", f.display()))?
        }
        None => {
            // Lazy: the coordinator may not be up yet; the session loop
            // retries, and the store reconnects on its own.
            let channel = tls.endpoint(&args.coordinator).context("--coordinator")?.connect_lazy();
            Arc::new(RemoteStore::new(channel, &args.coordinator, &args.token)?.for_worker(&worker_id)?)
        }
    };
    let store: Arc<dyn Store> = Arc::new(MetricsStore::new(store, backend, rbk_metrics::global().clone()));
    let policy = match &args.policy {
        Some(f) => rbk_worker::WorkerPolicy::load(f)?,
        None => rbk_worker::WorkerPolicy::default(),
    };
    let exec = FarmExecutor::open(&args.state_dir, args.cache_dir.as_deref(), runtime, &program, store, Some(args.max_layer_bytes), &policy)
        .with_context(|| format!("opening the worker state in {}", args.state_dir.display()))?;
    let exec = exec.with_disk_limit(args.disk_limit);
    let mut config = AgentConfig::new(&args.coordinator, &args.token, worker_id);
    config.tls = tls;
    config.labels = labels;
    config.max_parallel = args.max_parallel.max(1);
    config.until_idle = if args.once { Some(Duration::from_secs(10)) } else { args.until_idle };
    config.backoff_max = args.max_backoff;
    if args.emulation {
        let native = rbk_agent::platform();
        config.emulated_platforms = rbk_worker::emulation::emulated_platforms(std::path::Path::new(rbk_worker::emulation::BINFMT_MISC), &native);
        if config.emulated_platforms.is_empty() {
            eprintln!(
                "rbk worker: --emulation, but no QEMU handler with the fix-binary flag is registered in {}: running {native} steps only",
                rbk_worker::emulation::BINFMT_MISC
            );
        } else {
            eprintln!("rbk worker: emulating {}", config.emulated_platforms.join(", "));
        }
    }
    // Installed before anything can register: a SIGTERM that arrives before
    // the agent first waits must drain it, not kill it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    eprintln!("rbk worker {} connecting to {}", config.worker_id, config.coordinator);
    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    Agent::new(config, Arc::new(exec)).run(shutdown).await?;
    eprintln!("rbk worker drained; exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        let e = parse_size("20GB").unwrap_err();
        assert!(e.contains("\"20GB\"") && e.contains("GiB"), "{e}");
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn labels_are_key_value_pairs() {
        let l = parse_labels(&["zone=a".into(), "gpu=".into()]).unwrap();
        assert_eq!(l["zone"], "a");
        assert_eq!(l["gpu"], "");
        assert!(parse_labels(&["zone".into()]).unwrap_err().to_string().contains("zone"));
    }
}
