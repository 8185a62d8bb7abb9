//! A farm made of real processes on 127.0.0.1: `rbk coordinator` with its
//! store on the S3 server (RBK_TEST_S3_*, a fresh bucket per test), and
//! `rbk worker` processes with separate state dirs, which tests stop
//! (SIGTERM), kill (SIGKILL) and restart. Builds are submitted over gRPC as
//! planned graphs of hand-built `FarmStep`s (labels force placement), with
//! the busybox test image's layer put into the store first.
//!
//! Every wait has a deadline and says what it was waiting for.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbk_worker::payload::LayerDesc;

#[path = "../common/busybox_steps.rs"]
mod busybox_steps;
use busybox_steps::{busybox_base, busybox_run};
use rbk_client::RemoteStore;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::build_event::Event;
use rbk_proto::build::{self as pb};
use rbk_store::{Digest, S3Config, S3Store, Secret, Store, StoreExt};
use tonic::Request;

pub const TENANT: &str = "farm-test-tenant-token-0001";
/// A second tenant, for isolation tests.
pub const TENANT_B: &str = "farm-test-tenant-b-token-0003";
pub const WORKER_TOKEN: &str = "farm-test-worker-token-0002";
/// A pool that serves only tenant B (`TENANT_B`).
pub const ROGUE_TOKEN: &str = "farm-test-rogue-pool-token-0004";
/// Worker ids with their own token in the farm's token file (id and
/// `worker=ID` label fixed by it); other ids share [`WORKER_TOKEN`] and
/// carry no labels.
pub const OWN_TOKEN_IDS: [&str; 3] = ["a", "b", "c"];
/// The operators' token, in `admin-token` of the farm's dir (for an
/// `[admin] token_file = "admin-token"` given to [`Farm::start_configured`]).
pub const ADMIN: &str = "farm-test-admin-token-0006";

/// The token `rbk worker --id ID` presents: its own, or the pool's.
pub fn worker_token(id: &str) -> String {
    if OWN_TOKEN_IDS.contains(&id) { format!("farm-test-worker-{id}-token-0005") } else { WORKER_TOKEN.to_owned() }
}
pub const RBK: &str = env!("CARGO_BIN_EXE_rbk");
/// Longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(90);

/// Scheduler timings for a test farm.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub worker_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { heartbeat_ms: 500, worker_timeout_ms: 5000 }
    }
}

pub struct Farm {
    pub url: String,
    pub dir: tempfile::TempDir,
    coordinator: Child,
    pub base: LayerDesc,
    /// The coordinator's bucket (prefix `farm`).
    pub bucket: String,
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        // A worker a test SIGKILLed mid-step leaves the step's overlay
        // mounted (the next start of that worker would detach it); detach
        // whatever is left under this farm so the host does not collect them.
        rbk_testsupport::stop_pasta_under(self.dir.path());
        let dir = self.dir.path().to_string_lossy().into_owned();
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut left: Vec<&str> = table.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&dir)).collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in left {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A fresh bucket on the test S3 server.
async fn bucket() -> S3Config {
    let s3 = rbk_testsupport::s3();
    let mut config = S3Config::new(format!("rbk-farm-{:016x}", rand::random::<u64>()));
    config.endpoint = Some(s3.endpoint.clone());
    config.region = Some(s3.region.clone());
    config.access_key_id = Some(Secret(s3.access_key.clone()));
    config.secret_access_key = Some(Secret(s3.secret_key.clone()));
    let store = S3Store::new(config.clone()).await.expect("S3 store");
    store.client().create_bucket().bucket(&config.bucket).send().await.expect("creating the test bucket");
    config
}

/// Reads lines of `child`'s stdout until one starts with `prefix`.
fn wait_for_line(child: &mut Child, prefix: &str, what: &str) -> String {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{what} did not print {prefix:?} within 30 s"))
}

/// `rbk coordinator` on `dir/coordinator.toml`; returns it and its address.
fn spawn_coordinator(dir: &Path) -> (Child, String) {
    let s3 = rbk_testsupport::s3();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("coordinator.log")).unwrap();
    let mut coordinator = s3
        .coordinator_command(Path::new(RBK), &dir.join("coordinator.toml"), log)
        // Some farms listen on 0.0.0.0 (workers in network namespaces).
        .arg("--insecure-plaintext")
        .spawn()
        .expect("starting rbk coordinator");
    let addr = wait_for_line(&mut coordinator, "rbk coordinator listening on", "rbk coordinator");
    // Listening on every address (for workers in network namespaces): the
    // test itself dials loopback.
    (coordinator, addr.replace("0.0.0.0:", "127.0.0.1:"))
}

