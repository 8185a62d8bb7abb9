//! Three (or four) `rbk coordinator` processes on 127.0.0.1 forming a Raft
//! cluster, a worker that speaks the Worker stream and follows the leader,
//! and a client that submits planned graphs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbk_client::leader::{connect_leader, follow_leader};
use rbk_testsupport::free_port;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};
use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::{self as pw, coordinator_message::Msg as Down, worker_message::Msg as Up};
use tokio::sync::mpsc;
use tonic::Request;

pub const TENANT: &str = "raft-test-tenant-token-0001";
pub const WORKER: &str = "raft-test-worker-token-0002";
pub const SECRET: &str = "raft-test-cluster-secret-03";
const RBK: &str = env!("CARGO_BIN_EXE_rbk");
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Node {
    pub id: u64,
    /// 127.0.0.1, or the node's address in its own network namespace.
    pub host: String,
    pub api_port: u16,
    pub raft_port: u16,
    child: Option<Child>,
}

impl Node {
    fn local(id: u64) -> Self {
        Node { id, host: "127.0.0.1".into(), api_port: free_port(), raft_port: free_port(), child: None }
    }
    pub fn api(&self) -> String {
        format!("http://{}:{}", self.host, self.api_port)
    }
    pub fn raft(&self) -> String {
        format!("http://{}:{}", self.host, self.raft_port)
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    snapshot_entries: u64,
    net: Option<Network>,
    /// TOML appended to every node's config (see [`Cluster::configure`]).
    extra: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The namespaces go after the processes in them.
        self.net.take();
    }
}

/// Each node in a network namespace of its own, all on one bridge (in a
/// hub namespace) with this process, which reaches them from the host
/// end of one more veth pair: 10.B.C.1 for the host, 10.B.C.(10+id) for
/// node `id`, a /24 derived from the process id. Nothing is routed or
/// forwarded; the host's other interfaces are not touched.
struct Network {
    prefix: String,
    hub: String,
    host_if: String,
}

