//! The commit protocol for cache mounts.
//!
//! A worker restores a head at generation `g`, runs its step, captures the
//! directory and reports "from `g`, the cache is now `S`". If the head is
//! still at `g`, `S` becomes generation `g + 1`. If another commit landed
//! meanwhile, the coordinator three-way merges (base = the snapshot of
//! generation `g`, earlier = the current head, later = `S`) and tries again
//! from the current generation: an optimistic compare-and-set loop, so
//! `shared` mounts never block and no commit is ever lost.

use std::sync::Arc;

use rbk_store::Digest;

use crate::state::{CacheHead, Command, CoordinatorState, HeadKey, Outcome, Sharing, StateError, query};

/// A merged snapshot and its total size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergedSnapshot {
    pub snapshot: Digest,
    pub total_bytes: u64,
}

/// Three-way merge of directory snapshots. The snapshot crate implements it
/// (union of files; a path changed on both sides takes `later`'s version; a
/// path deleted on one side and changed on the other is kept), so the
/// coordinator does not depend on the snapshot format.
#[async_trait::async_trait]
pub trait Merger: Send + Sync + 'static {
    /// `base` is the common ancestor, `None` when it is no longer known (the
    /// merge is then a union in which `later` wins per path).
    async fn merge(&self, base: Option<Digest>, earlier: Digest, later: Digest) -> Result<MergedSnapshot, MergeError>;

    /// The blobs a snapshot's manifest names (its packs), which a commit
    /// makes reachable and the store collector's fence must see
    /// (`gc_fence.rs`). The default, for mergers of test trees, names none.
    async fn packs(&self, _snapshot: Digest) -> Result<Vec<Digest>, MergeError> {
        Ok(Vec::new())
    }
}

/// The error of a [`Merger`]'s own failure (its store, its format), boxed:
/// the coordinator does not know the merger's types.
pub type MergeCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a three-way merge failed, naming the snapshot it was at.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// One of the snapshots to merge could not be read.
    #[error("loading snapshot {snapshot}: {source}")]
    Load { snapshot: Digest, source: MergeCause },
    /// The merged snapshot could not be stored.
    #[error("committing the merge of {earlier} and {later}: {source}")]
    Commit { earlier: Digest, later: Digest, source: MergeCause },
}

#[derive(Debug, thiserror::Error)]
pub enum CacheHeadError {
    #[error("cache {head}: merging {later} into head {earlier}: {source}")]
    Merge { head: HeadKey, earlier: Digest, later: Digest, source: MergeError },
    #[error("cache {head}: {} blob(s) of the commit (first: {}) were being deleted by the store collector; retry", blobs.len(), blobs.first().map(|d| d.to_string()).unwrap_or_default())]
    Fenced { head: HeadKey, blobs: Vec<Digest> },
    #[error("cache {head}: gave up after {attempts} commit attempts; the head keeps moving")]
    Contended { head: HeadKey, attempts: u32 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where a commit ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub snapshot: Digest,
    pub generation: u64,
    /// Whether a merge with a concurrent commit was needed.
    pub merged: bool,
}

/// Cache heads: commits, and leases for `locked` and `private` mounts.
#[derive(Clone)]
pub struct CacheHeads {
    state: Arc<dyn CoordinatorState>,
    merger: Arc<dyn Merger>,
}

/// Bounds the compare-and-set loop; every round merges one more concurrent
/// commit, so this is only reached under pathological contention.
const MAX_COMMIT_ATTEMPTS: u32 = 64;

impl CacheHeads {
    pub fn new(state: Arc<dyn CoordinatorState>, merger: Arc<dyn Merger>) -> Self {
        Self { state, merger }
    }

    pub fn head(&self, key: &HeadKey) -> Option<CacheHead> {
        query(&*self.state, |m| m.head(key).cloned())
    }

