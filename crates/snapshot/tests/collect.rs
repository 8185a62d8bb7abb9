//! The collector against a model of the farm: random histories of builds
//! (captures that start, upload and later commit a cache head), action-cache
//! results, prunes, evictions, clock ticks and collections, with builds
//! running *during* a collection. After every step, every blob a live root
//! reaches is in the store; after the farm goes quiet and the grace period
//! passes, a collection leaves exactly the reachable blobs.
//!
//! The store is `MemoryStore` stamped by a logical clock (for `modified`);
//! the farm is a model of the coordinator's side of the contract in
//! `rbk_snapshot::collect` (generations, fences, refused commits).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use rbk_snapshot::{ChunkRef, Codec, CollectOptions, Entry, EntryKind, Fence, FileContent, Manifest, RootSource, Roots, Snapshot, Timestamp, collect};
use rbk_store::{Digest, MemoryStore, Store, StoreExt};
use tokio::sync::Mutex;

const GRACE_SECS: u64 = 30;
/// How long another node's existence cache may still say "present" after a
/// delete; the farm refuses commits of builds that started before a fence
/// was released plus this.
const EXISTENCE_TTL_SECS: u64 = 10;

/// The content of file `id`, stored as a one-chunk pack of its own.
fn file_bytes(id: u8) -> Bytes {
    Bytes::from(format!("file {id} ").repeat(1 + id as usize % 7))
}

fn layer_bytes(id: u8) -> Bytes {
    Bytes::from(format!("layer {id}"))
}

fn manifest_of(ns: u8, files: &BTreeSet<u8>) -> Manifest {
    let mut m = Manifest::new(format!("ns{ns}"));
    m.created_unix_ns = 0;
    for id in files {
        let data = file_bytes(*id);
        let d = Digest::of(&data);
        let chunk = ChunkRef { digest: d, pack: d, offset: 0, stored_len: d.size(), codec: Codec::Raw };
        let kind = EntryKind::File(FileContent { digest: d, chunks: vec![chunk] });
        m.entries.push(Entry { path: format!("f{id:03}").into_bytes(), kind, mode: 0o644, uid: 0, gid: 0, mtime: Timestamp::default() });
    }
    m
}

/// A build in flight: it started from `base`, has uploaded (or found) its
/// packs, and will commit a head of `ns` holding `files`.
#[derive(Debug, Clone)]
struct Build {
    ns: u8,
    base: Option<Digest>,
    started: u64,
    files: BTreeSet<u8>,
}

/// The coordinator's side of the contract, in the model.
#[derive(Debug, Default)]
struct Farm {
    generation: u64,
    heads: BTreeMap<u8, Digest>,
    action_cache: BTreeMap<u8, Digest>,
    builds: BTreeMap<u8, Build>,
    /// Fenced blobs and when their fence was released.
    fences: HashMap<Digest, Option<u64>>,
    /// Operations to run at the collector's next calls, as if concurrently.
    during_gc: Vec<Op>,
    commits_refused: u64,
}

impl Farm {
    fn roots(&self) -> Roots {
        let mut snapshots: BTreeSet<Digest> = self.heads.values().copied().collect();
        snapshots.extend(self.builds.values().filter_map(|b| b.base));
        Roots { generation: self.generation, snapshots, blobs: self.action_cache.values().copied().collect() }
    }