impl Farm {
    /// Kills the coordinator (SIGKILL) and starts it again on the same
    /// address (its state is in memory: builds, heads and who uploaded
    /// which blob start over, the store keeps its blobs). Then uploads the
    /// base layer again, as a client does once `FindMissing` calls it
    /// missing: the tenant has it only once it proves it again.
    pub fn restart_coordinator(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        let (c, addr) = spawn_coordinator(self.dir.path());
        assert_eq!(format!("http://{addr}"), self.url);
        self.coordinator = c;
        let (url, dir) = (self.url.clone(), self.dir.path().to_path_buf());
        let base = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(put_busybox(&url, &dir)));
        assert_eq!(base.blake3, self.base.blake3, "the base layer came out different");
    }

    /// A `kB` field of the coordinator process's `/proc/PID/status`
    /// (`VmRSS` now, `VmHWM` its peak).
    pub fn coordinator_memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.coordinator.id())).expect("coordinator status");
        let line = status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in status"));
        line.trim().trim_end_matches("kB").trim().parse().expect("kB figure")
    }

    pub async fn cancel(&self, build_id: &str) {
        self.client().await.cancel(bearer(pb::CancelRequest { build_id: build_id.into() })).await.expect("cancel");
    }

    pub async fn start() -> Farm {
        Self::start_with(Timing::default()).await
    }

    pub async fn start_with(t: Timing) -> Farm {
        Self::start_listening(t, "127.0.0.1", "").await
    }

    /// A farm whose coordinator config ends with `extra` (whole sections,
    /// e.g. `[gc]`; relative paths are in [`Farm::dir`]).
    pub async fn start_configured(extra: &str) -> Farm {
        Self::start_listening(Timing::default(), "127.0.0.1", extra).await
    }

    /// A farm whose coordinator also answers on the host ends of
    /// [`NetNs`] links (it listens on 0.0.0.0).
    pub async fn start_for_netns() -> Farm {
        Self::start_listening(Timing::default(), "0.0.0.0", "").await
    }

    /// [`Farm::start_for_netns`] with `extra` config sections (see
    /// [`Farm::start_configured`]).
    pub async fn start_for_netns_configured(extra: &str) -> Farm {
        Self::start_listening(Timing::default(), "0.0.0.0", extra).await
    }

    async fn start_listening(t: Timing, host: &str, extra: &str) -> Farm {
        let s3 = rbk_testsupport::s3();
        let b = bucket().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-token"), ADMIN).unwrap();
        std::fs::write(
            dir.path().join("tokens.toml"),
            format!(
                "[tenants]\n\"{TENANT}\" = \"team\"\n\"{TENANT_B}\" = \"team-b\"\n\
                 [workers]\n\"{WORKER_TOKEN}\" = \"pool\"\n{}\
                 \"{ROGUE_TOKEN}\" = \"rogue\"\n\
                 [pools.pool]\ntenants = [\"team\", \"team-b\"]\n\
                 [pools.rogue]\ntenants = [\"team-b\"]\n",
                OWN_TOKEN_IDS
                    .iter()
                    .map(|id| format!("\"{}\" = {{ pool = \"pool\", id = \"{id}\", labels = {{ worker = \"{id}\" }} }}\n", worker_token(id)))
                    .collect::<String>()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("coordinator.toml"),
            format!(
                "listen = \"{}:{}\"\ntoken_file = \"tokens.toml\"\n\
                 [store]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nprefix = \"farm\"\n\
                 [scheduler]\nheartbeat_ms = {}\nworker_timeout_ms = {}\n{extra}",
                host,
                rbk_testsupport::free_port(),
                b.bucket,
                s3.endpoint,
                s3.region,
                t.heartbeat_ms,
                t.worker_timeout_ms
            ),
        )
        .unwrap();
        let (coordinator, addr) = spawn_coordinator(dir.path());
        let url = format!("http://{addr}");
        let base = put_busybox(&url, dir.path()).await;
        Farm { url, dir, coordinator, base, bucket: b.bucket }
    }

    pub async fn store(&self) -> RemoteStore {
        RemoteStore::connect(&rbk_client::ClientTls::default(), &self.url, TENANT).await.expect("content service")
    }

    /// Starts `rbk worker --id ID --labels worker=ID` with its own state
    /// dir, plus `extra` arguments; returns once it has registered.
    /// A worker that reaches the coordinator's bucket directly
    /// (`--store-config`, credentials from the environment) instead of
    /// through the Content service.
    pub fn worker_on_s3(&self, id: &str) -> Worker {
        let s3 = rbk_testsupport::s3();
        let file = self.dir.path().join(format!("store-{id}.toml"));
        std::fs::write(
            &file,
            format!(
                "[store]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nprefix = \"farm\"\n",
                self.bucket, s3.endpoint, s3.region
            ),
        )
        .unwrap();
        let file = file.display().to_string();
        self.worker_env(id, &["--store-config", &file], &[("RBK_S3_ACCESS_KEY_ID", &s3.access_key), ("RBK_S3_SECRET_ACCESS_KEY", &s3.secret_key)])
    }

    pub fn worker(&self, id: &str, extra: &[&str]) -> Worker {
        self.worker_env(id, extra, &[])
    }

    /// A worker inside network namespace `ns`, reaching the coordinator
    /// only over the namespace's link (the farm must listen on 0.0.0.0:
    /// [`Farm::start_for_netns`]).
    pub fn worker_in(&self, ns: &NetNs, id: &str) -> Worker {
        let port = self.url.rsplit(':').next().expect("url has a port");
        let url = format!("http://{}:{port}", ns.host_ip);
        self.spawn_worker(id, &url, Some(ns), &[], &[])
    }

    fn worker_env(&self, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        self.spawn_worker(id, &self.url, None, extra, env)
    }

    fn spawn_worker(&self, id: &str, url: &str, ns: Option<&NetNs>, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut w = self.spawn_worker_as(id, &worker_token(id), &format!("worker={id}"), url, ns, extra, env);
        w.wait_registered();
        w
    }

    /// `rbk worker --id ID --labels LABELS` presenting `token`, without
    /// waiting for it to register (it may be refused).
    pub fn worker_presenting(&self, id: &str, token: &str, labels: &str) -> Worker {
        self.spawn_worker_as(id, token, labels, &self.url, None, &[], &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_worker_as(
        &self,
        id: &str,
        token: &str,
        labels: &str,
        url: &str,
        ns: Option<&NetNs>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let state = self.dir.path().join("workers").join(id);
        std::fs::create_dir_all(&state).unwrap();
        let log_path = self.dir.path().join(format!("worker-{id}.log"));
        let before = std::fs::read_to_string(&log_path).map_or(0, |s| s.matches("registered with").count());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut cmd = match ns {
            // Only the network namespace: runc needs the host's mounts
            // (`ip netns exec` would remount /sys).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{}", ns.name)).arg(RBK);
                c
            }
            None => Command::new(RBK),
        };
        let child = cmd
            .args(["worker", "--coordinator", url, "--token", token, "--id", id])
            .args(["--labels", labels])
            .arg("--state-dir")
            .arg(&state)
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .args(["--max-backoff", "1s"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RBK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting rbk worker");
        Worker { id: id.to_owned(), child, log: log_path, registrations_before: before }
    }

    pub async fn client(&self) -> BuildClient<tonic::transport::Channel> {
        BuildClient::connect(self.url.clone()).await.expect("build service")
    }

    /// Submits a planned graph and collects its events until it finishes.
    pub async fn build(&self, steps: Vec<pb::StepNode>) -> Vec<Event> {
        self.build_with_secrets(steps, BTreeMap::new()).await
    }

    pub async fn build_with_secrets(&self, steps: Vec<pb::StepNode>, secrets: BTreeMap<String, Vec<u8>>) -> Vec<Event> {
        let mut stream = self.submit(steps, secrets).await;
        let mut events = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = tokio::time::timeout(left, stream.message())
                .await
                .unwrap_or_else(|_| panic!("the build did not finish within {WAIT:?}; events so far: {events:#?}"))
                .expect("build event stream")
                .expect("the event stream ended before BuildFinished");
            let done = matches!(e.event, Some(Event::BuildFinished(_)));
            events.extend(e.event);
            if done {
                return events;
            }
        }
    }

    pub async fn submit(&self, steps: Vec<pb::StepNode>, secrets: BTreeMap<String, Vec<u8>>) -> tonic::Streaming<pb::BuildEvent> {
        let req = pb::SubmitRequest {
            options: Some(Default::default()),
            context_digest: String::new(),
            steps,
            secrets: secrets.into_iter().collect(),
        };
        self.client().await.submit(bearer(req)).await.expect("submit").into_inner()
    }

    /// Waits (bounded) until cache `id` has a head, then returns its files.
    pub async fn wait_cache_files(&self, id: &str) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let heads = self.client().await.list_caches(bearer(pb::ListCachesRequest {})).await.expect("list caches").into_inner().heads;
            if heads.iter().any(|h| h.id == id) {
                return self.cache_files(id).await;
            }
            assert!(Instant::now() < deadline, "cache {id} got no head within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The files of cache `id`'s head (slot 0), restored from the store.
    pub async fn cache_files(&self, id: &str) -> BTreeMap<String, String> {
        let heads = self.client().await.list_caches(bearer(pb::ListCachesRequest {})).await.expect("list caches").into_inner().heads;
        let head = heads.iter().find(|h| h.id == id && h.slot == 0).unwrap_or_else(|| panic!("no head for cache {id}: {heads:?}"));
        let store: Arc<dyn Store> = Arc::new(self.store().await);
        let d: Digest = head.snapshot.parse().unwrap();
        let snap = rbk_snapshot::Snapshot::load(&*store, d).await.expect("loading the head snapshot");
        let out = tempfile::tempdir().unwrap();
        let opts = rbk_snapshot::RestoreOptions { owner: false, ..Default::default() };
        rbk_snapshot::restore(store, &snap, out.path(), &opts).await.expect("restoring the head");
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(out.path()).unwrap().flatten() {
            if e.path().is_file() {
                files.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap());
            }
        }
        files
    }

    /// A RUN step on the busybox base: `script` under `/bin/sh -c`, with
    /// `cache` mounted at /cache, placed on worker `on` when given.
    pub fn run(&self, id: &str, key: &str, script: &str, cache: Option<(&str, &str)>, on: Option<&str>) -> pb::StepNode {
        let mut node = busybox_run(&self.base, id, key, script, cache);
        node.platform = "linux/amd64".into();
        node.labels = on.map(|w| [("worker".to_string(), w.to_string())].into_iter().collect()).unwrap_or_default();
        node
    }
}

pub fn bearer<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TENANT}").parse().unwrap());
    r
}

