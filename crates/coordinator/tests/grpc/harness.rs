//! A coordinator on a free port, clients for its services, and a worker that
//! speaks the Worker stream the way `rbk worker` will.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rbk_coordinator::server::Coordinator;
use rbk_coordinator::state::MemoryState;
use rbk_client::RemoteStore;
use rbk_coordinator::{MergeError, MergedSnapshot, Merger, SchedulerConfig, TokenFile};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};
use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::{self as pw, coordinator_message::Msg as Down, worker_message::Msg as Up};
use rbk_store::{Digest, FilesystemStore, Store, StoreExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

pub const TENANT_A: &str = "tenant-a-secret-token-0001";
pub const TENANT_B: &str = "tenant-b-secret-token-0002";
pub const WORKER: &str = "worker-pool-secret-token-03";
pub const WAIT: Duration = Duration::from_secs(15);

/// Snapshots as JSON maps (path → content) stored in the content store,
/// merged with the rules the snapshot crate's merge follows.
#[derive(Debug)]
pub struct JsonMerger {
    pub store: Arc<FilesystemStore>,
}

pub type Tree = BTreeMap<String, String>;

pub async fn load_tree(store: &dyn Store, d: Digest) -> Tree {
    serde_json::from_slice(&store.get_bytes(d).await.unwrap()).unwrap()
}

#[async_trait::async_trait]
impl Merger for JsonMerger {
    async fn merge(&self, base: Option<Digest>, earlier: Digest, later: Digest) -> Result<MergedSnapshot, MergeError> {
        let load = |d: Digest| async move {
            let bytes = self.store.get_bytes(d).await.map_err(|e| MergeError::Load { snapshot: d, source: e.into() })?;
            serde_json::from_slice::<Tree>(&bytes).map_err(|e| MergeError::Load { snapshot: d, source: e.into() })
        };
        let (earlier_digest, later_digest) = (earlier, later);
        let base = match base {
            Some(b) => load(b).await?,
            None => Tree::new(),
        };
        let (earlier, later) = (load(earlier).await?, load(later).await?);
        let mut out = earlier.clone();
        out.extend(later.clone());
        for (path, content) in &base {
            if !later.contains_key(path) && earlier.get(path) == Some(content) {
                out.remove(path);
            }
        }
        let bytes = serde_json::to_vec(&out).unwrap();
        let total_bytes = out.values().map(|v| v.len() as u64).sum();
        let snapshot = self
            .store
            .put_bytes(bytes.into())
            .await
            .map_err(|e| MergeError::Commit { earlier: earlier_digest, later: later_digest, source: e.into() })?;
        Ok(MergedSnapshot { snapshot, total_bytes })
    }
}

pub struct Farm {
    pub url: String,
    /// The coordinator itself (its token table: `coordinator.auth`).
    pub coordinator: Coordinator,
    pub store: Arc<FilesystemStore>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn farm() -> Farm {
    farm_with(SchedulerConfig::default()).await
}

pub async fn farm_with(config: SchedulerConfig) -> Farm {
    start_farm(config, false).await
}

/// A farm whose concurrent cache commits are merged by the real
/// [`rbk_coordinator::SnapshotMerger`] (commits must be real snapshots:
/// [`TestWorker::capture_snapshot`]).
pub async fn farm_merging_snapshots() -> Farm {
    start_farm(SchedulerConfig::default(), true).await
}

/// A farm whose gRPC server runs with `limits` (config `[server]`).
pub async fn farm_with_limits(limits: rbk_coordinator::server_limits::ServerLimits) -> Farm {
    start_farm_limited(SchedulerConfig::default(), false, limits).await
}

async fn start_farm(config: SchedulerConfig, real_merger: bool) -> Farm {
    start_farm_limited(config, real_merger, Default::default()).await
}

async fn start_farm_limited(config: SchedulerConfig, real_merger: bool, limits: rbk_coordinator::server_limits::ServerLimits) -> Farm {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FilesystemStore::open(dir.path().join("store")).await.unwrap());
    let tokens: TokenFile = toml::from_str(&format!(
        "[tenants]\n\"{TENANT_A}\" = \"team-a\"\n\"{TENANT_B}\" = \"team-b\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team-a\", \"team-b\"]\n"
    ))
    .unwrap();
    let merger: Arc<dyn Merger> =
        if real_merger { Arc::new(rbk_coordinator::SnapshotMerger::new(store.clone())) } else { Arc::new(JsonMerger { store: store.clone() }) };
    let coordinator = Coordinator::start(Arc::new(MemoryState::new()), store.clone(), merger, &tokens, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = coordinator.clone().with_limits(limits);
    tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    Farm { url, coordinator, store, _dir: dir, _stop: stop }
}

impl Farm {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).unwrap().connect().await.unwrap()
    }

    /// A channel whose calls carry `user_agent` (as an rbk of another
    /// version would connect).
    pub async fn channel_as(&self, user_agent: &str) -> Channel {
        Channel::from_shared(self.url.clone()).unwrap().user_agent(user_agent).unwrap().connect().await.unwrap()
    }

    pub async fn client(&self, token: &str) -> Client {
        Client { inner: BuildClient::new(self.channel().await), token: token.into() }
    }

    pub async fn client_as(&self, token: &str, user_agent: &str) -> Client {
        Client { inner: BuildClient::new(self.channel_as(user_agent).await), token: token.into() }
    }

    pub async fn remote_store(&self, token: &str) -> RemoteStore {
        RemoteStore::connect(&rbk_client::ClientTls::default(), &self.url, token).await.unwrap()
    }

    pub async fn worker(&self, id: &str, max_parallel: u32) -> TestWorker {
        self.worker_holding(id, max_parallel, vec![]).await
    }

    pub async fn worker_holding(&self, id: &str, max_parallel: u32, snapshots: Vec<pw::HeldSnapshot>) -> TestWorker {
        self.worker_on(self.channel().await, id, max_parallel, snapshots).await
    }

    /// A worker whose session carries `user_agent`.
    pub async fn worker_as(&self, id: &str, user_agent: &str) -> TestWorker {
        self.worker_on(self.channel_as(user_agent).await, id, 1, vec![]).await
    }

    async fn worker_on(&self, channel: Channel, id: &str, max_parallel: u32, snapshots: Vec<pw::HeldSnapshot>) -> TestWorker {
        let register = pw::Register {
            worker_id: id.into(),
            platform: "linux/amd64".into(),
            labels: Default::default(),
            resources: Some(pw::Resources { cpus: 2, memory_bytes: 1 << 30, max_parallel }),
            layers: vec![],
            snapshots,
            running: vec![],
            emulated_platforms: vec![],
        };
        let (tx, mut down) = open_session_on(channel, WORKER, register).await.unwrap();
        let first = timeout(WAIT, down.message()).await.unwrap().unwrap().unwrap();
        assert!(matches!(first.msg, Some(Down::Registered(_))), "{first:?}");
        // Named as `rbk worker` names itself on Content calls: a pool-token
        // worker sees the blobs of the tenants whose steps run on it.
        TestWorker { tx, down, store: self.remote_store(WORKER).await.for_worker(id).unwrap() }
    }
}