    /// Whether a commit naming `refs` by a build that started at `started`
    /// is refused: a blob is fenced, or its fence was released too recently
    /// for the build's existence answers to be trusted.
    fn refuses(&self, refs: &[Digest], started: u64) -> bool {
        refs.iter().any(|d| match self.fences.get(d) {
            Some(None) => true,
            Some(Some(released)) => started <= released + EXISTENCE_TTL_SECS,
            None => false,
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Build `b` starts capturing `files` for namespace `ns`.
    Start { b: u8, ns: u8, files: BTreeSet<u8> },
    /// Build `b` commits its snapshot as the head.
    Finish { b: u8 },
    /// An action-cache result naming a layer.
    Layer { key: u8, content: u8 },
    Prune { ns: u8 },
    Evict { key: u8 },
    Tick { secs: u64 },
    /// A collection, with operations run during it.
    Gc { during: Vec<Op> },
}

struct World {
    store: MemoryStore,
    /// The logical clock (seconds since the epoch) that stamps the store's
    /// blobs.
    clock: Arc<AtomicU64>,
    farm: Mutex<Farm>,
}

impl World {
    fn new() -> World {
        let clock = Arc::new(AtomicU64::new(0));
        let now = clock.clone();
        let store = MemoryStore::with_clock(move || UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst)));
        World { store, clock, farm: Mutex::new(Farm::default()) }
    }

    fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Every blob the store holds.
    async fn stored(&self) -> BTreeSet<Digest> {
        self.store.list().await.unwrap().into_iter().collect()
    }

    /// Uploads what the store lacks, as a writer does (existence check, then
    /// put of the missing): an old unreferenced blob found here is reused.
    async fn confirm(&self, blobs: &[Bytes]) {
        let digests: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
        let missing = self.store.find_missing(&digests).await.unwrap();
        for b in blobs {
            if missing.contains(&Digest::of(b)) {
                self.store.put_bytes(b.clone()).await.unwrap();
            }
        }
    }

    async fn apply(&self, op: &Op) {
        match op {
            Op::Start { b, ns, files } => {
                if self.farm.lock().await.builds.contains_key(b) {
                    return;
                }
                let started = self.now();
                let base = self.farm.lock().await.heads.get(ns).copied();
                self.confirm(&files.iter().map(|f| file_bytes(*f)).collect::<Vec<_>>()).await;
                self.farm.lock().await.builds.insert(*b, Build { ns: *ns, base, started, files: files.clone() });
            }
            Op::Finish { b } => {
                let Some(mut build) = self.farm.lock().await.builds.get(b).cloned() else { return };
                let manifest = manifest_of(build.ns, &build.files);
                let packs: Vec<Bytes> = build.files.iter().map(|f| file_bytes(*f)).collect();
                for _attempt in 0..2 {
                    // Snapshot::commit checks the packs exist and stores the manifest.
                    let committed = Snapshot::commit(&self.store, manifest.clone()).await;
                    let mut farm = self.farm.lock().await;
                    if let Ok((snap, _)) = committed {
                        let mut refs: Vec<Digest> = manifest.packs().into_iter().collect();
                        refs.push(snap.digest);
                        if !farm.refuses(&refs, build.started) {
                            farm.heads.insert(build.ns, snap.digest);
                            farm.builds.remove(b);
                            farm.generation += 1;
                            return;
                        }
                    }
                    // Refused (or a pack is gone): the writer starts over,
                    // uploading what is missing, and tries once more.
                    farm.commits_refused += 1;
                    drop(farm);
                    build.started = self.now();
                    self.confirm(&packs).await;
                }
                // Still refused (a fence is held, or was released just now):
                // the build fails with a retryable error and commits nothing.
                self.farm.lock().await.builds.remove(b);
            }
            Op::Layer { key, content } => {
                let started = self.now();
                let layer = layer_bytes(*content);
                self.confirm(std::slice::from_ref(&layer)).await;
                let mut farm = self.farm.lock().await;
                if farm.refuses(&[Digest::of(&layer)], started) {
                    // The result is not cached; the step itself succeeded.
                    farm.commits_refused += 1;
                    return;
                }
                farm.action_cache.insert(*key, Digest::of(&layer));
                farm.generation += 1;
            }
            Op::Prune { ns } => {
                self.farm.lock().await.heads.remove(ns);
            }
            Op::Evict { key } => {
                self.farm.lock().await.action_cache.remove(key);
            }
            Op::Tick { secs } => {
                self.clock.fetch_add(*secs, Ordering::SeqCst);
            }
            Op::Gc { during } => {
                self.farm.lock().await.during_gc = during.iter().rev().cloned().collect();
                let started = UNIX_EPOCH + Duration::from_secs(self.now());
                let mut options = CollectOptions::new(started, Duration::from_secs(GRACE_SECS));
                options.page = 4;
                options.batch = 3;
                collect(&self.store, self, options).await.unwrap();
                // Whatever the collector did not reach runs now.
                let rest: Vec<Op> = std::mem::take(&mut self.farm.lock().await.during_gc);
                for op in rest.iter().rev() {
                    Box::pin(self.apply(op)).await;
                }
            }
        }
    }

    /// Runs the next operation queued to happen during the collection.
    async fn interleave(&self) {
        let next = self.farm.lock().await.during_gc.pop();
        if let Some(op) = next {
            Box::pin(self.apply(&op)).await;
        }
    }

    /// Every blob some root reaches, by the model (not by the collector).
    async fn reachable(&self) -> BTreeSet<Digest> {
        let farm = self.farm.lock().await;
        let mut out: BTreeSet<Digest> = farm.action_cache.values().copied().collect();
        let mut snaps: Vec<Digest> = farm.builds.values().filter_map(|b| b.base).collect();
        snaps.extend(farm.heads.values().copied());
        drop(farm);
        for d in snaps {
            out.insert(d);
            if let Ok(s) = Snapshot::load(&self.store, d).await {
                out.extend(s.manifest.packs());
            }
        }
        out
    }

    async fn assert_every_reachable_blob_is_stored(&self, after: &Op) {
        let held = self.stored().await;
        let farm = self.farm.lock().await;
        let mut roots: Vec<Digest> = farm.heads.values().copied().collect();
        roots.extend(farm.builds.values().filter_map(|b| b.base));
        for (key, layer) in &farm.action_cache {
            assert!(held.contains(layer), "after {after:?}: layer {layer} of action-cache entry {key} was deleted");
        }
        drop(farm);
        for root in roots {
            let snap = Snapshot::load(&self.store, root).await.unwrap_or_else(|e| panic!("after {after:?}: snapshot {root}: {e}"));
            for p in snap.manifest.packs() {
                assert!(held.contains(&p), "after {after:?}: pack {p} of live snapshot {root} was deleted");
            }
        }
    }
}

#[async_trait::async_trait]
impl RootSource for World {
    async fn roots(&self) -> Result<Roots, Box<dyn std::error::Error + Send + Sync>> {
        self.interleave().await;
        Ok(self.farm.lock().await.roots())
    }

