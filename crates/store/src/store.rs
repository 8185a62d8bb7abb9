use std::fmt::Debug;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

use crate::{Digest, StoreError, StoreResult};

/// A blob's bytes as they arrive. A stream that ends in an error must be
/// treated as failed as a whole: everything it yielded before is suspect.
pub type ByteStream = BoxStream<'static, StoreResult<Bytes>>;

/// A window into a blob, in uncompressed content bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    /// `None` reads to the end.
    pub length: Option<u64>,
}

impl ByteRange {
    pub const FULL: ByteRange = ByteRange { offset: 0, length: None };

    pub fn new(offset: u64, length: u64) -> Self {
        Self { offset, length: Some(length) }
    }

    pub fn is_full(&self) -> bool {
        self.offset == 0 && self.length.is_none()
    }

    /// Resolves the range against a blob of `size` bytes into `(start, end)`
    /// with `end` exclusive, or says why it cannot be served.
    pub fn resolve(&self, digest: &Digest, size: u64) -> StoreResult<(u64, u64)> {
        let end = match self.length {
            None => size,
            Some(len) => self.offset.saturating_add(len),
        };
        if self.offset > size || end > size {
            return Err(StoreError::InvalidRange { digest: *digest, offset: self.offset, length: self.length, size });
        }
        Ok((self.offset, end))
    }
}

/// One blob as a listing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedBlob {
    pub digest: Digest,
    /// Bytes the backend holds for it (compressed, when a compression
    /// wrapper sits above): what deleting it frees.
    pub stored_bytes: u64,
    /// When the backend last wrote it, by the backend's clock. `None` when
    /// the backend cannot say: a garbage collector must then treat the blob
    /// as just written (and keep it).
    pub modified: Option<std::time::SystemTime>,
}

/// A page of a listing, and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub blobs: Vec<ListedBlob>,
    /// Pass as `after` for the next page; `None` when this was the last.
    pub next_after: Option<Digest>,
}

/// The order listings page in: by the digest's text form, which is the
/// order of S3 keys and of file names.
pub fn listing_order(a: &Digest, b: &Digest) -> std::cmp::Ordering {
    a.to_string().cmp(&b.to_string())
}

/// The one interface every backend and wrapper implements.
///
/// Kept deliberately small (NativeLink's lesson): anything richer, such as
/// "put bytes I already hold" or "get all of it", is a default method in
/// [`StoreExt`] built from these five.
///
/// Names are content digests of the *uncompressed* blob; a backend below a
/// compression wrapper stores other bytes under the same name, so backends
/// treat the digest as an opaque key and never check sizes themselves.
#[async_trait::async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Returns the digests in `digests` that this store does not hold, in the
    /// order given. One call for many digests: remote backends batch it.
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>>;

    /// Stores a blob. Either the whole blob becomes visible under `digest`,
    /// or nothing does: a stream that fails part way leaves no partial
    /// object, and an existing blob of that name is left untouched.
    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()>;

    /// Reads all or part of a blob. [`StoreError::NotFound`] when absent.
    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream>;

    /// Removes a blob; removing an absent blob is not an error.
    async fn delete(&self, digest: Digest) -> StoreResult<()>;

    /// Every digest held, for garbage collection. Order is unspecified.
    async fn list(&self) -> StoreResult<Vec<Digest>>;

    /// Up to `limit` blobs whose names come after `after` in
    /// [`listing_order`], with their stored size and age: how a collector
    /// sweeps a store of any size in bounded memory.
    ///
    /// Wrappers must forward it. This default, for backends that have no
    /// better way, lists everything on each call and reports no ages, so a
    /// collector keeps every blob it finds this way.
    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<ListPage> {
        let mut all = self.list().await?;
        all.sort_by(listing_order);
        let start = match &after {
            Some(a) => all.partition_point(|d| listing_order(d, a) != std::cmp::Ordering::Greater),
            None => 0,
        };
        let blobs: Vec<ListedBlob> = all[start..]
            .iter()
            .take(limit.max(1))
            .map(|d| ListedBlob { digest: *d, stored_bytes: d.size(), modified: None })
            .collect();
        let next_after = (start + blobs.len() < all.len()).then(|| blobs.last().map(|b| b.digest)).flatten();
        Ok(ListPage { blobs, next_after })
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        (**self).find_missing(digests).await
    }
    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        (**self).put(digest, data).await
    }
    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        (**self).get(digest, range).await
    }
    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        (**self).delete(digest).await
    }
    async fn list(&self) -> StoreResult<Vec<Digest>> {
        (**self).list().await
    }
    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<ListPage> {
        (**self).list_page(after, limit).await
    }
}

/// Turns bytes already in memory into a [`ByteStream`].
pub fn stream_from_bytes(data: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(data) }).boxed()
}

/// Conveniences over [`Store`] for callers that hold whole blobs in memory.
#[async_trait::async_trait]
pub trait StoreExt: Store {
    /// Hashes `data`, stores it, and returns its digest.
    async fn put_bytes(&self, data: Bytes) -> StoreResult<Digest> {
        let digest = Digest::of(&data);
        self.put(digest, stream_from_bytes(data)).await?;
        Ok(digest)
    }

    /// Reads a range into memory.
    async fn get_range_bytes(&self, digest: Digest, range: ByteRange) -> StoreResult<Bytes> {
        let mut stream = self.get(digest, range).await?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }

    /// Reads a whole blob into memory.
    async fn get_bytes(&self, digest: Digest) -> StoreResult<Bytes> {
        self.get_range_bytes(digest, ByteRange::FULL).await
    }

    async fn contains(&self, digest: Digest) -> StoreResult<bool> {
        Ok(self.find_missing(&[digest]).await?.is_empty())
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
