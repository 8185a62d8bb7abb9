//! What is live in the content store: the one definition.
//!
//! The store holds layers, image configs and manifests, build contexts and
//! cache-mount snapshots in one blob space, so "live" is decided from the
//! outside, by the state that names blobs:
//!
//! - **snapshots** whose manifest and every pack it names are live: each
//!   namespace's current cache head, the older snapshots a 3-way merge may
//!   still need as its base (a head's history back to the oldest base any
//!   in-flight build started from), and the base and context snapshots of
//!   every queued or running build;
//! - **blobs** live by themselves: the layers, image configs and image
//!   manifests that action-cache results reference, and contexts uploaded
//!   as single blobs.
//!
//! Everything reachable from those is live. Everything else is garbage
//! once it is older than the collector's grace period (see
//! the collector (`collect.rs`) for why age alone is not enough and what else the
//! collector requires).

use std::collections::{BTreeSet, HashSet};

use futures::StreamExt;
use rbk_store::{Digest, Store, StoreError};

use crate::error::{SnapshotError, SnapshotResult};
use crate::Snapshot;

/// The roots of one consistent read of the state that names blobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// Identifies the state read (the coordinator's applied Raft index):
    /// the collector hands it back when it fences a batch, and the fence is
    /// refused if any reference was committed since.
    pub generation: u64,
    /// Snapshots (manifest digests) whose manifest and packs are live.
    pub snapshots: BTreeSet<Digest>,
    /// Blobs live by themselves.
    pub blobs: BTreeSet<Digest>,
}

/// Manifests loaded at once while marking.
const MARK_CONCURRENCY: usize = 16;

/// Every blob reachable from the roots marked so far. Marking is
/// incremental: marking newer roots only loads the snapshots not seen yet.
#[derive(Debug, Default)]
pub struct LiveSet {
    live: HashSet<Digest>,
    marked: HashSet<Digest>,
    /// Snapshot roots whose manifest is not in the store. Their packs
    /// cannot be known, so nothing protects them; a head naming a missing
    /// manifest is already broken, which the report makes visible.
    missing_roots: BTreeSet<Digest>,
}

impl LiveSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds everything reachable from `roots`. Fails, leaving the set
    /// unfit for sweeping, on any error but a missing manifest: a mark that
    /// did not finish must never decide what is garbage.
    pub async fn mark(&mut self, store: &dyn Store, roots: &Roots) -> SnapshotResult<()> {
        self.live.extend(roots.blobs.iter().copied());
        let todo: Vec<Digest> = roots.snapshots.iter().filter(|d| !self.marked.contains(d)).copied().collect();
        let mut loads = futures::stream::iter(todo).map(|d| async move { (d, Snapshot::load(store, d).await) }).buffer_unordered(MARK_CONCURRENCY);
        while let Some((digest, loaded)) = loads.next().await {
            match loaded {
                Ok(snap) => {
                    self.live.insert(digest);
                    self.live.extend(snap.manifest.packs());
                    self.marked.insert(digest);
                }
                Err(SnapshotError::Store(StoreError::NotFound(d))) if d == digest => {
                    self.missing_roots.insert(digest);
                    self.marked.insert(digest);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.live.contains(digest)
    }

    /// Live blobs known (whether or not the store holds them).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Every live blob known.
    pub fn iter(&self) -> impl Iterator<Item = &Digest> {
        self.live.iter()
    }

    pub fn missing_roots(&self) -> impl Iterator<Item = &Digest> {
        self.missing_roots.iter()
    }
}
