use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};

/// The default zstd level: fast enough to keep up with a network store on
/// one core, and most of the ratio higher levels reach on build caches.
pub const DEFAULT_LEVEL: i32 = 3;

/// Stored objects start with this byte when their content follows verbatim.
pub const HEADER_RAW: u8 = 0x00;
/// Stored objects start with this byte when one zstd frame follows.
pub const HEADER_ZSTD: u8 = 0x01;

/// How much of a blob is test-compressed to choose between raw and zstd.
const SAMPLE: usize = 128 * 1024;
/// A sample that shrinks to more than this fraction is stored raw.
const RAW_RATIO: f64 = 0.95;
const OUT_CHUNK: usize = 256 * 1024;

/// Compresses blobs with zstd on their way into `inner`, under the digest of
/// the *uncompressed* content.
///
/// # Stored format
///
/// Every object in `inner` is one header byte followed by a body:
///
/// | header | body |
/// |---|---|
/// | `0x00` raw  | the blob's bytes verbatim |
/// | `0x01` zstd | one zstd frame that inflates to exactly `digest.size()` bytes |
///
/// The choice is made on the first 128 KiB: if zstd shrinks it to no less
/// than 95 %, the blob is stored raw. Already-compressed data (tarballs,
/// wheels, images' gzip layers) thus costs no CPU on read and stays
/// **range-readable**: a range of a raw object is one ranged read of `inner`
/// at `offset + 1`. A range of a zstd object is served by inflating from the
/// start and skipping to `offset` (zstd frames are not seekable), stopping
/// as soon as the range is complete.
///
/// Reads never inflate past `digest.size()` (a decompression bomb is an
/// error naming the digest, not an out-of-memory), and an object that
/// inflates to fewer bytes is an error too. Compression and decompression run
/// on the blocking thread pool so they never stall the async runtime.
#[derive(Debug)]
pub struct CompressedStore<S> {
    inner: S,
    level: i32,
}

impl<S: Store> CompressedStore<S> {
    pub fn new(inner: S, level: i32) -> StoreResult<Self> {
        let range = zstd::compression_level_range();
        if !range.contains(&level) {
            return Err(StoreError::Config(format!(
                "compress.level: {level} is outside zstd's range {}..={}",
                range.start(),
                range.end()
            )));
        }
        Ok(Self { inner, level })
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Reads the header byte and returns it with the rest of the stream.
    async fn split_header(digest: Digest, mut stream: ByteStream) -> StoreResult<(u8, ByteStream)> {
        loop {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if let Some(&header) = chunk.first() {
                        let rest = chunk.slice(1..);
                        return Ok((header, futures::stream::once(async move { Ok(rest) }).chain(stream).boxed()));
                    }
                }
                None => return Err(corrupt_format(digest, "stored object is empty (no header byte)")),
            }
        }
    }
}

fn corrupt_format(digest: Digest, why: impl Into<String>) -> StoreError {
    StoreError::io(digest, "decompressing", io::Error::new(io::ErrorKind::InvalidData, why.into()))
}

fn unknown_header(digest: Digest, header: u8) -> StoreError {
    corrupt_format(digest, format!("unknown header byte {header:#04x} (not written by the compression wrapper?)"))
}

/// Carries a [`StoreError`] through `std::io` and back, so an error from a
/// stream (say, a digest mismatch found by a wrapper above) keeps its kind.
fn to_io(e: StoreError) -> io::Error {
    io::Error::other(e)
}

fn from_io(digest: Digest, context: &str, e: io::Error) -> StoreError {
    if e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
        return *e.into_inner().expect("checked above").downcast::<StoreError>().expect("checked above");
    }
    StoreError::io(digest, context, e)
}

/// Runs `work` on the blocking pool with a synchronous reader over `input`
/// and a sender for its output; the returned stream yields what it sends.
/// Should `work` panic, the stream ends in an error rather than early, so a
/// truncated result can never pass for a whole one.
fn blocking_pipe<F>(digest: Digest, input: ByteStream, work: F) -> ByteStream
where
    F: FnOnce(SyncIoBridge<StreamReader<futures::stream::BoxStream<'static, io::Result<Bytes>>, Bytes>>, &mpsc::Sender<StoreResult<Bytes>>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    // Fused: readers poll again after the end, which a bare stream forbids.
    let reader = SyncIoBridge::new(StreamReader::new(input.map(|r| r.map_err(to_io)).fuse().boxed()));
    let task = tokio::task::spawn_blocking(move || work(reader, &tx));
    let outcome = futures::stream::once(async move {
        task.await.err().map(|e| Err(StoreError::io(digest, "(de)compressing", io::Error::other(format!("worker failed: {e}")))))
    })
    .filter_map(futures::future::ready);
    ReceiverStream::new(rx).chain(outcome).boxed()
}

