use bytes::Bytes;

use crate::held_back::{self, BodyCheck, held_back};
use crate::{ByteRange, ByteStream, Digest, Hasher, Store, StoreError, StoreResult};

/// Checks every blob against its name, on the way in and on the way out.
///
/// * **put**: the bytes offered must hash to the digest they are stored
///   under; otherwise the put fails with [`StoreError::DigestMismatch`] and,
///   because the stream handed to `inner` ends in that error, `inner`
///   stores nothing (every store's put is all-or-nothing).
/// * **full get**: blake3 is recomputed as the bytes flow. The last chunk is
///   held back until the hash is checked, so a corrupt blob never reaches
///   its consumer whole: its stream ends in [`StoreError::Corrupt`] naming
///   the digest instead of its final bytes (and by the [`ByteStream`]
///   contract, a stream ending in an error is discarded entirely).
/// * **ranged get**: a slice cannot be checked against the whole blob's hash
///   without reading the whole blob, which would defeat the point of a
///   range. Its *length* can be, since the digest carries the blob's size:
///   a slice that comes back shorter or longer than the range resolved
///   against that size (a body cut short, a blob truncated on disk) ends in
///   [`StoreError::Corrupt`]. The bytes themselves are checked by the one
///   consumer of ranges, the snapshot packs, which names each piece it reads
///   by its own digest and verifies it (`Digest::of(piece)`), which is both
///   cheaper and finer.
#[derive(Debug)]
pub struct VerifyingStore<S> {
    inner: S,
}

impl<S: Store> VerifyingStore<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// Why the bytes seen do not match the digest: the caller builds the error.
type OnMismatch = fn(Digest, Digest) -> StoreError;

/// Passes `data` through while hashing it, holding back the last chunk
/// until the digest is confirmed; yields `on_mismatch(expected, actual)`
/// instead when it is not. Stops early once more bytes than the digest's
/// size have gone by.
fn checked(expected: Digest, data: ByteStream, on_mismatch: OnMismatch) -> ByteStream {
    held_back(data, Hashed { expected, hasher: Hasher::new(), on_mismatch })
}

struct Hashed {
    expected: Digest,
    hasher: Hasher,
    on_mismatch: OnMismatch,
}

impl BodyCheck for Hashed {
    fn chunk(&mut self, chunk: &Bytes) -> StoreResult<()> {
        self.hasher.update(chunk);
        if self.hasher.bytes_so_far() > self.expected.size() {
            // Do not hash the rest: it is already too long.
            let actual = Digest::new([0; 32], self.hasher.bytes_so_far());
            return Err((self.on_mismatch)(self.expected, actual));
        }
        Ok(())
    }

    fn end(&mut self) -> StoreResult<()> {
        let actual = self.hasher.finish();
        if actual != self.expected {
            return Err((self.on_mismatch)(self.expected, actual));
        }
        Ok(())
    }
}

/// Passes a ranged read through, holding back its last chunk until exactly
/// `want` bytes have gone by; a stream that ends early or runs long ends in
/// [`StoreError::Corrupt`] instead.
fn exact_length(digest: Digest, want: u64, data: ByteStream) -> ByteStream {
    // The actual hash of a slice is unknown; the size says what went wrong.
    held_back::exact_length(data, want, move |seen| StoreError::Corrupt { digest, actual: Digest::new([0; 32], seen) })
}

/// A put whose bytes are not the blob its digest names.
fn mismatch(expected: Digest, actual: Digest) -> StoreError {
    StoreError::DigestMismatch { expected, actual }
}

/// A stored blob whose bytes are not the blob its digest names.
fn corrupt(digest: Digest, actual: Digest) -> StoreError {
    StoreError::Corrupt { digest, actual }
}

