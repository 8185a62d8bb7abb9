//! Which store blob holds which registry layer: sha256 (the registry's
//! name) → blake3 (the store's), learnt when a layer is pulled into the
//! store, so a later pull of any image sharing the layer skips the
//! download. Bounded: past [`MEMO_MAX`] entries the oldest is forgotten
//! (a forgotten layer is pulled again; the store keeps one copy). Kept in
//! memory: a new leader pulls each layer once more.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rbk_image::OciDigest;
use rbk_store::Digest;

/// Layers remembered at most.
pub const MEMO_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub struct LayerMemo {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_sha: HashMap<OciDigest, Digest>,
    order: VecDeque<OciDigest>,
}

impl LayerMemo {
    pub fn get(&self, sha: &OciDigest) -> Option<Digest> {
        self.inner.lock().expect("memo lock").by_sha.get(sha).copied()
    }

    pub fn insert(&self, sha: OciDigest, blake3: Digest) {
        let mut m = self.inner.lock().expect("memo lock");
        if m.by_sha.insert(sha, blake3).is_none() {
            m.order.push_back(sha);
        }
        while m.order.len() > MEMO_MAX {
            if let Some(old) = m.order.pop_front() {
                m.by_sha.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_layer_is_forgotten_past_the_bound() {
        let memo = LayerMemo::default();
        let sha = |i: usize| OciDigest::of(i.to_string().as_bytes());
        for i in 0..=MEMO_MAX {
            memo.insert(sha(i), Digest::of(&[]));
        }
        assert!(memo.get(&sha(0)).is_none());
        assert!(memo.get(&sha(MEMO_MAX)).is_some());
    }
}
