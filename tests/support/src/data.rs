//! Test and benchmark data that behaves like what the farm stores.

use rand::{Rng, SeedableRng};

/// `len` half-compressible bytes, like real build caches: 4 KiB blocks of
/// random bytes (from `seed`, so a run is repeatable) alternating with
/// 4 KiB of text. What compression and chunking are measured and tested on.
pub fn half_compressible(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    for (i, block) in out.chunks_mut(4096).enumerate() {
        if i % 2 == 0 {
            rng.fill(block);
        } else {
            for (j, b) in block.iter_mut().enumerate() {
                *b = b"the quick brown fox jumps over the lazy dog "[(i + j) % 44];
            }
        }
    }
    out
}

/// `len` bytes that do not compress and differ for every `seed` (a
/// repeatable xorshift stream): content-defined chunking and disk-usage
/// tests need data whose stored size is its length.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out[..]);
    out
}