    async fn fence(&self, generation: u64, batch: &[Digest]) -> Result<Fence, Box<dyn std::error::Error + Send + Sync>> {
        self.interleave().await;
        let mut farm = self.farm.lock().await;
        if farm.generation != generation {
            return Ok(Fence::Stale);
        }
        for d in batch {
            farm.fences.insert(*d, None);
        }
        Ok(Fence::Held)
    }

    async fn release(&self, batch: &[Digest]) {
        // A build commits between the deletes and the release.
        self.interleave().await;
        let now = self.now();
        let mut farm = self.farm.lock().await;
        for d in batch {
            farm.fences.insert(*d, Some(now));
        }
    }
}

fn files() -> impl Strategy<Value = BTreeSet<u8>> {
    proptest::collection::btree_set(0u8..12, 1..5)
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u8..3, files()).prop_map(|(b, ns, files)| Op::Start { b, ns, files }),
        3 => (0u8..3).prop_map(|b| Op::Finish { b }),
        2 => (0u8..4, 0u8..8).prop_map(|(key, content)| Op::Layer { key, content }),
        1 => (0u8..3).prop_map(|ns| Op::Prune { ns }),
        1 => (0u8..4).prop_map(|key| Op::Evict { key }),
        2 => (1u64..40).prop_map(|secs| Op::Tick { secs }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => simple_op(),
        2 => proptest::collection::vec(simple_op(), 0..6).prop_map(|during| Op::Gc { during }),
    ]
}

/// Runs `history` checking the invariant after every step; returns how many
/// commits the farm refused.
fn run(history: Vec<Op>) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let world = World::new();
        for op in &history {
            world.apply(op).await;
            world.assert_every_reachable_blob_is_stored(op).await;
        }
        // Quiet: every build commits, the grace period and the existence
        // TTL pass, and a collection leaves exactly what is reachable.
        for b in 0..3 {
            world.apply(&Op::Finish { b }).await;
        }
        world.apply(&Op::Tick { secs: GRACE_SECS + EXISTENCE_TTL_SECS + 1 }).await;
        let last = Op::Gc { during: vec![] };
        world.apply(&last).await;
        world.assert_every_reachable_blob_is_stored(&last).await;
        assert_eq!(world.stored().await, world.reachable().await, "a quiet collection past the grace period leaves only what is reachable");
        world.farm.lock().await.commits_refused
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn no_collection_deletes_a_blob_a_live_root_reaches(history in proptest::collection::vec(op(), 1..40)) {
        run(history);
    }
}

