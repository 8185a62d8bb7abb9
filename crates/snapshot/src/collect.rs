//! The collector: marks what is live ([`crate::live`]), sweeps the store,
//! and deletes the rest in bounded batches.
//!
//! # Why it is safe against concurrent builds
//!
//! A blob may become referenced after the mark in two ways, and each has
//! its guard:
//!
//! 1. **A blob written after the mark started** (an upload of a build that
//!    has not committed yet). The sweep keeps every blob whose last write
//!    is later than `started - grace`, by the store's own timestamp, and
//!    every blob whose age the store cannot tell. `started` is taken before
//!    the roots are read, so a run of any length never deletes a blob
//!    written during it, and a writer that commits within `grace` of its
//!    upload never loses it.
//! 2. **An old, unreferenced blob that a writer finds and reuses** (an
//!    existence check says "present", so the build skips the upload and
//!    commits a reference to it). Age does not help: the blob is old. So
//!    every batch is re-checked and fenced just before it is deleted:
//!    - the collector reads the roots again, marks what is new, and drops
//!      candidates that became live (references committed before the
//!      re-read are seen);
//!    - it asks the [`RootSource`] to *fence* the rest at the generation it
//!      just read; the source answers [`Fence::Stale`] if any reference was
//!      committed since (the collector re-reads and tries again), and
//!      otherwise, atomically with its reference commits, refuses every
//!      later commit naming a fenced blob (references committed after the
//!      re-read are refused);
//!    - after the deletes, the collector calls [`RootSource::release`]. From
//!      then on the source still refuses a commit naming a released blob
//!      from a writer whose work *started* before the release plus the
//!      existence cache's TTL: its "present" answers may predate the delete
//!      (or come from a cache that has not heard of it). A writer started
//!      later asked a store that no longer had the blob, so it uploaded it.
//!
//!    A refused writer uploads again what is missing (for snapshots,
//!    `Snapshot::commit` re-checks that every pack exists) and retries, or
//!    fails with a retryable error. The source may forget a released fence
//!    once no writer that started before release + TTL is still running.
//!
//! The property test in `tests/collect.rs` runs random histories of builds,
//! commits, prunes, evictions and collections with builds committing
//! between every step of a collection, and checks against a model of the
//! farm that no blob a live root reaches is ever deleted.
//!
//! Marking fails the run rather than sweep with an incomplete live set; a
//! snapshot root whose manifest is gone is reported, not fatal.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rbk_store::{Digest, Store, StoreError};

use crate::error::SnapshotError;
use crate::live::{LiveSet, Roots};

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading the roots: {0}")]
    Roots(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("marking live blobs: {0}")]
    Mark(#[source] SnapshotError),
    #[error("sweeping the store: {0}")]
    Sweep(#[source] StoreError),
    #[error("options: {0}")]
    Options(&'static str),
}

/// The answer to a fence request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// No reference was committed since the generation; the blobs are
    /// fenced and may be deleted.
    Held,
    /// References were committed since; read the roots again.
    Stale,
}

/// The state that names blobs, as the collector needs it. The coordinator
/// implements it over its replicated state; see the module documentation
/// for the contract `fence` must keep.
#[async_trait::async_trait]
pub trait RootSource: Send + Sync {
    /// One consistent read of the roots.
    async fn roots(&self) -> Result<Roots, Box<dyn std::error::Error + Send + Sync>>;

    /// Unless a reference was committed after `generation`, refuses every
    /// later commit that would make one of `batch` reachable, for at least
    /// the grace period, and answers [`Fence::Held`]. Atomic with reference
    /// commits.
    async fn fence(&self, generation: u64, batch: &[Digest]) -> Result<Fence, Box<dyn std::error::Error + Send + Sync>>;

    /// The deletes of a fenced batch are over (done or failed). Commits
    /// naming these blobs are still refused from writers that started
    /// before now plus the existence cache's TTL.
    async fn release(&self, batch: &[Digest]);
}

/// How a collection runs.
#[derive(Debug, Clone, Copy)]
pub struct CollectOptions {
    /// When the run started, by a clock within a small skew of the store's
    /// (S3's `LastModified`, the filesystem's mtime): taken *before* the
    /// roots are read.
    pub started: SystemTime,
    /// Blobs written later than `started - grace` are kept.
    pub grace: Duration,
    /// Blobs per listing page.
    pub page: usize,
    /// Blobs re-checked, fenced and deleted together.
    pub batch: usize,
    /// Re-check and fence attempts per batch before it is left for the
    /// next run.
    pub fence_attempts: u32,
    /// Decide, but delete nothing.
    pub dry_run: bool,
    /// After the sweep, ask the store for every live blob and report the
    /// ones it lacks ([`CollectReport::missing_live`]): the full
    /// reachability check an operator or a soak runs on a quiet farm (a
    /// blob uploaded and named during the run may show as missing only if
    /// it is deleted behind the collector's back).
    pub verify: bool,
}

impl CollectOptions {
    pub fn new(started: SystemTime, grace: Duration) -> Self {
        Self { started, grace, page: 1000, batch: 1000, fence_attempts: 5, dry_run: false, verify: false }
    }
}

/// What a run found and freed: the numbers the coordinator logs and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    pub objects_scanned: u64,
    pub bytes_scanned: u64,
    /// Blobs found live.
    pub live_objects: u64,
    /// Blobs kept only because they are younger than the grace period (or
    /// of unknown age).
    pub young_objects: u64,
    /// Candidates that became live between the mark and their batch.
    pub rescued_objects: u64,
    /// Candidates left for the next run: their batch could not be fenced.
    pub contended_objects: u64,
    /// Deleted (in a dry run: would have been).
    pub deleted_objects: u64,
    pub freed_bytes: u64,
    /// Snapshot roots whose manifest is missing from the store.
    pub missing_roots: Vec<Digest>,
    /// Live blobs (named by a root, or a pack of a live snapshot) the store
    /// does not hold; only checked with [`CollectOptions::verify`].
    pub missing_live: Vec<Digest>,
    /// Live blobs checked by `verify`.
    pub verified_objects: u64,
    pub duration: Duration,
}

