//! A step's cache mounts captured into commits: after the step's result
//! has gone back (`StepResult.commits_follow`), so the capture — a walk of
//! the cache directory, hashing and uploading what changed — runs while
//! the build's next steps do; or before the result when that cannot be
//! (the step failed, or too many captures are already in flight).
//!
//! The per-id cache locks of the step stay held until the capture is done:
//! a later step on this worker mounting the same cache starts from the
//! captured directory (see [`crate::cache_mounts`] for why its grant does
//! not restore over it), never from one being captured.

use std::sync::Arc;

use rbk_proto::worker::{CacheCommit, CacheCommits, MountGrant, StepResult};
use rbk_store::Store;

use crate::cache_mounts::{CacheDirs, cache_key, granted_head};
use crate::disk_keeper::DiskKeeper;
use crate::exec_error::Result;

/// Captures the cache directories of `grants` and returns their commits,
/// each naming the generation its grant started from.
pub async fn capture_grants(caches: &CacheDirs, store: &Arc<dyn Store>, namespace: &str, grants: &[MountGrant]) -> Result<Vec<CacheCommit>> {
    let mut out = Vec::new();
    for g in grants {
        let key = cache_key(namespace, &g.cache_id, g.slot);
        let c = caches.capture(store, namespace, &key, granted_head(g)?).await?;
        rbk_metrics::global().worker_committed(c.bytes_uploaded);
        out.push(g.commit(c.snapshot.to_string(), c.total_bytes));
    }
    Ok(out)
}

/// The capture of one finished step's cache mounts, still to run.
pub struct BackgroundCommit {
    pub(crate) assignment_id: String,
    pub(crate) namespace: String,
    pub(crate) caches: CacheDirs,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) grants: Vec<MountGrant>,
    /// The step's per-id cache locks.
    pub(crate) held: Vec<tokio::sync::OwnedMutexGuard<()>>,
    pub(crate) keeper: Arc<DiskKeeper>,
}

impl std::fmt::Debug for BackgroundCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundCommit").field("assignment_id", &self.assignment_id).finish_non_exhaustive()
    }
}

impl BackgroundCommit {
    /// Captures, releases the cache locks, and returns what to send.
    pub async fn run(self) -> CacheCommits {
        let r = capture_grants(&self.caches, &self.store, &self.namespace, &self.grants).await;
        drop(self.held);
        self.keeper.request();
        match r {
            Ok(commits) => CacheCommits { assignment_id: self.assignment_id, commits, error: String::new() },
            Err(e) => {
                tracing::warn!(assignment = %self.assignment_id, "capturing the cache mounts after the step: {e}");
                CacheCommits { assignment_id: self.assignment_id, commits: vec![], error: format!("capturing the cache mounts: {e}") }
            }
        }
    }

    /// Captures now and folds the commits into `result` (sent after).
    pub async fn run_into(self, result: &mut StepResult) {
        let c = self.run().await;
        result.commits_follow = false;
        if c.error.is_empty() {
            result.commits = c.commits;
        } else if result.ok {
            result.ok = false;
            result.message = c.error;
            result.exit_code = -1;
            result.layers.clear();
            result.config.clear();
        }
    }
}
