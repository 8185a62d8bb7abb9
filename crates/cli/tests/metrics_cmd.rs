//! `GET /metrics` of a real `rbk coordinator` process while builds run
//! through it (a worker speaking the Worker stream over gRPC).

use std::time::Duration;

use rbk_metrics::exposition::sample;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};
use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::{self as pw, coordinator_message::Msg as Down, worker_message::Msg as Up};
use rbk_store::StoreExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tonic::Request;

#[path = "common/coordinator.rs"]
mod coordinator;
use coordinator::{RBK, scratch};
use std::process::Command;

const TENANT: &str = "metrics-test-tenant-token-01";
const WORKER: &str = "metrics-test-worker-token-02";
const WAIT: Duration = Duration::from_secs(20);

struct Coordinator {
    url: String,
    /// The metrics address it printed (empty without `metrics_listen`).
    metrics: String,
    _process: coordinator::Coordinator,
}

fn start(name: &str, metrics_listen: Option<&str>) -> Coordinator {
    start_logging(name, metrics_listen, None)
}

/// Like [`start`]; with `log`, the coordinator logs at info into that file.
fn start_logging(name: &str, metrics_listen: Option<&str>, log: Option<&std::path::Path>) -> Coordinator {
    let dir = scratch(&format!("metrics-{name}"));
    let metrics_key = metrics_listen.map(|a| format!("metrics_listen = \"{a}\"\n")).unwrap_or_default();
    let mut process = coordinator::Coordinator::start(
        &dir,
        &format!("[tenants]\n\"{TENANT}\" = \"team\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team\"]\n"),
        &format!("listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\n{metrics_key}[store]\ndir = \"store\"\n"),
        |cmd| {
            if let Some(log) = log {
                cmd.env("RBK_LOG", "info").stderr(std::fs::File::create(log).unwrap());
            }
        },
    );
    let metrics = if metrics_listen.is_some() { process.printed("rbk metrics listening on ") } else { String::new() };
    Coordinator { url: process.url.clone(), metrics, _process: process }
}

/// `GET path` over plain HTTP/1.1: (status code, body).
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