/// Live blobs asked about at once by `verify`.
const VERIFY_BATCH: usize = 1000;

/// Marks, sweeps and deletes; see the module documentation.
pub async fn collect(store: &dyn Store, source: &dyn RootSource, options: CollectOptions) -> Result<CollectReport, CollectError> {
    if options.page == 0 || options.batch == 0 || options.fence_attempts == 0 {
        return Err(CollectError::Options("page, batch and fence_attempts must be at least 1"));
    }
    let clock = Instant::now();
    let cutoff = options.started.checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CollectReport::default();
    let mut live = LiveSet::new();
    let roots = source.roots().await.map_err(CollectError::Roots)?;
    live.mark(store, &roots).await.map_err(CollectError::Mark)?;
    let mut candidates: Vec<(Digest, u64)> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_page(after, options.page).await.map_err(CollectError::Sweep)?;
        for b in &page.blobs {
            report.objects_scanned += 1;
            report.bytes_scanned += b.stored_bytes;
            if live.contains(&b.digest) {
                report.live_objects += 1;
            } else if b.modified.is_none_or(|m| m >= cutoff) {
                report.young_objects += 1;
            } else {
                candidates.push((b.digest, b.stored_bytes));
                if candidates.len() >= options.batch {
                    delete_batch(store, source, &mut live, &mut candidates, &options, &mut report).await?;
                }
            }
        }
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    if !candidates.is_empty() {
        delete_batch(store, source, &mut live, &mut candidates, &options, &mut report).await?;
    }
    report.missing_roots = live.missing_roots().copied().collect();
    if options.verify {
        let all: Vec<Digest> = live.iter().copied().collect();
        for chunk in all.chunks(VERIFY_BATCH) {
            report.missing_live.extend(store.find_missing(chunk).await.map_err(CollectError::Sweep)?);
        }
        report.verified_objects = all.len() as u64;
        report.missing_live.sort();
    }
    report.duration = clock.elapsed();
    tracing::info!(
        scanned = report.objects_scanned,
        live = report.live_objects,
        young = report.young_objects,
        deleted = report.deleted_objects,
        freed_bytes = report.freed_bytes,
        dry_run = options.dry_run,
        "store collection finished in {:?}",
        report.duration
    );
    Ok(report)
}

/// Re-checks, fences and deletes one batch; empties `candidates`.
async fn delete_batch(
    store: &dyn Store,
    source: &dyn RootSource,
    live: &mut LiveSet,
    candidates: &mut Vec<(Digest, u64)>,
    options: &CollectOptions,
    report: &mut CollectReport,
) -> Result<(), CollectError> {
    let mut batch: HashMap<Digest, u64> = candidates.drain(..).collect();
    let mut held = false;
    for _ in 0..options.fence_attempts {
        let roots = source.roots().await.map_err(CollectError::Roots)?;
        live.mark(store, &roots).await.map_err(CollectError::Mark)?;
        let before = batch.len();
        batch.retain(|d, _| !live.contains(d));
        report.rescued_objects += (before - batch.len()) as u64;
        if batch.is_empty() || options.dry_run {
            held = true;
            break;
        }
        let digests: Vec<Digest> = batch.keys().copied().collect();
        if source.fence(roots.generation, &digests).await.map_err(CollectError::Roots)? == Fence::Held {
            held = true;
            break;
        }
    }
    if !held {
        report.contended_objects += batch.len() as u64;
        tracing::warn!(blobs = batch.len(), "store collection: references kept changing; batch left for the next run");
        return Ok(());
    }
    if options.dry_run {
        report.deleted_objects += batch.len() as u64;
        report.freed_bytes += batch.values().sum::<u64>();
        return Ok(());
    }
    let digests: Vec<Digest> = batch.keys().copied().collect();
    let mut failed = None;
    for (digest, bytes) in batch {
        match store.delete(digest).await {
            Ok(()) => {
                report.deleted_objects += 1;
                report.freed_bytes += bytes;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    source.release(&digests).await;
    match failed {
        Some(e) => Err(CollectError::Sweep(e)),
        None => Ok(()),
    }
}
