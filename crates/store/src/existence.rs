use std::fmt::Debug;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};

/// A memory of digests known to exist in a store, consulted before asking
/// the store itself.
///
/// An index may forget anything at any time (eviction, expiry, a Redis
/// restart): the only cost is one more question to the store. It must never
/// claim a blob exists that was deleted, which is why [`ExistenceIndex::forget`]
/// reports failure: a delete whose invalidation cannot be confirmed does
/// not go ahead.
#[async_trait::async_trait]
pub trait ExistenceIndex: Send + Sync + Debug + 'static {
    /// For each digest, whether it is known to exist. Errors count as "not
    /// known": the caller then asks the store.
    async fn known(&self, digests: &[Digest]) -> Vec<bool>;
    /// Records digests the store has just confirmed. Best effort.
    async fn remember(&self, digests: &[Digest]);
    /// Drops a digest; an error means other nodes may still believe it
    /// exists.
    async fn forget(&self, digest: Digest) -> StoreResult<()>;
}

/// Answers `find_missing` from an [`ExistenceIndex`] where it can, and asks
/// `inner` only about the rest.
///
/// Builds check existence of thousands of blobs (every file piece of a
/// snapshot, every layer) on every step; against S3 each check is a HEAD
/// request. A digest enters the index when a put succeeds or the store says
/// it is present, and leaves it when deleted or when a read finds it absent.
///
/// Deleting across nodes: an in-process index on another node cannot be
/// told about a delete, so entries expire after a TTL, and garbage
/// collection must only delete blobs that have been unreferenced for longer
/// than that TTL (a blob nobody references is not being checked for).
#[derive(Debug)]
pub struct ExistenceCacheStore<S> {
    inner: S,
    index: Arc<dyn ExistenceIndex>,
}

impl<S: Store> ExistenceCacheStore<S> {
    pub fn new(inner: S, index: Arc<dyn ExistenceIndex>) -> Self {
        Self { inner, index }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for ExistenceCacheStore<S> {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let known = self.index.known(digests).await;
        let unknown: Vec<Digest> = digests.iter().zip(&known).filter(|(_, k)| !**k).map(|(d, _)| *d).collect();
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let missing = self.inner.find_missing(&unknown).await?;
        let absent: std::collections::HashSet<&Digest> = missing.iter().collect();
        let present: Vec<Digest> = unknown.iter().filter(|d| !absent.contains(d)).copied().collect();
        if !present.is_empty() {
            self.index.remember(&present).await;
        }
        Ok(missing)
    }

    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        self.inner.put(digest, data).await?;
        self.index.remember(&[digest]).await;
        Ok(())
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let result = self.inner.get(digest, range).await;
        if let Err(StoreError::NotFound(_)) = &result {
            // The index was wrong (or the blob went since): stop claiming it.
            let _ = self.index.forget(digest).await;
        }
        result
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        // Forget first, and refuse to delete if that cannot be confirmed:
        // a stale "exists" would let a build skip uploading a blob it needs.
        self.index.forget(digest).await?;
        self.inner.delete(digest).await?;
        // A find_missing racing with the delete may have re-learned it.
        let _ = self.index.forget(digest).await;
        Ok(())
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        self.inner.list().await
    }

    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<crate::ListPage> {
        self.inner.list_page(after, limit).await
    }
}

/// An in-process LRU of recently confirmed digests with a TTL: fast, private
/// to one process, lost on restart.
#[derive(Debug)]
pub struct LruExistenceIndex {
    entries: Mutex<lru::LruCache<Digest, Instant>>,
    ttl: Duration,
}

impl LruExistenceIndex {
    pub fn new(capacity: usize, ttl: Duration) -> StoreResult<Self> {
        let capacity = NonZeroUsize::new(capacity)
            .ok_or_else(|| StoreError::Config("existence_cache.capacity: must be at least 1".into()))?;
        Ok(Self { entries: Mutex::new(lru::LruCache::new(capacity)), ttl })
    }
}

#[async_trait::async_trait]
impl ExistenceIndex for LruExistenceIndex {
    async fn known(&self, digests: &[Digest]) -> Vec<bool> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        digests
            .iter()
            .map(|d| match entries.get(d) {
                Some(at) if now.duration_since(*at) < self.ttl => true,
                Some(_) => {
                    entries.pop(d);
                    false
                }
                None => false,
            })
            .collect()
    }

    async fn remember(&self, digests: &[Digest]) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        for d in digests {
            entries.put(*d, now);
        }
    }

    async fn forget(&self, digest: Digest) -> StoreResult<()> {
        self.entries.lock().unwrap().pop(&digest);
        Ok(())
    }
}

/// Asks several indexes in turn (say, an in-process LRU in front of Redis):
/// a digest is known if any knows it; remembering and forgetting go to all.
#[derive(Debug)]
pub struct TieredExistenceIndex {
    tiers: Vec<Arc<dyn ExistenceIndex>>,
}