/// Builds the busybox test image and puts its layer into the farm's store
/// (as `rbk submit` does with base images).
async fn put_busybox(url: &str, dir: &Path) -> LayerDesc {
    let store = RemoteStore::connect(&rbk_client::ClientTls::default(), url, TENANT).await.expect("content service");
    busybox_base(dir, |blob| async move { store.put_bytes(blob.into()).await.expect("uploading the base layer") }).await
}

pub struct Worker {
    pub id: String,
    child: Child,
    log: PathBuf,
    registrations_before: usize,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn count_in_log(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |s| s.matches(needle).count())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker has (re-)registered with the coordinator.
    pub fn wait_registered(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count_in_log("registered with") <= self.registrations_before {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("worker {} exited ({status}) before registering:\n{}", self.id, self.log_text());
            }
            assert!(Instant::now() < deadline, "worker {} did not register within 30 s:\n{}", self.id, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.registrations_before += 1;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("running kill").success();
        assert!(ok, "kill {sig} {} failed", self.child.id());
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    pub fn sigkill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match exited_within(&mut self.child, limit) {
            Some(s) => s,
            None => panic!("worker {} still running after {limit:?}:\n{}", self.id, self.log_text()),
        }
    }
}

/// Waits for `child` to exit, at most `limit`; `None` when it did not, and
/// then it is killed (and reaped).
pub fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for a child process") {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion, killing it (and failing the test) after
/// `timeout`.
pub fn run_within(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).unwrap();
        b
    });
    let Some(status) = exited_within(&mut child, timeout) else {
        panic!("{cmd:?} did not finish within {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&e.join().unwrap()));
    };
    Output { status, stdout: o.join().unwrap(), stderr: e.join().unwrap() }
}

