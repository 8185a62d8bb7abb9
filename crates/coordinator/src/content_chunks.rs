//! How blob bytes are cut into gRPC messages, shared by the Content
//! service (which sends them) and the remote store client (which uploads
//! them).

use bytes::Bytes;

/// Largest data payload per gRPC message (tonic decodes up to 4 MiB).
pub const CHUNK: usize = 1024 * 1024;

/// Re-chunks a blob's bytes into messages no larger than [`CHUNK`].
pub fn split_chunks(b: Bytes) -> impl Iterator<Item = Bytes> {
    let n = b.len().div_ceil(CHUNK);
    (0..n).map(move |i| b.slice(i * CHUNK..((i + 1) * CHUNK).min(b.len())))
}
