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
use std::time::Instant;

use rbk_proto::worker::{CacheCommit, CacheCommits, MountGrant, StepPhases, StepResult};
use rbk_store::Store;

use crate::cache_mounts::{CacheDirs, cache_key, granted_head};
use crate::disk_keeper::DiskKeeper;
use crate::exec_error::Result;

/// Captures the cache directories of `grants` and returns their commits,
/// each naming the generation its grant started from, and the bytes the
/// captures uploaded.
pub async fn capture_grants(caches: &CacheDirs, store: &Arc<dyn Store>, namespace: &str, grants: &[MountGrant]) -> Result<(Vec<CacheCommit>, u64)> {
    let mut out = Vec::new();
    let mut uploaded = 0;
    for g in grants {
        let key = cache_key(namespace, &g.cache_id, g.slot);
        let c = caches.capture(store, namespace, &key, granted_head(g)?).await?;
        rbk_metrics::global().worker_committed(c.bytes_uploaded);
        uploaded += c.bytes_uploaded;
        out.push(g.commit(c.snapshot.to_string(), c.total_bytes));
    }
    Ok((out, uploaded))
}

/// Adds `capture` (how long capturing took, what it uploaded) to what
/// `result` says of the step's phases.
pub fn add_commit_phase(result: &mut StepResult, capture: Option<&StepPhases>) {
    let Some(c) = capture else { return };
    let p = result.phases.get_or_insert_with(StepPhases::default);
    p.commit_ms += c.commit_ms;
    p.cache_bytes_uploaded += c.cache_bytes_uploaded;
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
    /// Captures, releases the cache locks, and returns what to send (with
    /// how long the capture took and what it uploaded).
    pub async fn run(self) -> CacheCommits {
        let t = Instant::now();
        let r = capture_grants(&self.caches, &self.store, &self.namespace, &self.grants).await;
        drop(self.held);
        self.keeper.request();
        let commit_ms = t.elapsed().as_millis() as u64;
        match r {
            Ok((commits, uploaded)) => CacheCommits {
                assignment_id: self.assignment_id,
                commits,
                error: String::new(),
                phases: Some(StepPhases { commit_ms, cache_bytes_uploaded: uploaded, ..StepPhases::default() }),
            },
            Err(e) => {
                tracing::warn!(assignment = %self.assignment_id, "capturing the cache mounts after the step: {e}");
                CacheCommits {
                    assignment_id: self.assignment_id,
                    commits: vec![],
                    error: format!("capturing the cache mounts: {e}"),
                    phases: Some(StepPhases { commit_ms, ..StepPhases::default() }),
                }
            }
        }
    }

    /// Captures now and folds the commits into `result` (sent after).
    pub async fn run_into(self, result: &mut StepResult) {
        let c = self.run().await;
        add_commit_phase(result, c.phases.as_ref());
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
