//! The collector over the coordinator's state: what it keeps, and what a
//! commit racing a run gets (kept when it lands before a batch's fence,
//! refused when it names a fenced blob).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use rbk_snapshot::{CaptureOptions, Snapshot, capture};
use rbk_store::{ListPage, MemoryStore, StoreExt};

use super::*;
use crate::cache_heads::{CacheHeadError, CacheHeads};
use crate::model::{ActionResult, HeadKey, StepNode};
use crate::snapshot_merger::SnapshotMerger;
use crate::state::MemoryState;

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A memory store that runs a hook (once) when the collector first lists
/// or first deletes: the moments a build may commit during a run.
#[derive(Default)]
struct HookedStore {
    inner: MemoryStore,
    on_list: Mutex<Option<Hook>>,
    on_delete: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for HookedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookedStore")
    }
}

rbk_store::forward_store!(HookedStore => inner [find_missing, put, get, list] {
    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        let hook = self.on_delete.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        self.inner.delete(digest).await
    }
    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<ListPage> {
        let hook = self.on_list.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        self.inner.list_page(after, limit).await
    }
});

struct Farm {
    state: Arc<dyn CoordinatorState>,
    store: Arc<HookedStore>,
    heads: CacheHeads,
    leads: Arc<AtomicBool>,
}

fn farm() -> Farm {
    let state: Arc<dyn CoordinatorState> = Arc::new(MemoryState::new());
    let store = Arc::new(HookedStore::default());
    let heads = CacheHeads::new(state.clone(), Arc::new(SnapshotMerger::new(store.clone())));
    Farm { state, store, heads, leads: Arc::new(AtomicBool::new(true)) }
}

impl Farm {
    fn collector(&self) -> Collector {
        let leads = self.leads.clone();
        let config = GcConfig { interval: None, grace: Duration::ZERO, existence_ttl: Duration::from_secs(600), batch: 100 };
        Collector::new(self.state.clone(), self.store.clone(), config, Arc::new(move || leads.load(Ordering::SeqCst)))
    }

    /// A captured snapshot of `files`, and every blob it consists of.
    async fn snapshot(&self, files: &[(&str, &str)]) -> (Digest, Vec<Digest>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let store: Arc<dyn Store> = self.store.clone();
        let (snap, _) = capture(store, dir.path(), &CaptureOptions::new("team")).await.unwrap();
        let mut blobs: Vec<Digest> = snap.manifest.packs().into_iter().collect();
        blobs.push(snap.digest);
        (snap.digest, blobs)
    }

    async fn blob(&self, data: &str) -> Digest {
        self.store.put_bytes(Bytes::from(data.to_owned())).await.unwrap()
    }

    async fn present(&self, digests: &[Digest]) -> bool {
        self.store.find_missing(digests).await.unwrap().is_empty()
    }
}

fn head(id: &str) -> HeadKey {
    HeadKey { namespace: "team".into(), cache_id: id.into(), slot: 0 }
}

fn step_reading_context(context: Digest, layer: Digest) -> StepNode {
    let payload = serde_json::json!({
        "version": 1,
        "context": context.to_string(),
        "parent": {"kind": "layers", "layers": [{"blake3": layer.to_string()}]},
    });
    StepNode { id: "s1".into(), key: "k1".into(), payload: serde_json::to_vec(&payload).unwrap(), name: "COPY . /src".into(), ..Default::default() }
}

