//! How a worker answers a cache-mount grant: the commit names the same
//! cache id and slot, and the generation the grant started from, which is
//! what the coordinator merges against (a head that moved since is merged,
//! not overwritten).

use crate::worker::{CacheCommit, MountGrant};

impl MountGrant {
    /// The commit of `snapshot` (`total_bytes` in all) captured from what
    /// this grant restored.
    pub fn commit(&self, snapshot: String, total_bytes: u64) -> CacheCommit {
        CacheCommit { cache_id: self.cache_id.clone(), slot: self.slot, base_generation: self.generation, snapshot, total_bytes }
    }
}
