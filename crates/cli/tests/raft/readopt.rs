//! Workers re-report their running steps to a new leader: real
//! `rbk worker` processes (runc, busybox) run a long RUN while the leader is
//! SIGKILLed. Every execution is counted from the workers' own logs (one
//! `assigned` line per run) and leaves one file in the step's cache mount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbk_worker::payload::LayerDesc;
use rbk_client::RemoteStore;
use rbk_proto::build as pb;
use rbk_store::{Digest, Store, StoreExt};

use crate::harness::*;

const RBK: &str = env!("CARGO_BIN_EXE_rbk");

/// An `rbk worker` process of the cluster, logging to `worker-ID.log`.
struct Worker {
    id: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    /// Connects to `via` (a follower is fine: it follows the leader).
    fn start(dir: &Path, id: &str, via: &str) -> Worker {
        let state = dir.join("workers").join(id);
        std::fs::create_dir_all(&state).unwrap();
        let log = dir.join(format!("worker-{id}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(RBK)
            .args(["worker", "--coordinator", via, "--token", WORKER, "--id", id])
            .arg("--state-dir")
            .arg(&state)
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .args(["--max-backoff", "1s"])
            .env("RBK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("starting rbk worker");
        Worker { id: id.into(), child: Some(child), log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times this worker was given step `step` (each one a run).
    fn runs_of(&self, step: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(" assigned") && l.contains(&format!("step={step}"))).count()
    }

    async fn wait_assigned(&self, step: &str) {
        let start = Instant::now();
        while self.runs_of(step) == 0 {
            assert!(start.elapsed() < WAIT, "worker {} never got step {step}:\n{}", self.id, self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Detaches the overlays a SIGKILLed worker left mounted under `dir`.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        rbk_testsupport::stop_pasta_under(&self.0);
        let dir = self.0.to_string_lossy().into_owned();
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut left: Vec<&str> = table.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&dir)).collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in left {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// The busybox test image's layer, put into the cluster's store.
async fn busybox_base(via: &str, dir: &Path) -> LayerDesc {
    let store = RemoteStore::connect(&rbk_client::ClientTls::default(), via, TENANT).await.expect("content service");
    crate::busybox_steps::busybox_base(dir, |blob| async move {
        // A new leader installs the tokens just after it starts serving.
        let start = Instant::now();
        loop {
            match store.put_bytes(blob.clone().into()).await {
                Ok(d) => break d,
                Err(e) => assert!(start.elapsed() < WAIT, "uploading the base layer: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// `RUN --mount=type=cache,id=CACHE,target=/cache sh -c SCRIPT` on busybox.
fn run_step(base: &LayerDesc, id: &str, key: &str, script: &str, cache: &str) -> pb::StepNode {
    crate::busybox_steps::busybox_run(base, id, key, script, Some((cache, "shared")))
}

/// One file per execution that committed its cache mount.
const COUNTING_RUN: &str = "sleep 4; echo ran > /cache/run-$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo $RANDOM$RANDOM)";

/// The files in cache `id`'s head, restored from the store.
async fn cache_files(via: &str, id: &str) -> BTreeMap<String, String> {
    let heads = list_caches(via).await;
    let head = heads.iter().find(|h| h.id == id && h.slot == 0).unwrap_or_else(|| panic!("no head for cache {id}: {heads:?}"));
    let store: Arc<dyn Store> = Arc::new(RemoteStore::connect(&rbk_client::ClientTls::default(), via, TENANT).await.expect("content service"));
    let d: Digest = head.snapshot.parse().unwrap();
    let snap = rbk_snapshot::Snapshot::load(&*store, d).await.expect("loading the head snapshot");
    let out = tempfile::tempdir().unwrap();
    let opts = rbk_snapshot::RestoreOptions { owner: false, ..Default::default() };
    rbk_snapshot::restore(store, &snap, out.path(), &opts).await.expect("restoring the head");
    std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect()
}

/// A 3-node cluster, the base image in its store, and a follower URL that
/// survives the leader's kill; returns (cluster, leader id, follower URL, base).
async fn cluster() -> (Cluster, u64, String, LayerDesc) {
    let mut c = Cluster::new(3, 1000);
    let (leader_url, leader) = c.start_and_elect().await;
    let follower = c.apis().into_iter().find(|u| *u != leader_url).unwrap();
    let base = busybox_base(&leader_url, c.dir.path()).await;
    (c, leader, follower, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_running_when_the_leader_dies_completes_on_its_worker_and_runs_once() {
    let (mut c, leader, follower, base) = cluster().await;
    let _unmount = Unmount(c.dir.path().to_owned());
    let w1 = Worker::start(c.dir.path(), "w1", &follower);
    let build = submit(&follower, vec![run_step(&base, "s1", "readopt-once", COUNTING_RUN, "runs")]).await;
    w1.wait_assigned("s1").await;
    // An idle worker the new leader could give the step to: it must not.
    let w2 = Worker::start(c.dir.path(), "w2", &follower);
    c.kill(leader);
    let s = wait_finished(&c.apis(), &build).await;
    assert_eq!(s.state, "succeeded", "{s:?}\nw1:\n{}", w1.log_text());
    assert_eq!((w1.runs_of("s1"), w2.runs_of("s1")), (1, 0), "the step ran exactly once, on w1\nw1:\n{}\nw2:\n{}", w1.log_text(), w2.log_text());
    assert_eq!(s.steps[0].worker_id, "w1", "{s:?}");
    let logs: String = (1..=3).filter(|id| *id != leader).map(|id| read_log(c.dir.path(), id)).collect();
    assert!(logs.contains("re-reported a running step"), "the new leader kept the step on w1:\n{logs}");
    let files = cache_files(&c.apis()[0], "runs").await;
    assert_eq!(files.len(), 1, "one execution committed to the cache: {files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_worker_dies_with_the_leader_is_retried_elsewhere_after_the_grace_period() {
    let (mut c, leader, follower, base) = cluster().await;
    let _unmount = Unmount(c.dir.path().to_owned());
    let mut w1 = Worker::start(c.dir.path(), "w1", &follower);
    let build = submit(&follower, vec![run_step(&base, "s1", "readopt-retry", COUNTING_RUN, "runs")]).await;
    w1.wait_assigned("s1").await;
    c.kill(leader);
    w1.sigkill();
    let w2 = Worker::start(c.dir.path(), "w2", &follower);
    let s = wait_finished(&c.apis(), &build).await;
    assert_eq!(s.state, "succeeded", "{s:?}\nw2:\n{}", w2.log_text());
    assert_eq!(w2.runs_of("s1"), 1, "w2:\n{}", w2.log_text());
    assert_eq!(s.steps[0].worker_id, "w2", "{s:?}");
    let logs: String = (1..=3).filter(|id| *id != leader).map(|id| read_log(c.dir.path(), id)).collect();
    assert!(logs.contains("did not come back within"), "the new leader waited for w1, then retried:\n{logs}");
    assert_eq!(cache_files(&c.apis()[0], "runs").await.len(), 1, "only w2's run committed");
}