forward_store!(impl<S> VerifyingStore<S> => inner [find_missing, delete, list, list_page] {
    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        self.inner.put(digest, checked(digest, data, mismatch)).await
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        if range.is_full() {
            let stream = self.inner.get(digest, range).await?;
            return Ok(checked(digest, stream, corrupt));
        }
        // Refused against the size the name promises, before asking below.
        let (start, end) = range.resolve(&digest, digest.size())?;
        let stream = match self.inner.get(digest, range).await {
            Ok(s) => s,
            // In range for the blob its name describes, out of range for
            // what is stored: the stored blob is not that blob.
            Err(StoreError::InvalidRange { size, .. }) => {
                return Err(StoreError::Corrupt { digest, actual: Digest::new([0; 32], size) });
            }
            Err(e) => return Err(e),
        };
        Ok(exact_length(digest, end - start, stream))
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, StoreExt, stream_from_bytes};
    use futures::StreamExt;
    use std::sync::Arc;

    fn store() -> (Arc<MemoryStore>, VerifyingStore<Arc<MemoryStore>>) {
        let mem = Arc::new(MemoryStore::default());
        (mem.clone(), VerifyingStore::new(mem))
    }

    fn chunked(parts: &[&'static [u8]]) -> ByteStream {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()).boxed()
    }

    #[tokio::test]
    async fn intact_blobs_read_back_whole_in_several_chunks() {
        let (_, s) = store();
        let d = Digest::of(b"hello world");
        s.put(d, chunked(&[b"hel", b"lo ", b"world"])).await.unwrap();
        assert_eq!(s.get_bytes(d).await.unwrap(), &b"hello world"[..]);
        let e = s.put_bytes(Bytes::new()).await.unwrap();
        assert_eq!(s.get_bytes(e).await.unwrap(), Bytes::new());
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_an_error_naming_the_digest_and_its_last_chunk_is_withheld() {
        let (mem, s) = store();
        let d = s.put_bytes(Bytes::from_static(b"hello world")).await.unwrap();
        mem.overwrite(d, Bytes::from_static(b"hello w0rld"));
        let err = s.get_bytes(d).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
        assert!(err.to_string().contains(&d.to_string()));
        // Served as one chunk: nothing at all reaches the reader before the error.
        let mut stream = s.get(d, ByteRange::FULL).await.unwrap();
        assert!(matches!(stream.next().await, Some(Err(StoreError::Corrupt { .. }))));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_truncated_or_overlong_blob_is_corrupt() {
        let (mem, s) = store();
        let d = s.put_bytes(Bytes::from_static(b"hello world")).await.unwrap();
        mem.overwrite(d, Bytes::from_static(b"hello"));
        assert!(matches!(s.get_bytes(d).await, Err(StoreError::Corrupt { .. })));
        mem.overwrite(d, Bytes::from_static(b"hello world, and more"));
        assert!(matches!(s.get_bytes(d).await, Err(StoreError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn data_that_does_not_match_its_digest_is_refused_and_nothing_is_stored() {
        let (mem, s) = store();
        let named = Digest::of(b"what the caller promised");
        let err = s.put(named, stream_from_bytes(Bytes::from_static(b"something else entirely"))).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { expected, .. } if expected == named), "{err:?}");
        assert!(mem.is_empty());
    }

    #[tokio::test]
    async fn ranged_reads_pass_through() {
        let (_, s) = store();
        let d = s.put_bytes(Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(s.get_range_bytes(d, ByteRange::new(2, 3)).await.unwrap(), &b"234"[..]);
        assert_eq!(s.get_range_bytes(d, ByteRange { offset: 7, length: None }).await.unwrap(), &b"789"[..]);
    }

    #[tokio::test]
    async fn a_ranged_read_of_a_blob_shorter_than_its_name_says_is_corrupt() {
        let (mem, s) = store();
        let d = s.put_bytes(Bytes::from_static(b"0123456789")).await.unwrap();
        mem.overwrite(d, Bytes::from_static(b"01234"));
        let err = s.get_range_bytes(d, ByteRange::new(2, 6)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
        let err = s.get_range_bytes(d, ByteRange { offset: 2, length: None }).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
    }

    #[tokio::test]
    async fn a_ranged_read_past_the_size_in_the_name_is_refused_without_asking_below() {
        let (mem, s) = store();
        let d = Digest::of(b"0123456789");
        mem.overwrite(d, Bytes::from_static(b"0123456789 and more"));
        assert!(matches!(s.get(d, ByteRange::new(8, 5)).await, Err(StoreError::InvalidRange { .. })));
    }
}
