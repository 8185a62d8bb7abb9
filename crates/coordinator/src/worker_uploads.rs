//! What each worker uploaded through the `Content` service lately: a
//! worker checks that the packs of a cache snapshot it just wrote are
//! stored before it commits the snapshot, and they belong to no tenant
//! until that commit (or the step's result) names them. So a worker sees
//! its own verified uploads too.
//!
//! Kept in memory on the node that took the upload, not replicated: it is
//! needed only between an upload and the commit that follows it on the
//! same connection, and the commit makes the blobs the tenant's in the
//! replicated state (`blob_owners.rs`). After a leader change a worker
//! that asks again is told "missing" and uploads again. Bounded: the
//! oldest entries are forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use rbk_store::Digest;

/// How many (worker, blob) pairs are remembered.
pub const WORKER_UPLOADS_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub struct WorkerUploads {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    set: HashSet<(String, Digest)>,
    order: VecDeque<(String, Digest)>,
}

impl WorkerUploads {
    /// Worker `id` uploaded `digest` (its bytes verified).
    pub fn record(&self, id: &str, digest: Digest) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (id.to_owned(), digest);
        if r.set.contains(&entry) {
            return;
        }
        r.set.insert(entry.clone());
        r.order.push_back(entry);
        while r.order.len() > WORKER_UPLOADS_MAX {
            if let Some(old) = r.order.pop_front() {
                r.set.remove(&old);
            }
        }
    }

    /// Whether worker `id` uploaded `digest` (and it is still remembered).
    pub fn uploaded(&self, id: &str, digest: &Digest) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).set.contains(&(id.to_owned(), *digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_seen_by_its_worker_only_and_the_oldest_are_forgotten_beyond_the_bound() {
        let u = WorkerUploads::default();
        let first = Digest::of(b"0");
        u.record("w1", first);
        assert!(u.uploaded("w1", &first));
        assert!(!u.uploaded("w2", &first));
        for i in 1..=WORKER_UPLOADS_MAX as u64 {
            u.record("w1", Digest::of(&i.to_le_bytes()));
        }
        assert!(!u.uploaded("w1", &first));
        assert!(u.uploaded("w1", &Digest::of(&(WORKER_UPLOADS_MAX as u64).to_le_bytes())));
    }
}