/// The build's final state ("succeeded", "failed", ...).
pub fn final_state(events: &[Event]) -> String {
    match events.last() {
        Some(Event::BuildFinished(f)) => f.state.clone(),
        other => panic!("no BuildFinished at the end: {other:?}"),
    }
}

/// Which worker finished each step, by step id.
pub fn finished_on(events: &[Event]) -> BTreeMap<String, String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Finished(f) => Some((f.step_id.clone(), f.worker_id.clone())),
            _ => None,
        })
        .collect()
}

/// Output lines of step `id` (not the coordinator's lines about its cache
/// commits).
pub fn logs_of(events: &[Event], id: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) if l.step_id == id && l.stream != "commit" => Some(l.line.clone()),
            _ => None,
        })
        .collect()
}

/// A network namespace joined to the host by a veth pair (host end
/// `host_ip`, namespace end `.2` of the same /30): a worker in it reaches
/// the coordinator over that link and nothing else — not the S3 server,
/// not the registry, not the other workers. Removed on drop.
pub struct NetNs {
    pub name: String,
    pub host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl NetNs {
    /// Namespace number `n` (0..=63) of this test process.
    pub fn new(n: u8) -> NetNs {
        assert!(n < 64);
        let pid = std::process::id();
        let name = format!("rbk-{pid}-{n}");
        // A /30 per namespace, from the process id, so concurrent test
        // processes do not collide.
        let (b, c) = (16 + (pid % 200) as u8, n * 4);
        let (host_ip, ns_ip) = (format!("10.{b}.{c}.1"), format!("10.{b}.{c}.2"));
        let (host_if, ns_if) = (format!("rh{}x{n}", pid % 100_000), format!("rn{}x{n}", pid % 100_000));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name: name.clone(), host_ip: host_ip.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so both.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Reads the build's events into `events` until one matches `stop`
/// (included), each within the harness's deadline.
pub async fn read_until(
    stream: &mut tonic::Streaming<rbk_proto::build::BuildEvent>,
    events: &mut Vec<Event>,
    what: &str,
    stop: impl Fn(&Event) -> bool,
) {
    loop {
        let e = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}; events so far: {events:#?}"))
            .unwrap()
            .unwrap();
        let done = e.event.as_ref().is_some_and(&stop);
        events.extend(e.event);
        if done {
            return;
        }
    }
}