/// So that every blob put so far is older than the run's start.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn a_collection_keeps_heads_their_history_action_results_and_running_builds_and_deletes_the_rest() {
    let f = farm();
    let (old_gen, old_blobs) = f.snapshot(&[("a", "first")]).await;
    let (cur, cur_blobs) = f.snapshot(&[("a", "second")]).await;
    f.heads.commit(&head("pip"), 0, old_gen, 5, 1, 1).await.unwrap();
    f.heads.commit(&head("pip"), 1, cur, 6, 2, 2).await.unwrap();
    let layer = f.blob("a layer").await;
    let config_layer = f.blob("a layer named only by the result's config").await;
    let config = serde_json::to_vec(&serde_json::json!({"layers": [{"blake3": config_layer.to_string()}]})).unwrap();
    let result = ActionResult { layers: vec![layer], config, duration_ms: 1, worker_id: "w".into(), created_ms: 1 };
    f.state.apply(Command::PutAction { namespace: "team".into(), key: "k".into(), result }).await.unwrap();
    let (context, context_blobs) = f.snapshot(&[("Dockerfile", "FROM scratch")]).await;
    let base_layer = f.blob("a base-image layer").await;
    let graph = vec![step_reading_context(context, base_layer)];
    let create = Command::CreateBuild { build_id: "b1".into(), namespace: "team".into(), steps: vec![("s1".into(), "k1".into())], now_ms: 1, graph, submitter: String::new() };
    f.state.apply(create).await.unwrap();
    let (dropped, dropped_blobs) = f.snapshot(&[("z", "a cache nobody holds any more")]).await;
    f.heads.commit(&head("npm"), 0, dropped, 1, 1, 1).await.unwrap();
    f.state.apply(Command::DropHead { head: head("npm") }).await.unwrap();
    let garbage = f.blob("garbage").await;
    tick().await;

    let report = f.collector().run(false).await.unwrap();

    let live: Vec<Digest> = [old_blobs, cur_blobs, context_blobs, vec![layer, config_layer, base_layer]].concat();
    assert!(f.present(&live).await, "a live blob was deleted");
    let dead: Vec<Digest> = [dropped_blobs, vec![garbage]].concat();
    assert_eq!(f.store.find_missing(&dead).await.unwrap().len(), dead.len(), "garbage was kept");
    assert_eq!(report.deleted_objects, dead.len() as u64);
    assert!(report.freed_bytes > 0);
}

#[tokio::test]
async fn a_collected_blob_loses_its_owners_and_a_live_one_keeps_them() {
    let f = farm();
    let (garbage, kept) = (f.blob("an upload nothing names").await, f.blob("a layer a result names").await);
    f.state.apply(Command::OwnBlobs { namespace: "team".into(), blobs: vec![garbage, kept] }).await.unwrap();
    let result = ActionResult { layers: vec![kept], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 1 };
    f.state.apply(Command::PutAction { namespace: "team".into(), key: "k".into(), result }).await.unwrap();
    tick().await;

    f.collector().run(false).await.unwrap();

    assert!(!f.present(&[garbage]).await);
    assert!(!query(&*f.state, |m| m.tenant_has_blob("team", &garbage)), "the owner of a deleted blob was kept");
    assert!(query(&*f.state, |m| m.tenant_has_blob("team", &kept)));
}

#[tokio::test]
async fn a_dry_run_deletes_nothing_and_reports_what_it_would_free() {
    let f = farm();
    let garbage = f.blob("garbage").await;
    tick().await;
    let report = f.collector().run(true).await.unwrap();
    assert_eq!((report.deleted_objects, report.freed_bytes), (1, garbage.size()));
    assert!(f.present(&[garbage]).await);
    assert_eq!(query(&*f.state, |m| m.gc().fenced()), 0, "a dry run fences nothing");
}

#[tokio::test]
async fn a_head_committed_during_a_run_survives_with_its_packs() {
    let f = farm();
    // An old snapshot nothing references (say, of a head dropped long
    // ago) that a build finds present and commits again mid-run.
    let (snap, blobs) = f.snapshot(&[("wheel", "cached wheel")]).await;
    tick().await;
    let heads = f.heads.clone();
    *f.store.on_list.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            heads.commit(&head("pip"), 0, snap, 12, 1, 1).await.unwrap();
        })
    }));

    let report = f.collector().run(false).await.unwrap();

    assert!(f.present(&blobs).await, "the committed head's blobs were deleted");
    assert_eq!(f.heads.head(&head("pip")).unwrap().snapshot, snap);
    assert_eq!(report.deleted_objects, 0);
    Snapshot::load(&*f.store, snap).await.expect("the head restores");
}

