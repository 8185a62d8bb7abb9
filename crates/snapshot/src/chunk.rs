//! Splitting file contents into chunks.
//!
//! Small files are one chunk. Files above [`ChunkParams::threshold`] are cut
//! with content-defined chunking (FastCDC 2020): boundaries depend on the
//! bytes around them, so an edit in the middle of a large file changes only
//! the chunks around the edit, and only those are uploaded again.

use std::io::Read;

use rbk_store::{Digest, Hasher};

#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    /// Files up to this size are a single chunk.
    pub threshold: u64,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    /// 1 MiB average chunks: large enough that per-chunk overhead (a manifest
    /// record, a zstd frame, a range in a GET) is negligible, small enough
    /// that an edit re-uploads little and a big file restores in parallel.
    fn default() -> Self {
        Self { threshold: 2 << 20, min: 256 << 10, avg: 1 << 20, max: 4 << 20 }
    }
}

/// One piece of a file, with its bytes.
pub struct RawChunk {
    pub digest: Digest,
    pub data: Vec<u8>,
}

/// Reads `reader` to its end and returns the whole content's digest and its
/// chunks, in order.
pub fn chunk_reader(mut reader: impl Read, size_hint: u64, params: &ChunkParams) -> std::io::Result<(Digest, Vec<RawChunk>)> {
    if size_hint <= params.threshold {
        let mut data = Vec::with_capacity(size_hint as usize);
        reader.read_to_end(&mut data)?;
        if data.len() as u64 > params.threshold {
            // The file grew while we read it; chunk what we got.
            return Ok(chunk_bytes(data, params));
        }
        let digest = Digest::of(&data);
        let chunks = if data.is_empty() { Vec::new() } else { vec![RawChunk { digest, data }] };
        return Ok((digest, chunks));
    }
    let mut chunks = Vec::new();
    let digest = stream_chunks(reader, params, |c| {
        chunks.push(c);
        Ok(())
    })?;
    Ok((digest, chunks))
}

/// Cuts `reader` into content-defined chunks and hands each to `each` as
/// soon as it is cut, so that a file of any size is chunked in bounded
/// memory (capture streams large files through this). Returns the whole
/// content's digest.
pub fn stream_chunks(reader: impl Read, params: &ChunkParams, mut each: impl FnMut(RawChunk) -> std::io::Result<()>) -> std::io::Result<Digest> {
    let mut whole = Hasher::new();
    for c in fastcdc::v2020::StreamCDC::new(reader, params.min, params.avg, params.max) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        whole.update(&c.data);
        each(RawChunk { digest: Digest::of(&c.data), data: c.data })?;
    }
    Ok(whole.finish())
}

fn chunk_bytes(data: Vec<u8>, params: &ChunkParams) -> (Digest, Vec<RawChunk>) {
    let digest = Digest::of(&data);
    let chunks = fastcdc::v2020::FastCDC::new(&data, params.min, params.avg, params.max)
        .map(|c| {
            let piece = data[c.offset..c.offset + c.length].to_vec();
            RawChunk { digest: Digest::of(&piece), data: piece }
        })
        .collect();
    (digest, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_one_chunk_and_empty_files_none() {
        let p = ChunkParams::default();
        let (d, c) = chunk_reader(&b"hello"[..], 5, &p).unwrap();
        assert_eq!((d, c.len()), (Digest::of(b"hello"), 1));
        let (d, c) = chunk_reader(&b""[..], 0, &p).unwrap();
        assert_eq!((d, c.len()), (Digest::of(b""), 0));
    }

    #[test]
    fn streamed_chunks_are_the_chunks_of_the_whole() {
        let p = ChunkParams { threshold: 64 << 10, min: 16 << 10, avg: 32 << 10, max: 64 << 10 };
        let data = rbk_testsupport::incompressible(1 << 20, 3);
        let mut streamed = Vec::new();
        let digest = stream_chunks(&data[..], &p, |c| {
            streamed.push(c.digest);
            Ok(())
        })
        .unwrap();
        let (whole, chunks) = chunk_bytes(data.clone(), &p);
        assert_eq!(digest, whole);
        assert_eq!(streamed, chunks.iter().map(|c| c.digest).collect::<Vec<_>>());
        assert!(streamed.len() > 10);
    }

    #[test]
    fn an_edit_in_the_middle_of_a_large_file_changes_only_nearby_chunks() {
        let p = ChunkParams { threshold: 64 << 10, min: 16 << 10, avg: 32 << 10, max: 64 << 10 };
        let a = rbk_testsupport::incompressible(2 << 20, 7);
        let mut b = a.clone();
        b[1 << 20] ^= 0xff;
        let (_, ca) = chunk_reader(&a[..], a.len() as u64, &p).unwrap();
        let (db, cb) = chunk_reader(&b[..], b.len() as u64, &p).unwrap();
        assert_eq!(db, Digest::of(&b));
        let old: std::collections::HashSet<_> = ca.iter().map(|c| c.digest).collect();
        let new_chunks = cb.iter().filter(|c| !old.contains(&c.digest)).count();
        assert!(ca.len() > 30, "expected many chunks, got {}", ca.len());
        assert!(new_chunks <= 2, "{new_chunks} of {} chunks changed for a one-byte edit", cb.len());
        assert_eq!(cb.iter().flat_map(|c| c.data.iter().copied()).collect::<Vec<_>>(), b);
    }
}
