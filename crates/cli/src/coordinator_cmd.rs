//! `rbk coordinator --config FILE`: runs the farm's coordinator (build,
//! worker and content services on one port).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rbk_coordinator::{CoordinatorConfig, SnapshotMerger, TokenFile};
use rbk_metrics::{MetricsServer, MetricsStore};
use rbk_store::{Store, build_store};

/// The arguments of a running coordinator.
struct Args {
    config: PathBuf,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CoordinatorArgs {
    /// The coordinator's TOML config (listen address, token file, store).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve plain HTTP/2 (no `[tls]`) on a non-loopback `listen` address:
    /// tokens then cross the network in the clear. For TLS that ends at a
    /// proxy or ingress in front of the coordinator, or a trusted network.
    #[arg(long)]
    insecure_plaintext: bool,
    #[command(subcommand)]
    command: Option<crate::coordinator_members_cmd::CoordinatorCommand>,
}

pub async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    if let Some(cmd) = args.command {
        return crate::coordinator_members_cmd::run(cmd).await;
    }
    let config_path = args.config.context("--config FILE is required to run a coordinator")?;
    crate::build_info::init_metrics(rbk_metrics::Role::Coordinator);
    let args_insecure_plaintext = args.insecure_plaintext;
    let args = Args { config: config_path };
    let config = CoordinatorConfig::load(&args.config)?;
    plaintext_check(&config, &args.config, args_insecure_plaintext)?;
    let tokens = TokenFile::load(&config.token_file)?;
    let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let mut store_config = config.store.config.clone();
    store_config.apply_env(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let backend = if matches!(store_config.describe().rsplit(" > ").next(), Some(b) if b.starts_with("s3")) { "s3" } else { "fs" };
    let store: Arc<dyn Store> = Arc::new(MetricsStore::new(
        build_store(&store_config)
            .await
            .with_context(|| format!("opening the store {} (from {})", store_config.describe(), args.config.display()))?,
        backend,
        rbk_metrics::global().clone(),
    ));
    let merger = Arc::new(SnapshotMerger::new(store.clone()));
    let gc = config.gc.collector_config().map_err(anyhow::Error::msg).with_context(|| format!("[gc] in {}", args.config.display()))?;
    let eviction = config.eviction.policy().map_err(anyhow::Error::msg).with_context(|| format!("[eviction] in {}", args.config.display()))?;
    let admin_token = match &config.admin {
        Some(a) => {
            let text = std::fs::read_to_string(&a.token_file).with_context(|| format!("reading [admin] token_file {}", a.token_file.display()))?;
            let token = text.trim().to_owned();
            if token.len() < 16 {
                anyhow::bail!("[admin] token_file {}: the token is shorter than 16 characters", a.token_file.display());
            }
            Some(token)
        }
        None => None,
    };
    // Only the leader collects (the collector asks the Raft gate).
    let (coordinator, cluster) = crate::coordinator_raft::start(&config, store, merger, &tokens).await?;
    let coordinator = coordinator.with_collector(gc, eviction, admin_token.as_deref()).with_registries(config.registries.clone());
    coordinator.scheduler.events().history().set_limits(config.history);
    // Build events to every node over Redis pub/sub (optional).
    if let Some(redis) = rbk_coordinator::redis_fanout::RedisSection::resolve(config.redis.as_ref(), &store_config) {
        let fanout = redis.start(event_keys(&config)?).map_err(anyhow::Error::msg).with_context(|| format!("[redis] in {}", args.config.display()))?;
        coordinator.scheduler.events().set_fanout(fanout);
    }
    if let Some(section) = &config.dashboard {
        let listener = tokio::net::TcpListener::bind(section.listen)
            .await
            .with_context(|| format!("[dashboard] listen {} (from {})", section.listen, args.config.display()))?;
        let options = rbk_dashboard::DashboardOptions {
            secure_cookies: section.secure_cookies.unwrap_or(config.tls.is_some()),
            operator_token: admin_token.clone(),
        };
        let tls = config.tls.as_ref().map(|t| rbk_dashboard::tls::server_config(&t.cert, &t.key)).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = rbk_dashboard::Dashboard::new(coordinator.clone(), options, cluster.clone()).spawn(listener, tls)?;
        // Tests and scripts read this line, as the one below.
        println!("rbk dashboard listening on {scheme}://{addr}");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (from {})", config.listen, args.config.display()))?;
    // Tests and scripts read this line to learn the port when listen is :0.
    println!("rbk coordinator listening on {}", listener.local_addr()?);
    // Kept alive until the coordinator stops.
    let _metrics = match config.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::start(addr, rbk_metrics::global().clone())
                .await
                .with_context(|| format!("metrics_listen in {}", args.config.display()))?;
            println!("rbk metrics listening on {}", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    coordinator.with_limits(config.server.clone()).serve_tls(listener, tls, shutdown).await.context("serving")?;
    Ok(())
}

/// Bearer tokens in plain HTTP/2 are readable by anyone on the path: the
/// API serves plaintext on a non-loopback address only when told
/// `--insecure-plaintext`, and then says so at start.
fn plaintext_check(config: &CoordinatorConfig, path: &std::path::Path, insecure_plaintext: bool) -> anyhow::Result<()> {
    if config.tls.is_some() || config.listen.ip().is_loopback() {
        return Ok(());
    }
    if !insecure_plaintext {
        anyhow::bail!(
            "refusing to serve plaintext gRPC on {} (not a loopback address; tokens would cross the network in the clear): \
             give [tls] cert and key in {}, or pass --insecure-plaintext if TLS ends at a proxy in front of this coordinator",
            config.listen,
            path.display()
        );
    }
    tracing::warn!(
        listen = %config.listen,
        "--insecure-plaintext: serving plain HTTP/2 on a non-loopback address; tokens cross the network in the clear unless a proxy terminates TLS"
    );
    Ok(())
}

/// The keys that name and seal build-event channels on Redis: derived from
/// the Raft cluster secret (every node of the farm derives the same), or
/// random for a single unreplicated coordinator (no one else subscribes).
fn event_keys(config: &CoordinatorConfig) -> anyhow::Result<rbk_coordinator::event_seal::EventKeys> {
    let Some(path) = config.raft.as_ref().and_then(|r| r.secret_file.as_ref()) else {
        return Ok(rbk_coordinator::event_seal::EventKeys::random());
    };
    let secret = std::fs::read_to_string(path).with_context(|| format!("raft.secret_file {}", path.display()))?;
    Ok(rbk_coordinator::event_seal::EventKeys::derive(secret.trim().as_bytes()))
}