    /// Commits `snapshot`, captured from the head at `base_generation` (0 if
    /// the worker started empty), merging with whatever landed meanwhile,
    /// by a writer whose work started at `started_ms`: the commit is
    /// refused if the snapshot or one of its packs is fenced by the store
    /// collector against such a writer (`gc_fence.rs`).
    pub async fn commit(
        &self,
        head: &HeadKey,
        base_generation: u64,
        snapshot: Digest,
        total_bytes: u64,
        now_ms: u64,
        started_ms: u64,
    ) -> Result<Committed, CacheHeadError> {
        let (mut base_generation, mut snapshot, mut total_bytes) = (base_generation, snapshot, total_bytes);
        let mut merged = false;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let packs = self.merger.packs(snapshot).await.map_err(|source| CacheHeadError::Merge {
                head: head.clone(),
                earlier: snapshot,
                later: snapshot,
                source,
            })?;
            let cmd = Command::CommitHead { head: head.clone(), base_generation, snapshot, total_bytes, now_ms };
            match self.state.apply(Command::Guarded { started_ms, packs, cmd: Box::new(cmd) }).await? {
                Outcome::Refused { blobs } => return Err(CacheHeadError::Fenced { head: head.clone(), blobs }),
                Outcome::Committed { generation } => return Ok(Committed { snapshot, generation, merged }),
                Outcome::HeadMoved { current } => {
                    if current.snapshot == snapshot {
                        // Someone committed exactly our tree: nothing to add.
                        return Ok(Committed { snapshot, generation: current.generation, merged });
                    }
                    let base = if base_generation == 0 { None } else { current.snapshot_at(base_generation) };
                    let m = self.merger.merge(base, current.snapshot, snapshot).await.map_err(|source| {
                        CacheHeadError::Merge { head: head.clone(), earlier: current.snapshot, later: snapshot, source }
                    })?;
                    snapshot = m.snapshot;
                    total_bytes = m.total_bytes;
                    base_generation = current.generation;
                    merged = true;
                }
                other => unreachable_outcome(other),
            }
        }
        Err(CacheHeadError::Contended { head: head.clone(), attempts: MAX_COMMIT_ATTEMPTS })
    }

