//! The farm in one process, behind `rbk build`: the coordinator (its
//! services on a loopback port of this process), one worker (`rbk worker`'s
//! loop, `rbk_agent`) and the filesystem store, so the embedded default
//! runs the same scheduler, worker and cache-head code as `rbk submit` on a
//! farm (parallel stages, `sharing=`, secret mounts).
//!
//! The coordinator's state survives between builds: a single-voter Raft
//! group (`rbk_raft`, durable log and snapshots) in `STATE/coordinator/raft`,
//! so a second identical build is all CACHED and a fresh worker directory
//! finds its cache mounts' heads. `STATE/coordinator/lock` is held while the
//! build runs: two builds on one state directory take turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rbk_agent::{Agent, AgentConfig};
use rbk_agent::FarmExecutor;
use rbk_coordinator::{Coordinator, CoordinatorConfig, SnapshotMerger, TokenFile};
use rbk_store::Store;
use rbk_worker::RuntimeKind;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The tenant (cache-id namespace) of embedded builds.
const TENANT: &str = "local";

/// A running in-process farm; [`EmbeddedFarm::stop`] drains the worker.
pub struct EmbeddedFarm {
    /// `http://127.0.0.1:PORT` of the coordinator.
    pub url: String,
    /// The tenant token `rbk build` submits with (made up per run).
    pub token: String,
    raft: rbk_raft::RaftState,
    stop_worker: oneshot::Sender<()>,
    worker: JoinHandle<Result<(), rbk_agent::AgentError>>,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<()>,
    _lock: std::fs::File,
}

/// A token nobody outside this process knows: the loopback port is
/// reachable by other local users while the build runs.
fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl EmbeddedFarm {
    /// Starts the coordinator on `state_dir/coordinator`, then the worker
    /// on `worker_dir`; both use `store`. The worker's pool policy allows
    /// the entitlements in `allow` (the user's own `--allow`: on their own
    /// machine they are the operator too). Returns once the coordinator
    /// leads its one-node Raft group and has installed the tokens.
    pub async fn start(
        state_dir: &Path,
        worker_dir: &Path,
        store: Arc<dyn Store>,
        runtime: RuntimeKind,
        program: &Path,
        allow: &[rbk_worker::Entitlement],
    ) -> anyhow::Result<Self> {
        let coord_dir = state_dir.join("coordinator");
        std::fs::create_dir_all(&coord_dir).with_context(|| format!("creating {}", coord_dir.display()))?;
        let lock = crate::file_lock::lock(&coord_dir.join("lock"))?;

        let (tenant, worker_token) = (random_token(), random_token());
        let tokens = TokenFile::parse(
            &format!("[tenants]\n\"{tenant}\" = \"{TENANT}\"\n[workers]\n\"{worker_token}\" = \"local\"\n[pools.local]\ntenants = [\"{TENANT}\"]\n"),
            &coord_dir.join("tokens (generated per build)"),
        )?;
        let raft_port = {
            // The raft port serves nobody (one voter) but must be a real one.
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a loopback port for raft")?;
            l.local_addr()?.port()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on a loopback port")?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        // The raft port is on loopback, but other local users reach it: a
        // per-build secret keeps them from changing the membership.
        let secret = coord_dir.join("raft-secret");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&secret)
                .with_context(|| format!("writing {}", secret.display()))?;
            f.write_all(random_token().as_bytes()).with_context(|| format!("writing {}", secret.display()))?;
        }
        let text = format!(
            "listen = \"{addr}\"\ntoken_file = \"unused\"\n[store]\ndir = {store_dir}\n\
             [raft]\nnode_id = 1\ndata_dir = {data}\nlisten = \"127.0.0.1:{raft_port}\"\ntick_ms = 10\nsecret_file = {secret}\n\
             [raft.peers.1]\nraft = \"127.0.0.1:{raft_port}\"\napi = \"{url}\"\n",
            store_dir = toml_str(&state_dir.join("store")),
            data = toml_str(&coord_dir.join("raft")),
            secret = toml_str(&secret),
        );
        let config = CoordinatorConfig::parse(&text, &coord_dir.join("coordinator.toml"))?;
        let raft_config = config.raft.as_ref().context("the embedded config has a [raft] section")?;
        let raft = rbk_raft::RaftState::start(raft_config)
            .await
            .with_context(|| format!("starting the embedded coordinator's state in {}", raft_config.data_dir.display()))?;
        let mut serving = raft.serving();
        tokio::time::timeout(Duration::from_secs(30), serving.wait_for(|s| *s))
            .await
            .context("the embedded coordinator did not become the leader of its one-node raft group within 30s")?
            .context("the embedded raft node stopped")?;
        let merger = Arc::new(SnapshotMerger::new(store.clone()));
        let coordinator = Coordinator::start(Arc::new(raft.clone()), store.clone(), merger, &tokens, config.scheduler_config())
            .await
            .context("starting the embedded coordinator")?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            if let Err(e) = coordinator
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!("the embedded coordinator stopped serving: {e}");
            }
        });

        let policy = rbk_worker::WorkerPolicy { entitlements: allow.to_vec(), ..Default::default() };
        let exec = FarmExecutor::open(worker_dir, None, runtime, program, store, None, &policy)
            .with_context(|| format!("opening the worker state in {}", worker_dir.display()))?;
        let mut agent = AgentConfig::new(&url, &worker_token, "local");
        agent.backoff_initial = Duration::from_millis(20);
        // `rbk build --platform` of another architecture runs through
        // whatever QEMU handlers this machine has registered, as docker does.
        agent.emulated_platforms =
            rbk_worker::emulation::emulated_platforms(std::path::Path::new(rbk_worker::emulation::BINFMT_MISC), &rbk_agent::platform());
        let (stop_worker, drain) = oneshot::channel::<()>();
        let worker = tokio::spawn(Agent::new(agent, Arc::new(exec)).run(async {
            let _ = drain.await;
        }));
        Ok(EmbeddedFarm { url, token: tenant, raft, stop_worker, worker, stop_server, server, _lock: lock })
    }

    /// Drains the worker (its results are reported), then stops the
    /// coordinator and the raft node (everything committed is on disk).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_worker.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.worker).await {
            Ok(Ok(r)) => r.context("the embedded worker")?,
            Ok(Err(e)) => anyhow::bail!("the embedded worker panicked: {e}"),
            Err(_) => tracing::warn!("the embedded worker did not drain within 30s"),
        }
        let _ = self.stop_server.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        self.raft.stop();
        Ok(())
    }
}

/// `STATE/worker`, `STATE/store` unless given; absolute, because these
/// paths reach the OCI runtime's bundle.
pub fn dirs(state_dir: &Path, worker_dir: Option<&Path>, store_dir: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let abs = |p: &Path| std::path::absolute(p).with_context(|| format!("{}", p.display()));
    let state = abs(state_dir)?;
    let worker = abs(worker_dir.unwrap_or(&state.join("worker")))?;
    let store = abs(store_dir.unwrap_or(&state.join("store")))?;
    Ok((state, worker, store))
}