pub fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

/// Opens a worker session with `token` and sends `register`.
pub async fn open_session(
    farm: &Farm,
    token: &str,
    register: pw::Register,
) -> Result<(mpsc::UnboundedSender<pw::WorkerMessage>, Streaming<pw::CoordinatorMessage>), tonic::Status> {
    open_session_on(farm.channel().await, token, register).await
}

/// [`open_session`] over `channel`.
pub async fn open_session_on(
    channel: Channel,
    token: &str,
    register: pw::Register,
) -> Result<(mpsc::UnboundedSender<pw::WorkerMessage>, Streaming<pw::CoordinatorMessage>), tonic::Status> {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(pw::WorkerMessage { msg: Some(Up::Register(register)) }).unwrap();
    let mut client = WorkerClient::new(channel);
    let resp = client.session(bearer(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), token)).await?;
    Ok((tx, resp.into_inner()))
}

pub struct Client {
    pub inner: BuildClient<Channel>,
    pub token: String,
}

pub struct Submitted {
    pub build_id: String,
    pub events: Streaming<pb::BuildEvent>,
}

impl Client {
    pub async fn submit(&mut self, steps: Vec<pb::StepNode>) -> Result<Submitted, tonic::Status> {
        let req = pb::SubmitRequest { options: Some(Default::default()), context_digest: String::new(), steps, secrets: Default::default() };
        let mut events = self.inner.submit(bearer(req, &self.token)).await?.into_inner();
        let first = timeout(WAIT, events.message()).await.unwrap()?.unwrap();
        let Some(Event::Accepted(a)) = first.event else { panic!("first event is not accepted: {first:?}") };
        Ok(Submitted { build_id: a.build_id, events })
    }

    pub async fn list_caches(&mut self) -> Result<Vec<pb::CacheHead>, tonic::Status> {
        Ok(self.inner.list_caches(bearer(pb::ListCachesRequest {}, &self.token)).await?.into_inner().heads)
    }

