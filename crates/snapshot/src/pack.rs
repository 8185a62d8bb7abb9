//! Packs: many chunks in one store blob, so that many small files do not
//! become many objects.
//!
//! Each chunk is compressed on its own (zstd, or stored raw when that does
//! not help) and appended; the manifest records pack, offset and stored
//! length. Per-chunk compression costs a little ratio against compressing a
//! whole pack, but it is what makes ranged reads work: restore fetches only
//! the byte ranges it needs (coalescing neighbours into one GET), and every
//! chunk can be decompressed and verified against its own digest the moment
//! its bytes arrive, without the rest of the pack. A whole-pack frame would
//! force reading every pack from its start.

use rbk_store::Digest;

use crate::manifest::Codec;

/// Compresses one chunk for a pack.
pub fn encode_chunk(data: &[u8], level: i32) -> (Codec, Vec<u8>) {
    // Tiny chunks rarely shrink enough to pay for a zstd frame header.
    if data.len() >= 64
        && let Ok(z) = zstd::bulk::compress(data, level)
        && z.len() + z.len() / 16 < data.len()
    {
        return (Codec::Zstd, z);
    }
    (Codec::Raw, data.to_vec())
}

/// Decodes a chunk's stored bytes and checks them against its digest.
/// Decompression is capped at the digest's size, so a hostile pack cannot
/// inflate into unbounded memory.
pub fn decode_chunk(codec: Codec, stored: &[u8], expected: &Digest) -> Result<Vec<u8>, String> {
    let mut scratch = Vec::new();
    let data = decode_chunk_into(codec, stored, expected, &mut scratch)?;
    Ok(if codec == Codec::Raw { data.to_vec() } else { scratch })
}

/// [`decode_chunk`] without an allocation per chunk: a raw chunk is checked
/// in place and returned as is, a compressed one is inflated into `scratch`
/// (reused between calls) by this thread's zstd context. Restore decodes
/// one chunk per small file, and creating a zstd context for each cost
/// more than the inflating itself.
pub fn decode_chunk_into<'a>(codec: Codec, stored: &'a [u8], expected: &Digest, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
    let data: &[u8] = match codec {
        Codec::Raw => stored,
        Codec::Zstd => {
            let cap = usize::try_from(expected.size()).map_err(|_| format!("declared size {} does not fit in memory", expected.size()))?;
            scratch.clear();
            scratch.reserve(cap);
            let n = DCTX.with(|d| -> Result<usize, String> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
                }
                let d = d.as_mut().expect("just set");
                // Inflating writes at most the spare capacity, which is
                // `cap` or what an earlier (verified) chunk needed.
                d.decompress_to_buffer(stored, &mut *scratch).map_err(|e| format!("zstd: {e}"))
            })?;
            if n as u64 != expected.size() {
                return Err(format!("inflates to {n} bytes, not {}", expected.size()));
            }
            &scratch[..]
        }
    };
    let actual = Digest::of(data);
    if actual != *expected {
        return Err(format!("content hashes to {actual}"));
    }
    Ok(data)
}

thread_local! {
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// A pack being filled. `seal` hands back its bytes and digest once it
/// reaches the target size.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
}

impl PackBuilder {
    /// Appends an encoded chunk; returns its offset.
    pub fn push(&mut self, stored: &[u8]) -> u64 {
        let off = self.buf.len() as u64;
        self.buf.extend_from_slice(stored);
        off
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn seal(&mut self) -> (Digest, Vec<u8>) {
        let buf = std::mem::take(&mut self.buf);
        (Digest::of(&buf), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_through_either_codec() {
        for data in [vec![0u8; 10_000], b"short".to_vec(), (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()] {
            let (codec, stored) = encode_chunk(&data, 3);
            assert_eq!(decode_chunk(codec, &stored, &Digest::of(&data)).unwrap(), data);
        }
        assert_eq!(encode_chunk(&[0u8; 10_000], 3).0, Codec::Zstd);
    }

    #[test]
    fn a_chunk_that_does_not_match_its_digest_is_refused() {
        let (codec, stored) = encode_chunk(&[1u8; 1000], 3);
        assert!(decode_chunk(codec, &stored, &Digest::of(&[2u8; 1000])).is_err());
        // Claims fewer bytes than it inflates to: refused, not inflated.
        assert!(decode_chunk(codec, &stored, &Digest::of(&[1u8; 10])).is_err());
    }
}
