//! The store collector on a replicated coordinator, through `rbk store gc`:
//! a dry run deletes nothing, a head committed while a run deletes stays
//! whole, and a leader killed mid-run leaves a store in which every head
//! restores and the next leader's run finishes the job; a run first
//! evicts what is over a tenant's budget.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbk_snapshot::{CaptureOptions, Snapshot, capture};
use rbk_store::{Digest, FilesystemStore, Store, StoreExt};

use crate::harness::*;

const ADMIN: &str = "raft-test-admin-token-0004";
const RBK: &str = env!("CARGO_BIN_EXE_rbk");

/// A cluster whose leader collects only on demand, with no grace (every
/// blob written before a run is a candidate) and small batches (a run is
/// many fences through Raft, so builds and kills land inside it).
fn cluster() -> Cluster {
    cluster_with("")
}

/// [`cluster`] with more config (e.g. `[eviction]`).
fn cluster_with(extra: &str) -> Cluster {
    let mut c = Cluster::new(3, 1000);
    std::fs::write(c.dir.path().join("admin-token"), ADMIN).unwrap();
    c.configure(&format!("[gc]\ninterval = \"off\"\ngrace = \"0s\"\nexistence_ttl = \"0s\"\nbatch = 4\n[admin]\ntoken_file = \"admin-token\"\n{extra}"));
    c
}

/// The store every node of the cluster shares (`[store] dir = "store"`).
async fn store(c: &Cluster) -> Arc<dyn Store> {
    Arc::new(FilesystemStore::open(&c.dir.path().join("store")).await.unwrap())
}

async fn garbage(store: &Arc<dyn Store>, n: usize, salt: &str) -> Vec<Digest> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(store.put_bytes(Bytes::from(format!("{salt} garbage {i}"))).await.unwrap());
    }
    out
}

/// A captured snapshot of one file.
async fn snapshot(store: &Arc<dyn Store>, content: &str) -> Digest {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), content).unwrap();
    capture(store.clone(), dir.path(), &CaptureOptions::new("team")).await.unwrap().0.digest
}

/// A worker committing, for each cache mount, the snapshot `snapshots`
/// names for its cache id when the step ends.
fn worker(c: &Cluster, snapshots: &Arc<Mutex<BTreeMap<String, Digest>>>) -> TestWorker {
    let snapshots = snapshots.clone();
    TestWorker::start_with("w1", c.apis(), 50, Arc::new(move |cache_id: &str, _key: &str| snapshots.lock().unwrap()[cache_id].to_string()))
}

fn named(pairs: &[(&str, Digest)]) -> Arc<Mutex<BTreeMap<String, Digest>>> {
    Arc::new(Mutex::new(pairs.iter().map(|(k, d)| (k.to_string(), *d)).collect()))
}

/// `rbk store gc` against `via`; its stdout, or its stderr as the error.
fn gc(via: &str, extra: &[&str]) -> impl std::future::Future<Output = Result<String, String>> + Send + 'static {
    let (via, extra): (String, Vec<String>) = (via.to_owned(), extra.iter().map(|s| s.to_string()).collect());
    async move {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(RBK).args(["store", "gc", "--coordinator", &via]).args(&extra).env("RBK_ADMIN_TOKEN", ADMIN).output().unwrap();
            if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        })
        .await
        .unwrap()
    }
}

/// Every head the leader lists restores: its manifest and every pack it
/// names are in the store.
async fn assert_every_head_restores(c: &Cluster, store: &Arc<dyn Store>) -> usize {
    let heads = list_caches(&c.apis()[0]).await;
    for h in &heads {
        let digest: Digest = h.snapshot.parse().unwrap();
        let snap = Snapshot::load(&**store, digest).await.unwrap_or_else(|e| panic!("head {} ({digest}) does not load: {e}", h.id));
        let packs: Vec<Digest> = snap.manifest.packs().into_iter().collect();
        assert!(store.find_missing(&packs).await.unwrap().is_empty(), "head {}: a pack of {digest} was deleted", h.id);
    }
    heads.len()
}

async fn missing(store: &Arc<dyn Store>, digests: &[Digest]) -> usize {
    store.find_missing(digests).await.unwrap().len()
}

