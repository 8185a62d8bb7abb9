//! Scheduling overhead over real gRPC on loopback: how many steps per second
//! the coordinator dispatches and completes, and how fast a fully cached
//! build answers. Workers here do no work (they succeed at once), so the
//! numbers are the coordinator's own cost per step.
//!
//! cargo bench -p rbk-coordinator --bench dispatch

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbk_coordinator::state::MemoryState;
use rbk_coordinator::{Coordinator, MergeError, MergedSnapshot, Merger, SchedulerConfig, TokenFile};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};
use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::{self as pw, coordinator_message::Msg as Down, worker_message::Msg as Up};
use rbk_store::{Digest, FilesystemStore};
use tonic::Request;

const TENANT: &str = "bench-tenant-token-00000001";
const WORKER: &str = "bench-worker-token-00000001";
const STEPS: usize = 500;

/// No cache mounts in this benchmark, so no merges.
struct Unused;
#[async_trait::async_trait]
impl Merger for Unused {
    async fn merge(&self, _: Option<Digest>, earlier: Digest, later: Digest) -> Result<MergedSnapshot, MergeError> {
        Err(MergeError::Commit { earlier, later, source: "the dispatch benchmark commits no cache mounts".into() })
    }
}

fn bearer<T>(m: T, token: &str) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A worker that reports success for every assignment at once.
async fn instant_worker(url: String, id: String) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let register = pw::Register {
        worker_id: id,
        platform: "linux/amd64".into(),
        resources: Some(pw::Resources { max_parallel: 16, ..Default::default() }),
        ..Default::default()
    };
    tx.send(pw::WorkerMessage { msg: Some(Up::Register(register)) }).unwrap();
    let mut client = WorkerClient::connect(url).await.unwrap();
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut down = client.session(bearer(stream, WORKER)).await.unwrap().into_inner();
    while let Ok(Some(m)) = down.message().await {
        if let Some(Down::Assign(a)) = m.msg {
            let result = pw::StepResult {
                assignment_id: a.assignment_id,
                ok: true,
                layers: vec![Digest::of(a.key.as_bytes()).to_string()],
                ..Default::default()
            };
            tx.send(pw::WorkerMessage { msg: Some(Up::Result(result)) }).unwrap();
        }
    }
}

/// `STEPS - 1` independent steps and one that joins them. Each runs its own
/// payload: the coordinator keys steps by what they run, and steps with one
/// key would run once.
fn wide_graph(salt: u64) -> Vec<pb::StepNode> {
    let step = |id: String, key: String, deps: Vec<String>| pb::StepNode { id, payload: format!("run {key}").into_bytes(), key, deps, ..Default::default() };
    let mut steps: Vec<_> = (0..STEPS - 1).map(|i| step(format!("s{i}"), format!("{salt}-{i}"), vec![])).collect();
    let deps = steps.iter().map(|s| s.id.clone()).collect();
    steps.push(step("join".into(), format!("{salt}-join"), deps));
    steps
}

async fn run_build(client: &mut BuildClient<tonic::transport::Channel>, steps: Vec<pb::StepNode>) {
    let req = pb::SubmitRequest { options: Some(Default::default()), context_digest: String::new(), steps, ..Default::default() };
    let mut events = client.submit(bearer(req, TENANT)).await.unwrap().into_inner();
    while let Some(e) = events.message().await.unwrap() {
        if let Some(Event::BuildFinished(f)) = e.event {
            assert_eq!(f.state, "succeeded", "{}", f.message);
            return;
        }
    }
    panic!("event stream ended before build_finished");
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, mut client) = rt.block_on(async {
        let store = Arc::new(FilesystemStore::open(dir.path()).await.unwrap());
        let tokens: TokenFile = toml::from_str(&format!("[tenants]\n\"{TENANT}\" = \"t\"\n[workers]\n\"{WORKER}\" = \"p\"\n[pools.p]\ntenants = [\"t\"]\n")).unwrap();
        let coordinator = Coordinator::start(Arc::new(MemoryState::new()), store, Arc::new(Unused), &tokens, SchedulerConfig::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(coordinator.serve(listener, std::future::pending()));
        for i in 0..2 {
            tokio::spawn(instant_worker(url.clone(), format!("w{i}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = BuildClient::connect(url.clone()).await.unwrap();
        (url, client)
    });
    let _ = url;
    let mut group = c.benchmark_group("coordinator");
    group.sample_size(10).throughput(Throughput::Elements(STEPS as u64));
    let mut salt = 0u64;
    group.bench_function("dispatch 500 steps, 2 workers x 16 slots", |b| {
        b.iter(|| {
            salt += 1;
            rt.block_on(run_build(&mut client, wide_graph(salt)))
        })
    });
    rt.block_on(run_build(&mut client, wide_graph(0)));
    group.bench_function("fully cached build of 500 steps", |b| b.iter(|| rt.block_on(run_build(&mut client, wide_graph(0)))));
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
