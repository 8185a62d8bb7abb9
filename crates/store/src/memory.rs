use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};

/// Blobs in a hash map: for unit tests of wrappers and of code built on the
/// store, where a real backend would only add setup. Holds everything in
/// memory, so it is not offered in configuration.
#[derive(Default)]
pub struct MemoryStore {
    blobs: Mutex<HashMap<Digest, (Bytes, SystemTime)>>,
    /// What stamps a blob's `modified` when it is first put; `None`: the
    /// system clock.
    clock: Option<Box<dyn Fn() -> SystemTime + Send + Sync>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("blobs", &self.len()).finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store whose blobs are stamped by `clock` instead of the system
    /// clock: a test's logical clock, so that ages (a collector's grace
    /// period) pass without sleeping.
    pub fn with_clock(clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        MemoryStore { blobs: Mutex::default(), clock: Some(Box::new(clock)) }
    }

    fn now(&self) -> SystemTime {
        self.clock.as_ref().map_or_else(SystemTime::now, |c| c())
    }

    /// Replaces a blob's stored bytes without any check: for tests that
    /// corrupt data on purpose.
    pub fn overwrite(&self, digest: Digest, data: Bytes) {
        let now = self.now();
        self.blobs.lock().unwrap().insert(digest, (data, now));
    }

    pub fn len(&self) -> usize {
        self.blobs.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let blobs = self.blobs.lock().unwrap();
        Ok(digests.iter().filter(|d| !blobs.contains_key(d)).copied().collect())
    }

    async fn put(&self, digest: Digest, mut data: ByteStream) -> StoreResult<()> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let now = self.now();
        self.blobs.lock().unwrap().entry(digest).or_insert_with(|| (buf.freeze(), now));
        Ok(())
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let data = self.blobs.lock().unwrap().get(&digest).map(|b| b.0.clone()).ok_or(StoreError::NotFound(digest))?;
        let (start, end) = range.resolve(&digest, data.len() as u64)?;
        Ok(crate::stream_from_bytes(data.slice(start as usize..end as usize)))
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        self.blobs.lock().unwrap().remove(&digest);
        Ok(())
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        Ok(self.blobs.lock().unwrap().keys().copied().collect())
    }

    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<crate::ListPage> {
        let blobs = self.blobs.lock().unwrap();
        let mut all: Vec<crate::ListedBlob> = blobs
            .iter()
            .filter(|(d, _)| after.is_none_or(|a| crate::listing_order(d, &a).is_gt()))
            .map(|(d, (data, at))| crate::ListedBlob { digest: *d, stored_bytes: data.len() as u64, modified: Some(*at) })
            .collect();
        all.sort_by(|a, b| crate::listing_order(&a.digest, &b.digest));
        let more = all.len() > limit.max(1);
        all.truncate(limit.max(1));
        let next_after = if more { all.last().map(|b| b.digest) } else { None };
        Ok(crate::ListPage { blobs: all, next_after })
    }
}