    /// Takes the lease a `locked` or `private` mount needs. Returns the slot
    /// to use, or `None` if a `locked` id is held by someone else.
    pub async fn acquire(
        &self,
        namespace: &str,
        cache_id: &str,
        sharing: Sharing,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<u32>, StateError> {
        if sharing == Sharing::Shared {
            return Ok(Some(0));
        }
        let cmd = Command::AcquireLease {
            namespace: namespace.into(),
            cache_id: cache_id.into(),
            sharing,
            holder: holder.into(),
            now_ms,
            ttl_ms,
        };
        Ok(match self.state.apply(cmd).await? {
            Outcome::LeaseGranted { slot } => Some(slot),
            Outcome::LeaseBusy { .. } => None,
            other => unreachable_outcome(other),
        })
    }

    pub async fn renew(&self, holder: &str, now_ms: u64, ttl_ms: u64) -> Result<(), StateError> {
        self.state.apply(Command::RenewLeases { holder: holder.into(), now_ms, ttl_ms }).await.map(drop)
    }

    pub async fn release(&self, holder: &str) -> Result<(), StateError> {
        self.state.apply(Command::ReleaseLeases { holder: holder.into() }).await.map(drop)
    }
}

fn unreachable_outcome(o: Outcome) -> ! {
    // The state machine answers each command with a fixed set of outcomes;
    // anything else is a programming error in state.rs, not bad input.
    panic!("state machine answered with an outcome its command never produces: {o:?}")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use super::*;
    use crate::state::MemoryState;

    /// Snapshots as path → content maps, merged with the documented rules.
    #[derive(Default)]
    pub(crate) struct MapMerger {
        trees: Mutex<HashMap<Digest, BTreeMap<String, String>>>,
    }

    impl MapMerger {
        pub(crate) fn store(&self, tree: BTreeMap<String, String>) -> Digest {
            let d = Digest::of(&serde_json::to_vec(&tree).unwrap());
            self.trees.lock().unwrap().insert(d, tree);
            d
        }

        pub(crate) fn tree(&self, d: Digest) -> BTreeMap<String, String> {
            self.trees.lock().unwrap()[&d].clone()
        }
    }

    #[async_trait::async_trait]
    impl Merger for MapMerger {
        async fn merge(&self, base: Option<Digest>, earlier: Digest, later: Digest) -> Result<MergedSnapshot, MergeError> {
            let (base, earlier, later) = {
                let t = self.trees.lock().unwrap();
                let get = |d: Digest| t.get(&d).cloned().ok_or(MergeError::Load { snapshot: d, source: "unknown snapshot".into() });
                (base.map(get).transpose()?.unwrap_or_default(), get(earlier)?, get(later)?)
            };
            let mut out = earlier.clone();
            for (path, content) in &later {
                out.insert(path.clone(), content.clone());
            }
            // Deleted by `later` and unchanged by `earlier`: stays deleted.
            for (path, content) in &base {
                if !later.contains_key(path) && earlier.get(path) == Some(content) {
                    out.remove(path);
                }
            }
            let total_bytes = out.values().map(|v| v.len() as u64).sum();
            Ok(MergedSnapshot { snapshot: self.store(out), total_bytes })
        }
    }

    fn tree(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn setup() -> (CacheHeads, Arc<MapMerger>) {
        let merger = Arc::new(MapMerger::default());
        (CacheHeads::new(Arc::new(MemoryState::new()), merger.clone()), merger)
    }

    fn head() -> HeadKey {
        HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 }
    }

    #[tokio::test]
    async fn commit_without_contention_needs_no_merge() {
        let (heads, m) = setup();
        let s = m.store(tree(&[("a", "1")]));
        let c = heads.commit(&head(), 0, s, 1, 0, 0).await.unwrap();
        assert_eq!(c, Committed { snapshot: s, generation: 1, merged: false });
    }

    #[tokio::test]
    async fn commit_from_a_stale_generation_merges_both_sides() {
        let (heads, m) = setup();
        let base = m.store(tree(&[("old", "0")]));
        heads.commit(&head(), 0, base, 1, 0, 0).await.unwrap();
        let a = m.store(tree(&[("old", "0"), ("a", "1")]));
        let b = m.store(tree(&[("old", "0"), ("b", "2")]));
        heads.commit(&head(), 1, a, 2, 0, 0).await.unwrap();
        let c = heads.commit(&head(), 1, b, 2, 0, 0).await.unwrap();
        assert!(c.merged);
        assert_eq!(c.generation, 3);
        assert_eq!(m.tree(c.snapshot), tree(&[("old", "0"), ("a", "1"), ("b", "2")]));
        assert_eq!(heads.head(&head()).unwrap().snapshot, c.snapshot);
    }

    #[tokio::test]
    async fn concurrent_commits_all_land_in_the_head() {
        let (heads, m) = setup();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (heads, m) = (heads.clone(), m.clone());
                tokio::spawn(async move {
                    let s = m.store(tree(&[(&format!("file{i}"), "x")]));
                    heads.commit(&head(), 0, s, 1, 0, 0).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let h = heads.head(&head()).unwrap();
        assert_eq!(h.generation, 16);
        let files = m.tree(h.snapshot);
        for i in 0..16 {
            assert!(files.contains_key(&format!("file{i}")), "file{i} lost: {files:?}");
        }
    }

    #[tokio::test]
    async fn a_failing_merge_is_an_error_naming_the_cache() {
        let (heads, m) = setup();
        heads.commit(&head(), 0, m.store(tree(&[("a", "1")])), 1, 0, 0).await.unwrap();
        let unknown = Digest::of(b"not a snapshot the merger knows");
        let err = heads.commit(&head(), 0, unknown, 1, 0, 0).await.unwrap_err();
        assert!(err.to_string().starts_with("cache team/pip: merging"), "{err}");
        assert_eq!(heads.head(&head()).unwrap().generation, 1);
    }

    #[tokio::test]
    async fn locked_lease_is_exclusive_and_shared_never_blocks() {
        let (heads, _) = setup();
        assert_eq!(heads.acquire("t", "apt", Sharing::Locked, "s1", 0, 1000).await.unwrap(), Some(0));
        assert_eq!(heads.acquire("t", "apt", Sharing::Locked, "s2", 0, 1000).await.unwrap(), None);
        assert_eq!(heads.acquire("t", "apt", Sharing::Shared, "s2", 0, 1000).await.unwrap(), Some(0));
        assert_eq!(heads.acquire("u", "apt", Sharing::Locked, "s2", 0, 1000).await.unwrap(), Some(0), "other tenant");
        heads.release("s1").await.unwrap();
        assert_eq!(heads.acquire("t", "apt", Sharing::Locked, "s2", 0, 1000).await.unwrap(), Some(0));
    }
}