    pub async fn status(&mut self, build_id: &str) -> Result<pb::BuildStatus, tonic::Status> {
        Ok(self.inner.status(bearer(pb::StatusRequest { build_id: build_id.into() }, &self.token)).await?.into_inner())
    }
}

impl Submitted {
    /// Every remaining event up to and including `build_finished`.
    pub async fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let m = timeout(WAIT, self.events.message()).await.expect("build did not finish").unwrap().expect("stream ended");
            let e = m.event.unwrap();
            let done = matches!(e, Event::BuildFinished(_));
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

pub fn final_state(events: &[Event]) -> String {
    match events.last() {
        Some(Event::BuildFinished(f)) => f.state.clone(),
        other => panic!("no build_finished: {other:?}"),
    }
}

pub fn step(id: &str, key: &str, deps: &[&str]) -> pb::StepNode {
    pb::StepNode {
        id: id.into(),
        key: key.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        // The coordinator keys the action cache by what runs: steps the
        // tests call identical (same `key`) run the same payload.
        payload: format!("{{\"run\":\"{key}\"}}").into_bytes(),
        name: format!("RUN {id}"),
        ..Default::default()
    }
}

pub fn with_cache(mut s: pb::StepNode, id: &str, sharing: &str) -> pb::StepNode {
    s.cache_mounts.push(pb::CacheMount { id: id.into(), sharing: sharing.into() });
    s
}

pub struct TestWorker {
    pub tx: mpsc::UnboundedSender<pw::WorkerMessage>,
    pub down: Streaming<pw::CoordinatorMessage>,
    /// Blobs go through the Content service, as for an external worker.
    pub store: RemoteStore,
}

impl TestWorker {
    pub async fn next(&mut self) -> Down {
        let m = timeout(WAIT, self.down.message()).await.expect("worker waited too long").unwrap().expect("stream ended");
        m.msg.unwrap()
    }

    pub async fn assignment(&mut self) -> pw::Assign {
        match self.next().await {
            Down::Assign(a) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    /// True if no message arrives for a short while.
    pub async fn idle(&mut self) -> bool {
        timeout(Duration::from_millis(400), self.down.message()).await.is_err()
    }

    pub fn send(&self, msg: Up) {
        self.tx.send(pw::WorkerMessage { msg: Some(msg) }).unwrap();
    }

    /// Reports success with one layer stored through the Content service.
    pub async fn succeed(&self, a: &pw::Assign, commits: Vec<pw::CacheCommit>) {
        let layer = self.store.put_bytes(format!("layer of {}", a.key).into_bytes().into()).await.unwrap();
        self.send(Up::Result(pw::StepResult {
            assignment_id: a.assignment_id.clone(),
            ok: true,
            layers: vec![layer.to_string()],
            config: b"{}".to_vec(),
            commits,
            bytes_restored: 0,
            duration_ms: 1,
            message: String::new(),
            exit_code: 0,
            commits_follow: false,
        }));
    }

    /// Captures `tree` as a snapshot (uploaded through the Content service)
    /// and returns the commit a worker reports for `grant`.
    pub async fn capture(&self, grant: &pw::MountGrant, tree: &Tree) -> pw::CacheCommit {
        let bytes = serde_json::to_vec(tree).unwrap();
        let snapshot = self.store.put_bytes(bytes.into()).await.unwrap();
        grant.commit(snapshot.to_string(), tree.values().map(|v| v.len() as u64).sum())
    }

    /// Like [`TestWorker::capture`], but as `rbk worker` does it: the
    /// grant's snapshot restored into a directory, `tree` written over
    /// it, the directory captured as a real snapshot (through the Content
    /// service).
    pub async fn capture_snapshot(&self, grant: &pw::MountGrant, tree: &Tree) -> pw::CacheCommit {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn rbk_store::Store> = Arc::new(self.store.clone());
        if !grant.snapshot.is_empty() {
            let base = rbk_snapshot::Snapshot::load(&*store, grant.snapshot.parse().unwrap()).await.unwrap();
            rbk_snapshot::restore(store.clone(), &base, dir.path(), &rbk_snapshot::RestoreOptions::default()).await.unwrap();
        }
        for (name, content) in tree {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let (snapshot, _) = rbk_snapshot::capture(store, dir.path(), &rbk_snapshot::CaptureOptions::new(grant.cache_id.clone())).await.unwrap();
        grant.commit(snapshot.digest.to_string(), tree.values().map(|v| v.len() as u64).sum())
    }

    /// The tree a grant starts from (empty for a new cache).
    pub async fn restore(&self, grant: &pw::MountGrant) -> Tree {
        if grant.snapshot.is_empty() {
            return Tree::new();
        }
        load_tree(&self.store, grant.snapshot.parse().unwrap()).await
    }
}