/// Fills `buf` from `r` as far as it will go; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Inflates a zstd body, yielding the bytes in `[start, end)` of the
/// content, and refusing to produce more than `digest.size()` in total.
fn inflate(digest: Digest, body: ByteStream, start: u64, end: u64) -> ByteStream {
    blocking_pipe(digest, body, move |reader, tx| {
        let result = (|| -> StoreResult<()> {
            let mut dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| StoreError::io(digest, "starting zstd", e))?
                .single_frame();
            let size = digest.size();
            let mut pos = 0u64;
            let mut buf = vec![0u8; OUT_CHUNK];
            loop {
                let n = read_full(&mut dec, &mut buf).map_err(|e| from_io(digest, "decompressing", e))?;
                if n == 0 {
                    break;
                }
                let (lo, hi) = (pos, pos + n as u64);
                pos = hi;
                if pos > size {
                    return Err(corrupt_format(digest, format!("inflates past its declared size of {size} bytes")));
                }
                if hi > start && lo < end {
                    let a = (start.max(lo) - lo) as usize;
                    let b = (end.min(hi) - lo) as usize;
                    if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[a..b]))).is_err() {
                        return Ok(()); // the reader went away
                    }
                }
                if pos >= end && end < size {
                    return Ok(()); // the range is complete; no need to inflate the rest
                }
            }
            if pos != size {
                return Err(corrupt_format(digest, format!("inflates to {pos} bytes, its digest says {size}")));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    })
}

/// Passes a raw body through, refusing more or fewer than `expected` bytes
/// (its last chunk held back until the length is confirmed).
fn exact_length(digest: Digest, body: ByteStream, expected: u64) -> ByteStream {
    crate::held_back::exact_length(body, expected, move |seen| {
        if seen > expected {
            corrupt_format(digest, format!("raw object is longer than {expected} bytes"))
        } else {
            corrupt_format(digest, format!("raw object holds {seen} bytes, expected {expected}"))
        }
    })
}