impl Network {
    fn new(n: u64) -> Self {
        let pid = std::process::id();
        let prefix = format!("10.{}.{}", 220 + pid % 30, (pid / 30) % 256);
        let (hub, host_if) = (format!("rbk-raft-{pid}-hub"), format!("rbkr{}h", pid % 1_000_000));
        let net = Network { prefix, hub, host_if };
        ip(&["netns", "add", &net.hub]);
        ip(&["netns", "exec", &net.hub, "ip", "link", "add", "br0", "type", "bridge"]);
        ip(&["netns", "exec", &net.hub, "ip", "link", "set", "br0", "up"]);
        let host_peer = format!("rbkr{}p", pid % 1_000_000);
        ip(&["link", "add", &net.host_if, "type", "veth", "peer", "name", &host_peer]);
        net.plug(&host_peer);
        ip(&["addr", "add", &format!("{}.1/24", net.prefix), "dev", &net.host_if]);
        ip(&["link", "set", &net.host_if, "up"]);
        for id in 1..=n {
            let ns = net.ns(id);
            let (inside, outside) = (format!("rbkr{}n{id}", pid % 1_000_000), format!("rbkr{}b{id}", pid % 1_000_000));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
            ip(&["link", "set", &inside, "netns", &ns]);
            net.plug(&outside);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", net.addr(id)), "dev", &inside]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    /// Moves `link` into the hub and onto its bridge.
    fn plug(&self, link: &str) {
        ip(&["link", "set", link, "netns", &self.hub]);
        ip(&["netns", "exec", &self.hub, "ip", "link", "set", link, "master", "br0"]);
        ip(&["netns", "exec", &self.hub, "ip", "link", "set", link, "up"]);
    }

    fn ns(&self, id: u64) -> String {
        format!("{}-n{id}", self.hub.trim_end_matches("-hub"))
    }

    fn addr(&self, id: u64) -> String {
        format!("{}.{}", self.prefix, 10 + id)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so both.
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(self.hub.trim_end_matches("hub")) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn iptables(ns: &str, args: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", ns, "iptables"]).args(args).output().expect("running iptables");
    assert!(out.status.success(), "iptables {} in {ns}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Cluster {
    /// `n` nodes, all voters, none started.
    pub fn new(n: u64, snapshot_entries: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokens.toml"), format!("[tenants]\n\"{TENANT}\" = \"team\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team\"]\n")).unwrap();
        std::fs::write(dir.path().join("cluster.secret"), SECRET).unwrap();
        let nodes: Vec<Node> = (1..=n).map(Node::local).collect();
        let c = Self { dir, nodes, snapshot_entries, net: None, extra: String::new() };
        for node in &c.nodes {
            c.write_config(node, &c.nodes, snapshot_entries, false);
        }
        c
    }

    /// `n` nodes, all voters, none started, each in a network namespace
    /// of its own (see [`Network`]) so that [`Cluster::isolate`] can cut
    /// one off from its peers while it runs and this process still
    /// reaches it.
    pub fn new_in_namespaces(n: u64, snapshot_entries: u64) -> Self {
        let mut c = Self::new(n, snapshot_entries);
        let net = Network::new(n);
        for node in &mut c.nodes {
            // Alone at its address: fixed ports cannot be taken.
            (node.host, node.api_port, node.raft_port) = (net.addr(node.id), 7070, 7071);
        }
        c.net = Some(net);
        for node in &c.nodes {
            c.write_config(node, &c.nodes, snapshot_entries, false);
        }
        c
    }

    /// Appends `toml` (whole sections, e.g. `[gc]`) to every node's config;
    /// call before starting the nodes.
    pub fn configure(&mut self, toml: &str) {
        self.extra = toml.to_owned();
        for node in &self.nodes {
            self.write_config(node, &self.nodes, self.snapshot_entries, false);
        }
    }

    /// Drops every packet between node `id` and the other nodes (in its
    /// namespace, both ways); this process still reaches it.
    pub fn isolate(&self, id: u64) {
        let net = self.net.as_ref().expect("a cluster in namespaces");
        for other in self.nodes.iter().filter(|n| n.id != id) {
            iptables(&net.ns(id), &["-A", "INPUT", "-s", &other.host, "-j", "DROP"]);
            iptables(&net.ns(id), &["-A", "OUTPUT", "-d", &other.host, "-j", "DROP"]);
        }
    }

    /// Undoes [`Cluster::isolate`].
    pub fn rejoin(&self, id: u64) {
        let net = self.net.as_ref().expect("a cluster in namespaces");
        iptables(&net.ns(id), &["-F", "INPUT"]);
        iptables(&net.ns(id), &["-F", "OUTPUT"]);
    }

    fn write_config(&self, node: &Node, peers: &[Node], snapshot_entries: u64, join: bool) {
        let mut text = format!(
            "listen = \"{}:{}\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n[scheduler]\nheartbeat_ms = 500\nworker_timeout_ms = 5000\nreadopt_grace_ms = 3000\n\
             [raft]\nnode_id = {}\ndata_dir = \"node{}\"\nlisten = \"{}:{}\"\nsecret_file = \"cluster.secret\"\nsnapshot_entries = {snapshot_entries}\n\
             tick_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 1\njoin = {join}\n[raft.peers]\n",
            node.host, node.api_port, node.id, node.id, node.host, node.raft_port
        );
        for p in peers {
            text += &format!("{} = {{ raft = \"{}:{}\", api = \"{}\" }}\n", p.id, p.host, p.raft_port, p.api());
        }
        text += &self.extra;
        std::fs::write(self.config_path(node.id), text).unwrap();
    }

    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub fn start(&mut self, id: u64) {
        let i = self.index(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("node{id}.log"))).unwrap();
        let mut command = match &self.net {
            // `ip netns exec` execs rbk: the child is the node itself.
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(id), RBK]);
                c
            }
            None => Command::new(RBK),
        };
        let child = command
            .args(["coordinator", "--insecure-plaintext", "--config"])
            .arg(self.config_path(id))
            .env("RBK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].child = Some(child);
    }

    /// Starts every node and waits until each listens on its ports. A
    /// port `free_port` picked can be taken before the node binds it (by
    /// another test's process, or as the local port of some outgoing
    /// connection); the node then exits, and a 5-node cluster short of one
    /// node survives one kill less. So a cluster that did not come up
    /// whole starts again on new ports.
    pub fn start_all(&mut self) {
        self.start_all_after(|_| ());
    }