async fn scrape(c: &Coordinator) -> String {
    let (code, body) = http_get(&c.metrics, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}"))
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

struct Worker {
    tx: mpsc::UnboundedSender<pw::WorkerMessage>,
    down: tonic::Streaming<pw::CoordinatorMessage>,
    store: rbk_client::RemoteStore,
}

impl Worker {
    async fn connect(url: &str) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let register = pw::Register {
            worker_id: "w1".into(),
            platform: "linux/amd64".into(),
            resources: Some(pw::Resources { max_parallel: 2, ..Default::default() }),
            ..Default::default()
        };
        tx.send(pw::WorkerMessage { msg: Some(Up::Register(register)) }).unwrap();
        let mut client = WorkerClient::connect(url.to_owned()).await.unwrap();
        let mut down =
            client.session(bearer(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }), WORKER)).await.unwrap().into_inner();
        let first = timeout(WAIT, down.message()).await.unwrap().unwrap().unwrap();
        assert!(matches!(first.msg, Some(Down::Registered(_))), "{first:?}");
        let store = rbk_client::RemoteStore::connect(&rbk_client::ClientTls::default(), url, WORKER).await.unwrap();
        Worker { tx, down, store }
    }

    async fn assignment(&mut self) -> pw::Assign {
        match timeout(WAIT, self.down.message()).await.unwrap().unwrap().unwrap().msg {
            Some(Down::Assign(a)) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    /// Succeeds with one layer (stored through the Content service) and a
    /// commit of every granted cache mount.
    async fn succeed(&self, a: &pw::Assign, bytes_restored: u64) {
        let layer = self.store.put_bytes(format!("layer of {}", a.key).into_bytes().into()).await.unwrap();
        let mut commits = Vec::new();
        for g in &a.mounts {
            // A name only: the coordinator reads a committed snapshot's
            // manifest when it is stored, and this stand-in worker has none.
            let snapshot = rbk_store::Digest::of(format!("cache {} after {}", g.cache_id, a.key).as_bytes());
            commits.push(g.commit(snapshot.to_string(), 100));
        }
        let result = pw::StepResult {
            assignment_id: a.assignment_id.clone(),
            ok: true,
            layers: vec![layer.to_string()],
            config: b"{}".to_vec(),
            commits,
            bytes_restored,
            duration_ms: 5,
            ..Default::default()
        };
        self.tx.send(pw::WorkerMessage { msg: Some(Up::Result(result)) }).unwrap();
    }
}

fn step(id: &str, key: &str, deps: &[&str], cache: Option<&str>) -> pb::StepNode {
    pb::StepNode {
        id: id.into(),
        key: key.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        cache_mounts: cache.iter().map(|c| pb::CacheMount { id: c.to_string(), sharing: "shared".into() }).collect(),
        payload: b"{}".to_vec(),
        name: format!("RUN {id}"),
        ..Default::default()
    }
}

async fn submit(url: &str, steps: Vec<pb::StepNode>) -> tonic::Streaming<pb::BuildEvent> {
    let mut client = BuildClient::connect(url.to_owned()).await.unwrap();
    let req = pb::SubmitRequest { options: Some(Default::default()), steps, ..Default::default() };
    client.submit(bearer(req, TENANT)).await.unwrap().into_inner()
}

async fn finish(events: &mut tonic::Streaming<pb::BuildEvent>) -> String {
    loop {
        let e = timeout(WAIT, events.message()).await.expect("build did not finish").unwrap().expect("stream ended");
        if let Some(Event::BuildFinished(f)) = e.event {
            return f.state;
        }
    }
}

/// Counters are recorded by a task beside the event stream: poll briefly.
async fn eventually(c: &Coordinator, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    for _ in 0..50 {
        let text = scrape(c).await;
        if sample(&text, name, labels) == Some(want) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape(c).await;
    panic!("{name}{labels:?} never became {want}:\n{text}");
}

#[tokio::test]
async fn metrics_follow_builds_steps_workers_and_caches_through_a_coordinator() {
    let c = start("builds", Some("127.0.0.1:0"));
    let before = scrape(&c).await;
    assert_eq!(value(&before, "rbk_workers_connected", &[]), 0.0);
    assert_eq!(value(&before, "rbk_builds_total", &[("result", "succeeded")]), 0.0);

    let mut w = Worker::connect(&c.url).await;
    eventually(&c, "rbk_workers_connected", &[], 1.0).await;

    // First build: two steps run; the second uses an empty cache mount.
    let graph = vec![step("base", "k-base", &[], None), step("pip", "k-pip", &["base"], Some("pip"))];
    let mut events = submit(&c.url, graph.clone()).await;
    let base = w.assignment().await;
    let during = scrape(&c).await;
    assert_eq!(value(&during, "rbk_builds_running", &[]), 1.0, "{during}");
    assert_eq!(value(&during, "rbk_steps_running", &[]), 1.0);
    assert_eq!(value(&during, "rbk_queue_depth", &[]), 0.0);
    w.succeed(&base, 0).await;
    let pip = w.assignment().await;
    assert!(pip.mounts[0].snapshot.is_empty(), "a new cache starts empty");
    w.succeed(&pip, 0).await;
    assert_eq!(finish(&mut events).await, "succeeded");

    let after = eventually(&c, "rbk_builds_total", &[("result", "succeeded")], 1.0).await;
    assert_eq!(value(&after, "rbk_steps_total", &[("result", "done")]), 2.0);
    assert_eq!(value(&after, "rbk_cache_misses_total", &[("cache", "action")]), 2.0);
    assert_eq!(value(&after, "rbk_cache_misses_total", &[("cache", "cache_mount")]), 1.0);
    assert_eq!(value(&after, "rbk_cache_mount_commits_total", &[]), 1.0);
    assert_eq!(value(&after, "rbk_step_duration_seconds_count", &[]), 2.0);
    assert_eq!(value(&after, "rbk_builds_running", &[]), 0.0);
    assert_eq!(value(&after, "rbk_workers_connected", &[]), 1.0);
    assert!(value(&after, "rbk_store_bytes_total", &[("direction", "written"), ("backend", "fs")]) > 0.0, "{after}");
    assert!(value(&after, "rbk_store_operation_duration_seconds_count", &[("op", "put"), ("backend", "fs")]) >= 2.0, "two layers were put through the coordinator");

    // The same graph again: both steps CACHED, nothing runs.
    let mut again = submit(&c.url, graph).await;
    assert_eq!(finish(&mut again).await, "succeeded");
    let cached = eventually(&c, "rbk_builds_total", &[("result", "succeeded")], 2.0).await;
    assert_eq!(value(&cached, "rbk_steps_total", &[("result", "cached")]), 2.0);
    assert_eq!(value(&cached, "rbk_cache_hits_total", &[("cache", "action")]), 2.0);
    assert_eq!(value(&cached, "rbk_steps_total", &[("result", "done")]), 2.0);

    // A new step on the same cache mount starts from its head and restores it.
    let mut warm = submit(&c.url, vec![step("pip2", "k-pip-2", &[], Some("pip"))]).await;
    let a = w.assignment().await;
    assert!(!a.mounts[0].snapshot.is_empty(), "the cache has a head now");
    w.succeed(&a, 4096).await;
    assert_eq!(finish(&mut warm).await, "succeeded");
    let warm = eventually(&c, "rbk_builds_total", &[("result", "succeeded")], 3.0).await;
    assert_eq!(value(&warm, "rbk_cache_hits_total", &[("cache", "cache_mount")]), 1.0);
    assert_eq!(value(&warm, "rbk_cache_mount_restored_bytes_total", &[]), 4096.0);

    drop(w);
    eventually(&c, "rbk_workers_connected", &[], 0.0).await;
}

#[tokio::test]
async fn a_failed_build_is_counted_as_failed() {
    let c = start("failed", Some("127.0.0.1:0"));
    let mut w = Worker::connect(&c.url).await;
    let mut events = submit(&c.url, vec![step("x", "k-x", &[], None)]).await;
    let a = w.assignment().await;
    let failure = pw::StepResult { assignment_id: a.assignment_id, ok: false, message: "exit 2".into(), exit_code: 2, ..Default::default() };
    w.tx.send(pw::WorkerMessage { msg: Some(Up::Result(failure)) }).unwrap();
    assert_eq!(finish(&mut events).await, "failed");
    let text = eventually(&c, "rbk_builds_total", &[("result", "failed")], 1.0).await;
    assert_eq!(value(&text, "rbk_steps_total", &[("result", "failed")]), 1.0);
    assert_eq!(value(&text, "rbk_builds_total", &[("result", "succeeded")]), 0.0);
}

#[tokio::test]
async fn the_metrics_endpoint_answers_404_elsewhere() {
    let c = start("404", Some("127.0.0.1:0"));
    let (code, _) = http_get(&c.metrics, "/").await;
    assert_eq!(code, 404);
}

#[test]
fn a_busy_metrics_address_stops_the_coordinator_naming_the_key() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("rbk-metrics-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens.toml"), format!("[tenants]\n\"{TENANT}\" = \"team\"\n")).unwrap();
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\nmetrics_listen = \"{}\"\n[store]\ndir = \"store\"\n", busy.local_addr().unwrap()),
    )
    .unwrap();
    let out = Command::new(RBK).args(["coordinator", "--config"]).arg(&config).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_listen") && err.contains(&busy.local_addr().unwrap().to_string()), "{err}");
}

#[tokio::test]
async fn scheduler_log_lines_name_the_build_and_step() {
    let log = std::env::temp_dir().join(format!("rbk-metrics-log-{}.log", std::process::id()));
    let c = start_logging("log", None, Some(&log));
    let mut w = Worker::connect(&c.url).await;
    let mut events = submit(&c.url, vec![step("only", "k-only", &[], None)]).await;
    let accepted = timeout(WAIT, events.message()).await.unwrap().unwrap().unwrap();
    let Some(Event::Accepted(a)) = accepted.event else { panic!("first event: {accepted:?}") };
    let assign = w.assignment().await;
    w.succeed(&assign, 0).await;
    assert_eq!(finish(&mut events).await, "succeeded");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("step done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&log);
    let ids = format!("build_id={} step_id=only", a.build_id);
    for span in ["dispatch{", "step_result{", "commit{"] {
        assert!(text.lines().any(|l| l.contains(span) && l.contains(&ids)), "no {span} line with {ids} in:\n{text}");
    }
    assert!(!text.contains('\u{1b}'), "a log file gets no colour codes");
}
