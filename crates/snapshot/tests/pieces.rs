//! Restore cuts chunks straight out of the pieces a response body arrives
//! in, assembling only a chunk that spans pieces. Whatever sizes the pieces
//! have — one byte, a few, or the whole range — the restored tree is the
//! same, cold and incremental (where coalesced gaps between needed chunks
//! fall anywhere in a piece).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rbk_snapshot::{capture, restore};
use rbk_store::Store;

/// Hands out every read in pieces of `piece` bytes.
fn piecewise(inner: Arc<dyn Store>, piece: usize) -> Arc<dyn Store> {
    Arc::new(ReshapedReads {
        inner,
        reshape: move |_, all: Bytes| (0..all.len()).step_by(piece.max(1)).map(|i| Ok(all.slice(i..(i + piece).min(all.len())))).collect(),
    })
}

#[tokio::test]
async fn restore_reassembles_chunks_from_body_pieces_of_any_size() {
    let (tmp, store) = fs_store().await;
    let (v0, v1) = (tmp.path().join("v0"), tmp.path().join("v1"));
    for (root, salt) in [(&v0, 0u32), (&v1, 1)] {
        for i in 0..40u32 {
            // Every third file differs in v1: an incremental restore then
            // needs every third chunk, with coalesced gaps between them.
            let seed = if i % 3 == 0 { i + salt * 100 } else { i };
            write(root, &format!("d{}/f{i}", i % 4), &noise(50 + i as usize * 97, seed));
        }
        write(root, "empty", b"");
        write(root, "big", &noise(30_000, 7 + salt));
    }
    let (s0, _) = capture(store.clone(), &v0, &small_opts("ns")).await.unwrap();
    let (s1, _) = capture(store.clone(), &v1, &small_opts("ns")).await.unwrap();
    for piece in [1, 7, 1000, 1 << 20] {
        let pieced = piecewise(store.clone(), piece);
        let dst = tmp.path().join(format!("dst-{piece}"));
        restore(pieced.clone(), &s0, &dst, &restore_opts()).await.unwrap();
        assert_eq!(observe(&dst), observe(&v0), "cold restore, pieces of {piece} bytes");
        let s = restore(pieced, &s1, &dst, &restore_opts()).await.unwrap();
        assert_eq!(observe(&dst), observe(&v1), "incremental restore, pieces of {piece} bytes");
        assert!(s.unchanged > 0 && s.files_written > 0, "{s:?}");
    }
}