    /// [`Cluster::start_all`], calling `prepare` before each attempt to
    /// start the nodes (a retry starts from new, empty data dirs).
    pub fn start_all_after(&mut self, prepare: impl Fn(&Cluster)) {
        for attempt in 1.. {
            prepare(self);
            for id in 1..=self.nodes.len() as u64 {
                self.start(id);
            }
            if self.all_listening(Duration::from_secs(15)) {
                return;
            }
            assert!(attempt < 3, "the cluster's nodes did not all start:\n{}", self.log_tails());
            eprintln!("a node did not start (port taken?); starting the cluster again on new ports:\n{}", self.log_tails());
            for n in &mut self.nodes {
                if let Some(mut c) = n.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                if self.net.is_none() {
                    (n.api_port, n.raft_port) = (free_port(), free_port());
                }
            }
            for n in &self.nodes {
                let _ = std::fs::remove_dir_all(self.data_dir(n.id));
                self.write_config(n, &self.nodes, self.snapshot_entries, false);
            }
        }
    }

    /// Whether every node runs and accepts connections on both its ports
    /// within `limit`.
    fn all_listening(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let mut up = 0;
            for n in &mut self.nodes {
                let Some(c) = n.child.as_mut() else { return false };
                if c.try_wait().ok().flatten().is_some() {
                    return false;
                }
                let open = |port: u16| std::net::TcpStream::connect((n.host.as_str(), port)).is_ok();
                if open(n.api_port) && open(n.raft_port) {
                    up += 1;
                }
            }
            if up == self.nodes.len() {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of every node's log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = read_log(self.dir.path(), n.id);
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("--- node {} ({}):\n{}\n", n.id, if n.child.is_some() { "started" } else { "stopped" }, lines[lines.len().saturating_sub(8)..].join("\n"));
        }
        out
    }

    /// A new node that joins an existing cluster (`join = true`).
    pub fn add_joining(&mut self, snapshot_entries: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        assert!(self.net.is_none(), "joining nodes are on 127.0.0.1");
        self.nodes.push(Node::local(id));
        // Addresses of the members to reach (the membership itself comes
        // from the leader).
        self.write_config(&self.nodes[self.nodes.len() - 1], &self.nodes, snapshot_entries, true);
        self.start(id);
        id
    }

    fn index(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[self.index(id)]
    }