#[test]
fn a_head_committed_during_a_collection_survives_it() {
    let files: BTreeSet<u8> = [1, 2, 3].into();
    let refused = run(vec![
        // The packs are uploaded, then age past the grace period unreferenced.
        Op::Start { b: 0, ns: 0, files: files.clone() },
        Op::Tick { secs: 100 },
        // A second build finds them present (no upload: they stay old) and
        // commits its head while the collection re-checks its batch.
        Op::Gc { during: vec![Op::Start { b: 1, ns: 1, files: files.clone() }, Op::Finish { b: 1 }] },
    ]);
    assert_eq!(refused, 0);
}

#[test]
fn a_commit_between_the_reread_and_the_fence_makes_the_fence_stale() {
    let files: BTreeSet<u8> = [6, 7, 8].into();
    let refused = run(vec![
        Op::Start { b: 0, ns: 0, files: files.clone() },
        Op::Tick { secs: 100 },
        Op::Start { b: 1, ns: 1, files },
        // Quiet first mark and re-read; the commit lands just before the fence.
        Op::Gc { during: vec![Op::Tick { secs: 0 }, Op::Tick { secs: 0 }, Op::Finish { b: 1 }] },
    ]);
    assert_eq!(refused, 0, "the head was committed before the fence, so it was seen, not refused");
}

#[test]
fn a_commit_while_its_blobs_are_being_deleted_is_refused() {
    let files: BTreeSet<u8> = [4, 5, 9].into();
    let refused = run(vec![
        Op::Start { b: 0, ns: 0, files: files.clone() },
        Op::Tick { secs: 100 },
        Op::Start { b: 1, ns: 1, files },
        // Quiet first mark, re-read and fence; the commit lands after the
        // deletes, before the release.
        Op::Gc { during: vec![Op::Tick { secs: 0 }, Op::Tick { secs: 0 }, Op::Tick { secs: 0 }, Op::Finish { b: 1 }] },
    ]);
    assert!(refused > 0, "the commit naming deleted blobs was refused");
}

#[test]
fn the_collector_frees_old_garbage_and_keeps_young_blobs() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let world = World::new();
        let old = world.store.put_bytes(Bytes::from_static(b"old garbage")).await.unwrap();
        world.clock.store(100, Ordering::SeqCst);
        let young = world.store.put_bytes(Bytes::from_static(b"young garbage")).await.unwrap();
        world.apply(&Op::Layer { key: 0, content: 1 }).await;
        let started = UNIX_EPOCH + Duration::from_secs(110);
        let report = collect(&world.store, &world, CollectOptions::new(started, Duration::from_secs(GRACE_SECS))).await.unwrap();
        assert_eq!(world.stored().await, [young, Digest::of(&layer_bytes(1))].into());
        assert_eq!((report.objects_scanned, report.live_objects, report.young_objects, report.deleted_objects), (3, 1, 1, 1));
        assert_eq!(report.freed_bytes, old.size());
    });
}

#[test]
fn a_dry_run_deletes_nothing_and_reports_what_it_would_free() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let world = World::new();
        let old = world.store.put_bytes(Bytes::from_static(b"old garbage")).await.unwrap();
        let mut options = CollectOptions::new(UNIX_EPOCH + Duration::from_secs(1000), Duration::from_secs(GRACE_SECS));
        options.dry_run = true;
        let report = collect(&world.store, &world, options).await.unwrap();
        assert_eq!(world.stored().await, [old].into());
        assert_eq!((report.deleted_objects, report.freed_bytes), (1, old.size()));
    });
}

#[test]
fn a_root_whose_manifest_is_missing_is_reported() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let world = World::new();
        let gone = Digest::of(b"a manifest nobody stored");
        world.farm.lock().await.heads.insert(0, gone);
        let report = collect(&world.store, &world, CollectOptions::new(SystemTime::now(), Duration::from_secs(GRACE_SECS))).await.unwrap();
        assert_eq!(report.missing_roots, vec![gone]);
    });
}

#[test]
fn verify_names_the_live_blobs_the_store_lacks_and_only_those() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let world = World::new();
        world.apply(&Op::Layer { key: 0, content: 1 }).await;
        world.apply(&Op::Layer { key: 1, content: 2 }).await;
        let lost = Digest::of(&layer_bytes(2));
        world.store.delete(lost).await.unwrap();
        let mut options = CollectOptions::new(SystemTime::now(), Duration::from_secs(GRACE_SECS));
        options.dry_run = true;
        options.verify = true;
        let report = collect(&world.store, &world, options).await.unwrap();
        assert_eq!(report.missing_live, vec![lost]);
        assert_eq!(report.verified_objects, 2);
    });
}
