//! [`Merger`] over the snapshot crate's three-way merge: what a real
//! coordinator uses for concurrent commits to one cache mount.

use std::sync::Arc;

use rbk_snapshot::{Manifest, Snapshot, merge};
use rbk_store::{Digest, Store};

use crate::cache_heads::{MergeError, MergedSnapshot, Merger};

#[derive(Debug, Clone)]
pub struct SnapshotMerger {
    store: Arc<dyn Store>,
}

impl SnapshotMerger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl Merger for SnapshotMerger {
    async fn merge(&self, base: Option<Digest>, earlier: Digest, later: Digest) -> Result<MergedSnapshot, MergeError> {
        let load = |d: Digest| async move {
            Snapshot::load(&*self.store, d).await.map_err(|e| MergeError::Load { snapshot: d, source: e.into() })
        };
        let (earlier_digest, later_digest) = (earlier, later);
        let (earlier, later) = (load(earlier).await?, load(later).await?);
        let base = match base {
            Some(b) => (*load(b).await?.manifest).clone(),
            // No common ancestor known: an empty base makes the merge a union.
            None => Manifest { entries: Vec::new(), ..(*later.manifest).clone() },
        };
        // The snapshot merge lets the later commit win a conflicting path by
        // its capture time; `later` here is the commit that arrived last.
        let merged = merge(&base, &later.manifest, &earlier.manifest);
        let total_bytes = merged.content_bytes();
        let (snapshot, _) = Snapshot::commit(&*self.store, merged)
            .await
            .map_err(|e| MergeError::Commit { earlier: earlier_digest, later: later_digest, source: e.into() })?;
        Ok(MergedSnapshot { snapshot: snapshot.digest, total_bytes })
    }

    async fn packs(&self, snapshot: Digest) -> Result<Vec<Digest>, MergeError> {
        match Snapshot::load(&*self.store, snapshot).await {
            Ok(s) => Ok(s.manifest.packs().into_iter().collect()),
            // A manifest that is not stored names no packs; the fence still
            // sees the snapshot digest itself (a manifest the collector
            // deleted is refused by it), and committing a head to a missing
            // snapshot stays what it was before the collector existed.
            Err(rbk_snapshot::SnapshotError::Store(rbk_store::StoreError::NotFound(_))) => Ok(Vec::new()),
            Err(e) => Err(MergeError::Load { snapshot, source: e.into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_snapshot::{CaptureOptions, capture};
    use rbk_store::FilesystemStore;

    async fn snap(store: &Arc<dyn Store>, files: &[(&str, &str)]) -> Digest {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        capture(store.clone(), dir.path(), &CaptureOptions::new("team")).await.unwrap().0.digest
    }

    fn names(s: &Snapshot) -> Vec<String> {
        s.manifest.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).filter(|p| !p.is_empty() && p != ".").collect()
    }

    #[tokio::test]
    async fn concurrent_captures_merge_without_losing_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FilesystemStore::open(tmp.path()).await.unwrap());
        let base = snap(&store, &[("old", "0")]).await;
        let a = snap(&store, &[("old", "0"), ("a.whl", "A")]).await;
        let b = snap(&store, &[("old", "0"), ("b.whl", "B")]).await;
        let m = SnapshotMerger::new(store.clone()).merge(Some(base), a, b).await.unwrap();
        let merged = Snapshot::load(&*store, m.snapshot).await.unwrap();
        assert_eq!(names(&merged), ["a.whl", "b.whl", "old"]);
        assert_eq!(m.total_bytes, 3);
        let union = SnapshotMerger::new(store.clone()).merge(None, a, b).await.unwrap();
        assert_eq!(names(&Snapshot::load(&*store, union.snapshot).await.unwrap()), ["a.whl", "b.whl", "old"]);
    }

    #[tokio::test]
    async fn an_unknown_snapshot_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FilesystemStore::open(tmp.path()).await.unwrap());
        let a = snap(&store, &[("x", "1")]).await;
        let missing = Digest::of(b"nope");
        let err = SnapshotMerger::new(store).merge(None, a, missing).await.unwrap_err();
        assert!(matches!(err, MergeError::Load { snapshot, .. } if snapshot == missing), "{err}");
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
    }
}