#[tokio::test]
async fn a_commit_naming_a_blob_being_deleted_is_refused_and_the_head_stays_consistent() {
    let f = farm();
    let (snap, _) = f.snapshot(&[("wheel", "cached wheel")]).await;
    tick().await;
    let heads = f.heads.clone();
    let refused = Arc::new(Mutex::new(None));
    let out = refused.clone();
    *f.store.on_delete.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            *out.lock().unwrap() = Some(heads.commit(&head("pip"), 0, snap, 12, 1, 1).await);
        })
    }));

    let report = f.collector().run(false).await.unwrap();

    let answer = refused.lock().unwrap().take().expect("the hook ran");
    assert!(matches!(answer, Err(CacheHeadError::Fenced { .. })), "{answer:?}");
    assert!(f.heads.head(&head("pip")).is_none(), "no head names the deleted snapshot");
    assert!(report.deleted_objects >= 2);
}

#[tokio::test]
async fn a_writer_that_started_before_a_release_plus_the_existence_ttl_is_still_refused() {
    let f = farm();
    let garbage = f.blob("garbage").await;
    tick().await;
    f.collector().run(false).await.unwrap();
    let layer_result = ActionResult { layers: vec![garbage], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 1 };
    let put = Command::PutAction { namespace: "team".into(), key: "k".into(), result: layer_result };
    let old_writer = Command::Guarded { started_ms: now_ms(), packs: vec![], cmd: Box::new(put.clone()) };
    assert_eq!(f.state.apply(old_writer).await.unwrap(), Outcome::Refused { blobs: vec![garbage] });
    let later = now_ms() + 600_000;
    let new_writer = Command::Guarded { started_ms: later, packs: vec![], cmd: Box::new(put) };
    assert_eq!(f.state.apply(new_writer).await.unwrap(), Outcome::Ok);
}

#[tokio::test]
async fn a_node_that_stops_leading_mid_run_deletes_nothing_more_and_the_next_run_releases_its_fences() {
    let f = farm();
    let garbage = [f.blob("garbage 1").await, f.blob("garbage 2").await, f.blob("garbage 3").await];
    tick().await;
    let leads = f.leads.clone();
    *f.store.on_delete.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            leads.store(false, Ordering::SeqCst);
        })
    }));

    let err = f.collector().run(false).await.unwrap_err();

    assert!(err.to_string().contains("stopped leading"), "{err}");
    // The delete in flight when leadership ended finishes; no other starts.
    assert_eq!(f.store.find_missing(&garbage).await.unwrap().len(), 1);
    f.leads.store(true, Ordering::SeqCst);
    let report = f.collector().run(false).await.unwrap();
    assert_eq!(report.deleted_objects, 2, "a fresh run (a new leader) collects what the last one left");
    assert!(matches!(f.collector().run(false).await, Ok(r) if r.deleted_objects == 0));
}

#[tokio::test]
async fn only_the_leader_collects() {
    let f = farm();
    f.leads.store(false, Ordering::SeqCst);
    assert!(matches!(f.collector().run(false).await, Err(CollectorError::NotLeader)));
}

#[tokio::test]
async fn a_run_first_evicts_the_least_recently_used_head_over_budget_and_deletes_its_snapshot() {
    let f = farm();
    let (old, old_blobs) = f.snapshot(&[("a", "old cache")]).await;
    let (new, new_blobs) = f.snapshot(&[("a", "new cache")]).await;
    f.heads.commit(&head("old"), 0, old, 10, 1, 1).await.unwrap();
    f.heads.commit(&head("new"), 0, new, 10, 2, 2).await.unwrap();
    tick().await;
    let policy = crate::eviction::EvictionPolicy {
        default: crate::eviction::Budget { heads_bytes: Some(15), actions_bytes: None },
        ..Default::default()
    };

    let dry = f.collector().with_eviction(policy.clone()).run(true).await.unwrap();
    assert_eq!(dry.evicted.heads.len(), 1, "a dry run reports the eviction");
    assert!(f.heads.head(&head("old")).is_some(), "a dry run evicts nothing");
    let report = f.collector().with_eviction(policy).run(false).await.unwrap();

    assert_eq!(report.evicted.heads.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(), [head("old")]);
    assert_eq!(report.evicted.heads_bytes, 10);
    assert!(f.heads.head(&head("old")).is_none());
    assert_eq!(f.store.find_missing(&old_blobs).await.unwrap().len(), old_blobs.len(), "the evicted head's snapshot was kept");
    assert!(f.present(&new_blobs).await);
}