    pub fn kill(&mut self, id: u64) {
        let i = self.index(id);
        let mut c = self.nodes[i].child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The URLs of the nodes that are running.
    pub fn apis(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(Node::api).collect()
    }

    /// Waits for a serving leader reachable from `via`; returns its URL.
    pub async fn leader_via(&self, via: &str) -> String {
        let (_, url) = connect_leader(&rbk_client::ClientTls::default(), via, TENANT, WAIT).await.unwrap_or_else(|e| panic!("{e}; last log lines:\n{}", self.log_tails()));
        url
    }

    /// Starts every node and waits until one leads; returns its API URL and
    /// its id.
    pub async fn start_and_elect(&mut self) -> (String, u64) {
        self.start_all();
        let url = self.leader_via(&self.node(1).api()).await;
        let id = self.id_of(&url);
        (url, id)
    }

        pub fn id_of(&self, url: &str) -> u64 {
        self.nodes.iter().find(|n| n.api() == url).unwrap().id
    }

    /// `rbk coordinator snapshot ARGS` (a save's target is `via`'s raft
    /// port): its stdout; panics naming its stderr if it fails.
    pub fn snapshot(&self, args: &[&std::ffi::OsStr], via: Option<u64>) -> String {
        let mut c = Command::new(RBK);
        c.args(["coordinator", "snapshot"]).args(args);
        if let Some(via) = via {
            c.args(["--coordinator", &self.node(via).raft(), "--token", SECRET]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "snapshot {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rbk coordinator members ...` against `via`'s raft port, with the
    /// cluster secret `secret` (`None`: without one), as it ran.
    pub fn members_with(&self, args: &[&str], via: u64, secret: Option<&str>) -> std::process::Output {
        let mut command = Command::new(RBK);
        command.args(["coordinator", "members"]).args(args).args(["--coordinator", &self.node(via).raft()]);
        if let Some(s) = secret {
            command.args(["--token", s]);
        }
        command.output().unwrap()
    }

    /// The token file every node reads.
    pub fn tokens_path(&self) -> PathBuf {
        self.dir.path().join("tokens.toml")
    }

    /// Sends `signal` (a `kill -s` name: HUP, STOP, ...) to node `id`.
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.node(id).child.as_ref().expect("a running node").id();
        let status = Command::new("kill").args(["-s", signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    /// The path of node `id`'s config file.
    pub fn config_of(&self, id: u64) -> PathBuf {
        self.config_path(id)
    }

    /// `rbk coordinator members ...` against `via`'s raft port.
    pub fn members(&self, args: &[&str], via: u64) -> String {
        let out = Command::new(RBK)
            .args(["coordinator", "members"])
            .args(args)
            .args(["--coordinator", &self.node(via).raft(), "--token", SECRET])
            .output()
            .unwrap();
        assert!(out.status.success(), "members {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn step(id: &str, key: &str, deps: &[&str], cache: Option<&str>) -> pb::StepNode {
    pb::StepNode {
        id: id.into(),
        key: key.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        cache_mounts: cache.map(|c| pb::CacheMount { id: c.into(), sharing: "shared".into() }).into_iter().collect(),
        // The coordinator keys a step by what it runs: steps the tests give
        // one `key` run one payload, and steps with other keys other ones.
        payload: format!("{{\"run\":\"{id}\",\"key\":\"{key}\"}}").into_bytes(),
        name: format!("RUN {id}"),
        ..Default::default()
    }
}

/// A chain of `n` steps s0 -> s1 -> ..., each with a cache mount `c<i>`.
pub fn chain(n: usize, salt: &str) -> Vec<pb::StepNode> {
    (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("s{}", i - 1)] };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            step(&format!("s{i}"), &format!("{salt}-key-{i}"), &deps, Some(&format!("c{i}")))
        })
        .collect()
}

/// Submits through `via` (following redirects); returns the build id.
pub async fn submit(via: &str, steps: Vec<pb::StepNode>) -> String {
    let (answer, _) = follow_leader(&rbk_client::ClientTls::default(), via, WAIT, |channel| {
        let steps = steps.clone();
        async move {
            let req = pb::SubmitRequest { options: Some(Default::default()), context_digest: String::new(), steps, secrets: Default::default() };
            let mut events = BuildClient::new(channel).submit(bearer(req, TENANT)).await?.into_inner();
            let first = events.message().await?.ok_or_else(|| tonic::Status::internal("no events"))?;
            match first.event {
                Some(Event::Accepted(a)) => Ok(a.build_id),
                other => Err(tonic::Status::internal(format!("first event {other:?}"))),
            }
        }
    })
    .await
    .unwrap();
    answer.unwrap()
}

/// One Submit to `url` itself (no redirect followed), bounded in time:
/// the build id if the node accepted the build, else what it said.
pub async fn submit_once(url: &str, steps: Vec<pb::StepNode>) -> Result<String, String> {
    let attempt = async {
        let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap().connect().await.map_err(|e| e.to_string())?;
        let req = pb::SubmitRequest { options: Some(Default::default()), context_digest: String::new(), steps, secrets: Default::default() };
        let mut events = BuildClient::new(channel).submit(bearer(req, TENANT)).await.map_err(|s| s.to_string())?.into_inner();
        match events.message().await.map_err(|s| s.to_string())? {
            Some(pb::BuildEvent { event: Some(Event::Accepted(a)), .. }) => Ok(a.build_id),
            other => Err(format!("first event {other:?}")),
        }
    };
    tokio::time::timeout(WAIT, attempt).await.unwrap_or_else(|_| Err(format!("no answer within {WAIT:?}")))
}

/// Every build the leader reached through `via` lists.
pub async fn list_builds(via: &str) -> Vec<pb::BuildStatus> {
    let (answer, _) = follow_leader(&rbk_client::ClientTls::default(), via, WAIT, |channel| async move {
        Ok(BuildClient::new(channel).list(bearer(pb::ListRequest { limit: 1000 }, TENANT)).await?.into_inner().builds)
    })
    .await
    .unwrap();
    answer.unwrap()
}

/// The build's status as the leader reached through any of `urls` says.
pub async fn status(urls: &[String], build_id: &str) -> pb::BuildStatus {
    let start = Instant::now();
    loop {
        for url in urls {
            let id = build_id.to_owned();
            let r = follow_leader(&rbk_client::ClientTls::default(), url, Duration::from_secs(3), |channel| {
                let id = id.clone();
                async move { Ok(BuildClient::new(channel).status(bearer(pb::StatusRequest { build_id: id }, TENANT)).await?.into_inner()) }
            })
            .await;
            if let Ok((Ok(s), _)) = r {
                return s;
            }
        }
        assert!(start.elapsed() < WAIT, "no leader answered Status for {build_id}");
    }
}

pub async fn wait_finished(urls: &[String], build_id: &str) -> pb::BuildStatus {
    let start = Instant::now();
    loop {
        let s = status(urls, build_id).await;
        if s.state != "running" {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "build {build_id} still running: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn list_caches(via: &str) -> Vec<pb::CacheHead> {
    let (answer, _) = follow_leader(&rbk_client::ClientTls::default(), via, WAIT, |channel| async move {
        Ok(BuildClient::new(channel).list_caches(bearer(pb::ListCachesRequest {}, TENANT)).await?.into_inner().heads)
    })
    .await
    .unwrap();
    answer.unwrap()
}

/// A worker that connects to whichever node leads (trying `urls` in turn),
/// runs each step for `step_ms`, commits a snapshot for each cache mount,
/// and reconnects when its stream ends. `ran` lists the step ids it ran.
pub struct TestWorker {
    pub ran: Arc<Mutex<Vec<String>>>,
    /// While set, steps do not finish (they stay running on the
    /// coordinator) — a build held in flight.
    pub hold: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestWorker {
    pub fn start(id: &str, urls: Vec<String>, step_ms: u64) -> Self {
        Self::start_with(id, urls, step_ms, Arc::new(|cache_id: &str, key: &str| rbk_store::Digest::of(format!("{cache_id} of {key}").as_bytes()).to_string()))
    }

    /// [`TestWorker::start`] committing `snapshot_of(cache_id, step key)`
    /// for each cache mount (by default a digest of the two that names no
    /// stored snapshot).
    pub fn start_with(id: &str, urls: Vec<String>, step_ms: u64, snapshot_of: SnapshotOf) -> Self {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, held) = (ran.clone(), hold.clone());
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            let mut turn = 0;
            loop {
                let url = &urls[turn % urls.len()];
                turn += 1;
                if let Err(e) = session(&id, url, step_ms, &log, &held, &snapshot_of).await {
                    eprintln!("test worker {id}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { ran, hold, task }
    }
}

/// The snapshot a [`TestWorker`] commits for `(cache_id, step key)`.
pub type SnapshotOf = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

async fn session(
    id: &str,
    url: &str,
    step_ms: u64,
    ran: &Arc<Mutex<Vec<String>>>,
    hold: &Arc<std::sync::atomic::AtomicBool>,
    snapshot_of: &SnapshotOf,
) -> Result<(), String> {
    let (channel, _) = connect_leader(&rbk_client::ClientTls::default(), url, WORKER, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let register = pw::Register {
        worker_id: id.into(),
        platform: "linux/amd64".into(),
        resources: Some(pw::Resources { cpus: 2, memory_bytes: 1 << 30, max_parallel: 4 }),
        ..Default::default()
    };
    tx.send(pw::WorkerMessage { msg: Some(Up::Register(register)) }).unwrap();
    let mut down = WorkerClient::new(channel)
        .session(bearer(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }), WORKER))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let beat = tx.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if beat.send(pw::WorkerMessage { msg: Some(Up::Heartbeat(pw::Heartbeat::default())) }).is_err() {
                return;
            }
        }
    });
    let result = loop {
        let m = match down.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(s) => break Err(s.to_string()),
        };
        if let Some(Down::Assign(a)) = m.msg {
            let tx = tx.clone();
            let ran = ran.clone();
            let hold = hold.clone();
            let snapshot_of = snapshot_of.clone();
            tokio::spawn(async move {
                // One log line per step (what a watcher on any node sees).
                let line = format!("running {}", a.step_id);
                let _ = tx.send(pw::WorkerMessage {
                    msg: Some(Up::Log(pw::StepLog { assignment_id: a.assignment_id.clone(), stream: "stdout".into(), line })),
                });
                tokio::time::sleep(Duration::from_millis(step_ms)).await;
                while hold.load(std::sync::atomic::Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let commits = a
                    .mounts
                    .iter()
                    .map(|g| g.commit(snapshot_of(&g.cache_id, &a.key), 10))
                    .collect();
                ran.lock().unwrap().push(a.step_id.clone());
                let _ = tx.send(pw::WorkerMessage {
                    msg: Some(Up::Result(pw::StepResult {
                        assignment_id: a.assignment_id,
                        ok: true,
                        config: b"{}".to_vec(),
                        commits,
                        duration_ms: step_ms,
                        ..Default::default()
                    })),
                });
            });
        }
    };
    heartbeats.abort();
    result
}

pub fn read_log(dir: &Path, id: u64) -> String {
    std::fs::read_to_string(dir.join(format!("node{id}.log"))).unwrap_or_default()
}