/// Waits until `node`'s log has `needle` (a line the coordinator logs).
async fn wait_log(dir: &Path, node: u64, needle: &str) {
    let start = Instant::now();
    while !read_log(dir, node).contains(needle) {
        assert!(start.elapsed() < WAIT, "node {node} never logged {needle:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gc_dry_run_deletes_nothing_and_the_real_run_deletes_what_it_named() {
    let mut c = cluster();
    c.start_all();
    let store = store(&c).await;
    let junk = garbage(&store, 5, "dry").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Through a follower: the CLI follows the redirect to the leader.
    let leader = c.leader_via(&c.node(1).api()).await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();

    let dry = gc(&follower, &["--dry-run"]).await.unwrap();

    assert!(dry.contains("would delete 5 blobs"), "{dry}");
    assert_eq!(missing(&store, &junk).await, 0, "a dry run deleted something");
    let real = gc(&follower, &[]).await.unwrap();
    assert!(real.contains("deleted 5 blobs"), "{real}");
    assert_eq!(missing(&store, &junk).await, junk.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gc_refuses_a_caller_without_the_admin_token() {
    let mut c = cluster();
    c.start_all();
    let store = store(&c).await;
    let junk = garbage(&store, 2, "auth").await;
    let leader = c.leader_via(&c.node(1).api()).await;
    let out = std::process::Command::new(RBK).args(["store", "gc", "--coordinator", &leader, "--admin-token", TENANT]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the admin token"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(missing(&store, &junk).await, 0);
}

/// Cache `cache` mounted by one step of key `key`.
fn cache_step(key: &str, cache: &str) -> rbk_proto::build::StepNode {
    step("s0", key, &[], Some(cache))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_committed_while_a_collection_runs_survive_it_and_the_next_one() {
    let mut c = cluster();
    c.start_all();
    let store = store(&c).await;
    // Two snapshots nothing references yet, older than the run (so
    // candidates: their commits race the fences and are kept or refused),
    // and two captured once the run started (young: must be kept).
    let snapshots = named(&[("old0", snapshot(&store, "old 0").await), ("old1", snapshot(&store, "old 1").await)]);
    let junk = garbage(&store, 200, "during").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let leader_url = c.leader_via(&c.node(1).api()).await;
    let leader = c.id_of(&leader_url);
    let w = worker(&c, &snapshots);
    w.hold.store(true, std::sync::atomic::Ordering::Release);
    let mut builds = Vec::new();
    for cache in ["old0", "old1", "young0", "young1"] {
        builds.push((cache, submit(&leader_url, vec![cache_step(&format!("during-gc-{cache}"), cache)]).await));
    }

    let run = tokio::spawn(gc(&leader_url, &[]));
    wait_log(c.dir.path(), leader, "store collection started").await;
    for cache in ["young0", "young1"] {
        let d = snapshot(&store, cache).await;
        snapshots.lock().unwrap().insert(cache.into(), d);
    }
    w.hold.store(false, std::sync::atomic::Ordering::Release);
    let first = run.await.unwrap().unwrap();
    eprintln!("first run: {first}");
    for (cache, build) in &builds {
        let s = wait_finished(&c.apis(), build).await;
        eprintln!("{cache}: {} {:?}", s.state, s.steps.iter().map(|st| &st.state).collect::<Vec<_>>());
        if cache.starts_with("young") {
            assert_eq!(s.state, "succeeded", "{s:?}");
        }
    }

    let heads = list_caches(&leader_url).await;
    for young in ["young0", "young1"] {
        assert!(heads.iter().any(|h| h.id == young), "head {young} missing: {heads:?}");
    }
    assert_every_head_restores(&c, &store).await;
    let second = gc(&leader_url, &[]).await.unwrap();
    eprintln!("second run: {second}");
    assert_every_head_restores(&c, &store).await;
    assert_eq!(missing(&store, &junk).await, junk.len(), "the garbage outlived two runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_collection_leaves_every_head_whole_and_the_next_leader_finishes() {
    let mut c = cluster();
    c.start_all();
    let store = store(&c).await;
    let snapshots = named(&[("c0", snapshot(&store, "kept a").await), ("c1", snapshot(&store, "kept b").await)]);
    let leader_url = c.leader_via(&c.node(1).api()).await;
    let leader = c.id_of(&leader_url);
    let _w = worker(&c, &snapshots);
    let build = submit(&leader_url, chain(2, "kill-mid-gc")).await;
    assert_eq!(wait_finished(&c.apis(), &build).await.state, "succeeded");
    let junk = garbage(&store, 400, "killed").await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let run = tokio::spawn(gc(&leader_url, &[]));
    // Kill once the run has deleted some but not all of the garbage.
    let start = Instant::now();
    loop {
        let gone = missing(&store, &junk).await;
        if gone > 0 {
            assert!(gone < junk.len(), "the run finished before the kill; more garbage needed");
            break;
        }
        assert!(start.elapsed() < WAIT, "the run deleted nothing:\n{}", c.log_tails());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.kill(leader);
    let _ = run.await.unwrap();
    let partial = missing(&store, &junk).await;
    eprintln!("killed the leader with {partial} of {} garbage blobs deleted", junk.len());

    assert_eq!(assert_every_head_restores(&c, &store).await, 2);
    let survivor = c.apis()[0].clone();
    let next = gc(&survivor, &[]).await.unwrap();
    eprintln!("the next leader's run: {next}");
    assert_eq!(missing(&store, &junk).await, junk.len(), "the next leader left garbage");
    assert_eq!(assert_every_head_restores(&c, &store).await, 2);
    // No fence of the dead run is left blocking commits: the same caches
    // commit again.
    let again = submit(&survivor, chain(2, "after-kill")).await;
    assert_eq!(wait_finished(&c.apis(), &again).await.state, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_first_evicts_a_tenants_least_recently_used_heads_over_its_budget_and_cache_du_shows_the_budget() {
    // Every head the test worker commits is charged 10 bytes.
    let mut c = cluster_with("[eviction]\nheads_bytes = \"25\"\n");
    c.start_all();
    let leader = c.leader_via(&c.node(1).api()).await;
    let _w = TestWorker::start("w1", c.apis(), 10);
    for cache in ["e0", "e1", "e2"] {
        let build = submit(&leader, vec![cache_step(&format!("evict-{cache}"), cache)]).await;
        assert_eq!(wait_finished(&c.apis(), &build).await.state, "succeeded");
    }

    let report = gc(&leader, &[]).await.unwrap();

    assert!(report.contains("evicted 1 cache heads"), "{report}");
    let mut left: Vec<String> = list_caches(&leader).await.into_iter().map(|h| h.id).collect();
    left.sort();
    assert_eq!(left, ["e1", "e2"], "the least recently committed head goes first");
    let du = std::process::Command::new(RBK).args(["cache", "du", "--coordinator", &leader, "--token", TENANT]).output().unwrap();
    let du = String::from_utf8_lossy(&du.stdout);
    assert!(du.contains("20 B of 25 B (80%)"), "{du}");
}