impl TieredExistenceIndex {
    pub fn new(tiers: Vec<Arc<dyn ExistenceIndex>>) -> Self {
        Self { tiers }
    }
}

#[async_trait::async_trait]
impl ExistenceIndex for TieredExistenceIndex {
    async fn known(&self, digests: &[Digest]) -> Vec<bool> {
        let mut known = vec![false; digests.len()];
        for (i, tier) in self.tiers.iter().enumerate() {
            let ask: Vec<Digest> = digests.iter().zip(&known).filter(|(_, k)| !**k).map(|(d, _)| *d).collect();
            if ask.is_empty() {
                break;
            }
            let answers = tier.known(&ask).await;
            let found: Vec<Digest> = ask.iter().zip(&answers).filter(|(_, a)| **a).map(|(d, _)| *d).collect();
            // Teach the faster tiers what a slower one knew.
            for faster in &self.tiers[..i] {
                faster.remember(&found).await;
            }
            let mut answers = answers.into_iter();
            for k in known.iter_mut().filter(|k| !**k) {
                *k = answers.next().unwrap_or(false);
            }
        }
        known
    }

    async fn remember(&self, digests: &[Digest]) {
        futures::stream::iter(&self.tiers).for_each(|t| t.remember(digests)).await;
    }

    async fn forget(&self, digest: Digest) -> StoreResult<()> {
        for t in &self.tiers {
            t.forget(digest).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, StoreExt};
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the `find_missing` questions that reach the backing store.
    #[derive(Debug, Default)]
    struct Counting {
        inner: MemoryStore,
        asked: AtomicUsize,
    }

    crate::forward_store!(Counting => inner [put, get, delete, list] {
        async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
            self.asked.fetch_add(digests.len(), Ordering::SeqCst);
            self.inner.find_missing(digests).await
        }
    });

    fn cached(ttl: Duration) -> ExistenceCacheStore<Arc<Counting>> {
        let index = Arc::new(LruExistenceIndex::new(100, ttl).unwrap());
        ExistenceCacheStore::new(Arc::new(Counting::default()), index)
    }

    #[tokio::test]
    async fn a_digest_once_confirmed_is_answered_without_asking_the_store() {
        let s = cached(Duration::from_secs(60));
        let a = s.inner().inner.put_bytes(Bytes::from_static(b"a")).await.unwrap();
        let b = Digest::of(b"b");
        assert_eq!(s.find_missing(&[a, b]).await.unwrap(), vec![b]);
        assert_eq!(s.inner().asked.load(Ordering::SeqCst), 2);
        assert_eq!(s.find_missing(&[a, b]).await.unwrap(), vec![b]);
        assert_eq!(s.inner().asked.load(Ordering::SeqCst), 3, "only the absent digest is asked again");
    }

    #[tokio::test]
    async fn a_put_is_remembered() {
        let s = cached(Duration::from_secs(60));
        let d = s.put_bytes(Bytes::from_static(b"x")).await.unwrap();
        assert!(s.find_missing(&[d]).await.unwrap().is_empty());
        assert_eq!(s.inner().asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn delete_invalidates() {
        let s = cached(Duration::from_secs(60));
        let d = s.put_bytes(Bytes::from_static(b"x")).await.unwrap();
        s.delete(d).await.unwrap();
        assert_eq!(s.find_missing(&[d]).await.unwrap(), vec![d]);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let s = cached(Duration::from_millis(1));
        let d = s.put_bytes(Bytes::from_static(b"x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(s.find_missing(&[d]).await.unwrap().is_empty());
        assert_eq!(s.inner().asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_lru_evicts_beyond_its_capacity() {
        let index = LruExistenceIndex::new(2, Duration::from_secs(60)).unwrap();
        let ds: Vec<Digest> = (0..3u8).map(|i| Digest::of(&[i])).collect();
        index.remember(&ds).await;
        assert_eq!(index.known(&ds).await, vec![false, true, true]);
    }

    #[tokio::test]
    async fn a_read_that_finds_nothing_drops_the_stale_entry() {
        let s = cached(Duration::from_secs(60));
        let d = s.put_bytes(Bytes::from_static(b"x")).await.unwrap();
        s.inner().inner.delete(d).await.unwrap(); // behind the cache's back
        assert!(s.get(d, ByteRange::FULL).await.is_err());
        assert_eq!(s.find_missing(&[d]).await.unwrap(), vec![d]);
    }

    #[tokio::test]
    async fn a_tiered_index_teaches_its_faster_tier() {
        let fast = Arc::new(LruExistenceIndex::new(10, Duration::from_secs(60)).unwrap());
        let slow = Arc::new(LruExistenceIndex::new(10, Duration::from_secs(60)).unwrap());
        let d = Digest::of(b"d");
        slow.remember(&[d]).await;
        let tiered = TieredExistenceIndex::new(vec![fast.clone(), slow]);
        assert_eq!(tiered.known(&[Digest::of(b"e"), d]).await, vec![false, true]);
        assert_eq!(fast.known(&[d]).await, vec![true]);
    }
}