forward_store!(impl<S> CompressedStore<S> => inner [find_missing, delete, list, list_page] {
    async fn put(&self, digest: Digest, mut data: ByteStream) -> StoreResult<()> {
        let mut first = BytesMut::new();
        while first.len() < SAMPLE {
            match data.next().await {
                Some(chunk) => first.extend_from_slice(&chunk?),
                None => break,
            }
        }
        let first = first.freeze();
        let level = self.level;
        let compressible = !first.is_empty() && {
            let sample = first.slice(..first.len().min(SAMPLE));
            let packed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&sample, level).map(|c| (c.len(), sample.len())))
                .await
                .map_err(|e| StoreError::io(digest, "test-compressing", io::Error::other(e)))?
                .map_err(|e| StoreError::io(digest, "test-compressing", e))?;
            (packed.0 as f64) < RAW_RATIO * packed.1 as f64
        };
        let content = futures::stream::once(async move { Ok(first) }).chain(data).boxed();
        let (header, body) = if compressible {
            let body = blocking_pipe(digest, content, move |reader, tx| {
                let result = (|| -> StoreResult<()> {
                    let mut enc = zstd::stream::read::Encoder::new(reader, level)
                        .map_err(|e| StoreError::io(digest, "starting zstd", e))?;
                    loop {
                        let mut buf = vec![0u8; OUT_CHUNK];
                        let n = read_full(&mut enc, &mut buf).map_err(|e| from_io(digest, "compressing", e))?;
                        if n == 0 {
                            return Ok(());
                        }
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf.into())).is_err() {
                            return Ok(());
                        }
                    }
                })();
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            (HEADER_ZSTD, body)
        } else {
            (HEADER_RAW, content)
        };
        let stream = futures::stream::once(async move { Ok(Bytes::from_static(if header == HEADER_RAW { &[HEADER_RAW] } else { &[HEADER_ZSTD] })) })
            .chain(body)
            .boxed();
        self.inner.put(digest, stream).await
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let size = digest.size();
        let (start, end) = range.resolve(&digest, size)?;
        if range.is_full() {
            let stored = self.inner.get(digest, ByteRange::FULL).await?;
            let (header, body) = Self::split_header(digest, stored).await?;
            return match header {
                HEADER_RAW => Ok(exact_length(digest, body, size)),
                HEADER_ZSTD => Ok(inflate(digest, body, 0, size)),
                other => Err(unknown_header(digest, other)),
            };
        }
        let header = self.inner.get(digest, ByteRange::new(0, 1)).await?;
        let (header, _) = Self::split_header(digest, header).await?;
        match header {
            HEADER_RAW if start == end => Ok(futures::stream::empty().boxed()),
            HEADER_RAW => {
                let body = self.inner.get(digest, ByteRange::new(start + 1, end - start)).await?;
                Ok(exact_length(digest, body, end - start))
            }
            HEADER_ZSTD if start == end => Ok(futures::stream::empty().boxed()),
            HEADER_ZSTD => {
                let stored = self.inner.get(digest, ByteRange::FULL).await?;
                let (_, body) = Self::split_header(digest, stored).await?;
                Ok(inflate(digest, body, start, end))
            }
            other => Err(unknown_header(digest, other)),
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::{StoreExt, stream_from_bytes};
    use std::sync::Arc;

    fn store() -> (Arc<MemoryStore>, CompressedStore<Arc<MemoryStore>>) {
        let mem = Arc::new(MemoryStore::default());
        (mem.clone(), CompressedStore::new(mem, DEFAULT_LEVEL).unwrap())
    }

    fn text(len: usize) -> Bytes {
        (0..len).map(|i| b"compressible text, again and again. "[i % 36]).collect::<Vec<_>>().into()
    }

    fn noise(len: usize) -> Bytes {
        use rand::{Rng, SeedableRng};
        let mut v = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(len as u64).fill(&mut v[..]);
        v.into()
    }

    #[tokio::test]
    async fn compressible_blobs_are_stored_smaller_under_the_same_digest() {
        let (mem, s) = store();
        let data = text(1 << 20);
        let d = s.put_bytes(data.clone()).await.unwrap();
        let stored = mem.get_bytes(d).await.unwrap();
        assert_eq!(stored[0], HEADER_ZSTD);
        assert!(stored.len() < data.len() / 10, "stored {} bytes", stored.len());
        assert_eq!(s.get_bytes(d).await.unwrap(), data);
    }

    #[tokio::test]
    async fn incompressible_blobs_are_stored_raw_behind_one_header_byte() {
        let (mem, s) = store();
        let data = noise(300_000);
        let d = s.put_bytes(data.clone()).await.unwrap();
        let stored = mem.get_bytes(d).await.unwrap();
        assert_eq!(stored[0], HEADER_RAW);
        assert_eq!(&stored[1..], &data[..]);
        assert_eq!(s.get_bytes(d).await.unwrap(), data);
    }

    #[tokio::test]
    async fn empty_and_tiny_blobs_round_trip() {
        let (_, s) = store();
        for data in [Bytes::new(), Bytes::from_static(b"x")] {
            let d = s.put_bytes(data.clone()).await.unwrap();
            assert_eq!(s.get_bytes(d).await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn ranges_are_served_from_raw_and_compressed_objects() {
        let (_, s) = store();
        for data in [text(1 << 20), noise(1 << 20)] {
            let d = s.put_bytes(data.clone()).await.unwrap();
            for (off, len) in [(0u64, 10u64), (12_345, 300_000), ((1 << 20) - 1, 1), (1 << 20, 0), (77, 0)] {
                let got = s.get_range_bytes(d, ByteRange::new(off, len)).await.unwrap();
                assert_eq!(got, data.slice(off as usize..(off + len) as usize), "range {off}+{len}");
            }
            let tail = s.get_range_bytes(d, ByteRange { offset: 1000, length: None }).await.unwrap();
            assert_eq!(tail, data.slice(1000..));
            assert!(matches!(s.get(d, ByteRange::new(1 << 20, 1)).await, Err(StoreError::InvalidRange { .. })));
        }
    }

    /// A get of `digest` fails with an error naming it and saying `what`.
    async fn assert_get_fails_naming(s: &CompressedStore<Arc<MemoryStore>>, digest: Digest, what: &str) {
        let err = s.get_bytes(digest).await.unwrap_err().to_string();
        assert!(err.contains(&digest.to_string()) && err.contains(what), "{err}");
    }

    #[tokio::test]
    async fn refuses_to_inflate_past_the_declared_size() {
        let (mem, s) = store();
        // A tiny frame that inflates to 64 MiB, stored under a 10-byte name.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let digest = Digest::of(b"0123456789");
        let mut stored = vec![HEADER_ZSTD];
        stored.extend_from_slice(&bomb);
        mem.put(digest, stream_from_bytes(stored.into())).await.unwrap();
        assert_get_fails_naming(&s, digest, "past its declared size").await;
    }

    #[tokio::test]
    async fn a_short_or_unknown_object_is_an_error_naming_the_digest() {
        let (mem, s) = store();
        let digest = Digest::of(b"0123456789");
        mem.put(digest, stream_from_bytes(Bytes::from_static(b"\x00012"))).await.unwrap();
        assert_get_fails_naming(&s, digest, "expected 10").await;
        mem.overwrite(digest, Bytes::from_static(b"\x07abc"));
        assert_get_fails_naming(&s, digest, "unknown header").await;
    }

    #[tokio::test]
    async fn a_failing_input_stream_stores_nothing_and_keeps_its_error() {
        let (mem, s) = store();
        let digest = Digest::of(b"never");
        let failing = futures::stream::iter(vec![
            Ok(text(200_000)),
            Err(StoreError::DigestMismatch { expected: digest, actual: Digest::of(b"other") }),
        ])
        .boxed();
        let err = s.put(digest, failing).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
        assert_eq!(mem.find_missing(&[digest]).await.unwrap(), vec![digest]);
    }

    #[test]
    fn levels_outside_zstds_range_are_refused() {
        let err = CompressedStore::new(MemoryStore::default(), 99).unwrap_err().to_string();
        assert!(err.contains("compress.level"), "{err}");
    }
}
