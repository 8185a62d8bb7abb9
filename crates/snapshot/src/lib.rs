//! Directory snapshots: a tree (a pip/apt/npm cache mount, or a build
//! context) captured as a manifest plus packed, chunked, deduplicated
//! contents in the content store, and restored on another machine faster
//! than re-running the install that produced it.
//!
//! - [`capture`] walks a directory and uploads only content the namespace
//!   does not hold yet; [`restore`] writes a snapshot into a directory,
//!   fetching and writing only what differs from what is already there.
//! - [`diff`] and [`merge`] compare and combine snapshots (concurrent commits
//!   to one cache); [`gc`] finds what dead snapshots leave behind and decides
//!   evictions.
//!
//! A snapshot is named by one digest: that of its manifest blob (see
//! [`manifest`] for the format). Packs are uploaded before the manifest, so
//! a manifest in the store never refers to content that is not.
//!
//! **Dedupe scope and tenants.** The store is one blob space, but capture
//! deduplicates only against the manifests the caller hands it (the base
//! snapshot and any others of the same namespace), checking with
//! `find_missing` that their packs still exist. It never asks the store
//! "does anyone hold content X": that question, answered across tenants,
//! would let one tenant learn whether another holds a given file (a known
//! config with a secret, say) by timing or counting uploads. Packs are named
//! by the hash of many compressed chunks, which another tenant cannot guess,
//! and the coordinator only hands a tenant manifests of its own namespace.

// Errors carry digests and paths by value so messages can name them; they
// are rare, so their size on the error path does not matter.
#![allow(clippy::result_large_err)]

pub mod capture;
pub mod chunk;
pub mod collect;
pub mod diff;
mod error;
pub mod filter;
mod fsutil;
pub mod gc;
pub mod live;
pub mod manifest;
pub mod merge;
pub mod pack;
pub mod restore;
pub mod statcache;
pub mod subset;
pub mod tree_digest;

use std::sync::Arc;

use rbk_store::{Digest, Store, StoreExt};

pub use capture::{CaptureOptions, CaptureStats, capture};
pub use chunk::ChunkParams;
pub use collect::{CollectError, CollectOptions, CollectReport, Fence, RootSource, collect};
pub use live::{LiveSet, Roots};
pub use diff::{Change, diff};
pub use error::{SnapshotError, SnapshotResult};
pub use filter::{IncludeAll, PathFilter};
pub use manifest::{ChunkRef, Codec, Entry, EntryKind, FileContent, Manifest, Timestamp};
pub use merge::merge;
pub use restore::{RestoreOptions, RestoreStats, cold_restore_gets, restore};
pub use subset::subset;
pub use tree_digest::{TreeDigest, tree_digest};

/// A stored snapshot: its manifest and the digest that names it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub digest: Digest,
    pub manifest: Arc<Manifest>,
}

impl Snapshot {
    /// Reads and validates a snapshot's manifest.
    pub async fn load(store: &dyn Store, digest: Digest) -> SnapshotResult<Snapshot> {
        let blob = store.get_bytes(digest).await?;
        let actual = Digest::of(&blob);
        if actual != digest {
            return Err(SnapshotError::bad(None, format!("manifest blob {digest} hashes to {actual}")));
        }
        let manifest = Manifest::decode(&blob).map_err(|e| match e {
            SnapshotError::BadManifest { at, what } => SnapshotError::BadManifest { at, what: format!("{what} (in {digest})") },
            other => other,
        })?;
        Ok(Snapshot { digest, manifest: Arc::new(manifest) })
    }

    /// Validates and stores a manifest built in memory (by capture, merge or
    /// repack) and returns the snapshot and the bytes uploaded (0 when the
    /// store already held it). Refuses when a pack it names is missing, so a
    /// stored manifest never refers to content that is not stored.
    pub async fn commit(store: &dyn Store, manifest: Manifest) -> SnapshotResult<(Snapshot, u64)> {
        manifest.validate()?;
        let packs: Vec<Digest> = manifest.packs().into_iter().collect();
        for batch in packs.chunks(FIND_MISSING_BATCH) {
            if let Some(d) = store.find_missing(batch).await?.first() {
                return Err(SnapshotError::bad(None, format!("refusing to commit: pack {d} is not in the store")));
            }
        }
        let blob = manifest.encode();
        let digest = Digest::of(&blob);
        let mut uploaded = 0;
        if !store.find_missing(&[digest]).await?.is_empty() {
            uploaded = blob.len() as u64;
            store.put(digest, rbk_store::stream_from_bytes(blob.into())).await?;
        }
        Ok((Snapshot { digest, manifest: Arc::new(manifest) }, uploaded))
    }
}

/// Digests per `find_missing` call.
pub(crate) const FIND_MISSING_BATCH: usize = 1000;
