//! Cache commits that follow a step's result: a worker reports a step done
//! once its layer is stored (`StepResult.commits_follow`) and captures the
//! step's cache mounts while the next steps run, then sends their commits
//! (`CacheCommits`).
//!
//! The consistency rule: the step is done for its dependents at once,
//! except for a step that mounts one of its caches: that one waits until
//! the commit has landed (`awaits_late_commit`), so its grant names the new
//! head and no worker empties the cache as it empties a pruned one; every
//! worker gets the new head once it is committed here. A build ends only when the commits of
//! all its steps have landed, or when the worker that owes them is lost
//! first: then they are lost and the heads stay where they were (a head
//! only ever moves by a whole commit). A `locked` mount's lease stays held
//! until then, renewed by the worker's heartbeats.

use super::{Core, Msg, foreign_commit};
use crate::cache_heads::CacheHeads;
use crate::model::{BuildEvent, BuildState, CacheCommit, HeadKey, StepNode, StepPhases};
use crate::state::now_ms;
use rbk_proto::replay::COMMIT_STREAM;
use rbk_store::Digest;

/// A step whose commits are still to come from its worker.
pub(super) struct LateCommit {
    pub worker_id: String,
    pub namespace: String,
    pub node: StepNode,
    pub granted: Option<Vec<(String, u32)>>,
    /// The (build, step) pairs that ran it.
    pub waiters: Vec<(String, String)>,
    /// For the store collector's fence (see `writer_started_ms`).
    pub started_ms: u64,
    /// The commits arrived and are being merged: losing the worker no
    /// longer loses them.
    pub arrived: bool,
}

/// One head a commit moved.
pub(super) struct Landed {
    pub head: HeadKey,
    pub snapshot: Digest,
    pub merged: bool,
    pub total_bytes: u64,
}

/// Commits `commits` to the heads of `namespace`, in order; stops at the
/// first that fails.
pub(super) async fn commit_heads(heads: &CacheHeads, namespace: &str, commits: Vec<CacheCommit>, started_ms: u64) -> Result<Vec<Landed>, String> {
    let mut out = Vec::new();
    for c in commits {
        let head = HeadKey { namespace: namespace.to_owned(), cache_id: c.cache_id, slot: c.slot };
        let done = heads
            .commit(&head, c.base_generation, c.snapshot, c.total_bytes, now_ms(), started_ms)
            .await
            .map_err(|e| e.to_string())?;
        out.push(Landed { head, snapshot: done.snapshot, merged: done.merged, total_bytes: c.total_bytes });
    }
    Ok(out)
}

impl Core {
    /// Whether `exec` mounts a cache of its tenant whose commit is still on
    /// its way: it waits for it, so its grant names the head that commit
    /// makes (granted the head before it, a worker would empty the cache
    /// the earlier step filled, as it empties a pruned one).
    pub(super) fn awaits_late_commit(&self, exec: &super::Exec) -> bool {
        exec.node.cache_mounts.iter().any(|m| {
            self.late.values().any(|l| l.namespace == exec.namespace && l.node.cache_mounts.iter().any(|c| c.id == m.id))
        })
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

impl Core {
    /// Keeps what a worker said of where an assignment's time went, in the
    /// history of every step it ran for (its result's phases while it
    /// runs, its capture's once its commits follow); only from the worker
    /// holding it.
    pub(super) fn record_phases(&self, worker_id: &str, assignment_id: &str, phases: &StepPhases) {
        let running = self
            .assignments
            .get(assignment_id)
            .and_then(|k| self.execs.get(k))
            .filter(|e| e.running.as_ref().is_some_and(|r| r.assignment_id == assignment_id && r.worker_id == worker_id))
            .map(|e| &e.waiters);
        let late = self.late.get(assignment_id).filter(|l| l.worker_id == worker_id).map(|l| &l.waiters);
        for (bid, sid) in running.or(late).into_iter().flatten() {
            self.hub.history().record_phases(bid, sid, phases);
        }
    }

    /// The late commit of `waiters` is over (landed, failed or lost): the
    /// timeline's commit span ends now.
    fn commit_done(&self, waiters: &[(String, String)]) {
        let at = now_ms();
        for (bid, sid) in waiters {
            self.hub.history().record_commit_done(bid, sid, at);
        }
    }

    /// Whether a step of `build_id` still owes its commits.
    pub(super) fn awaits_commits(&self, build_id: &str) -> bool {
        self.late.values().any(|l| l.waiters.iter().any(|(b, _)| b == build_id))
    }

    /// Ends `build_id` as succeeded when all its steps are done and none
    /// owes commits any more.
    async fn end_if_complete(&mut self, build_id: &str) {
        let complete = self.builds.get(build_id).is_some_and(|b| b.remaining == 0);
        if complete && !self.awaits_commits(build_id) {
            self.end_build(build_id, BuildState::Succeeded, String::new()).await;
        }
    }

    /// A line in the log of every step that waited on `waiters`.
    fn commit_line(&self, waiters: &[(String, String)], worker_id: &str, line: &str) {
        for (bid, sid) in waiters {
            if let Some(b) = self.builds.get(bid) {
                let _ = b.events.send(BuildEvent::Log {
                    step_id: sid.clone(),
                    worker_id: worker_id.to_owned(),
                    stream: COMMIT_STREAM.into(),
                    line: line.to_owned(),
                });
            }
        }
    }

    /// A worker sent the commits of a step whose result said they follow.
    pub(super) async fn commits_arrived(&mut self, worker_id: &str, assignment_id: String, commits: Vec<CacheCommit>, error: String) {
        let Some(late) = self.late.get_mut(&assignment_id).filter(|l| l.worker_id == worker_id && !l.arrived) else {
            tracing::info!(worker = worker_id, assignment = %assignment_id, "ignoring cache commits nobody waits for");
            return;
        };
        late.arrived = true;
        let (waiters, namespace, started_ms) = (late.waiters.clone(), late.namespace.clone(), late.started_ms);
        let refused = foreign_commit(&late.node, late.granted.as_deref(), &commits).map(|c| {
            tracing::warn!(cache = %c.cache_id, slot = c.slot, "refused cache commits to a head the assignment was not granted");
            format!("worker {worker_id} tried to commit cache {:?} slot {}, which this step was not granted", c.cache_id, c.slot)
        });
        let error = if error.is_empty() { refused } else { Some(error) };
        let (heads, tx, worker) = (self.heads.clone(), self.self_tx.clone(), worker_id.to_owned());
        tokio::spawn(async move {
            let result = match error {
                Some(e) => Err(e),
                None => commit_heads(&heads, &namespace, commits, started_ms).await,
            };
            let _ = heads.release(&assignment_id).await;
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Msg::CommitsLanded { assignment_id, worker_id: worker, waiters, result });
            }
        });
    }

    /// A step's late commits are in (or failed): its builds may end.
    pub(super) async fn commits_landed(&mut self, assignment_id: String, worker_id: String, waiters: Vec<(String, String)>, result: Result<Vec<Landed>, String>) {
        self.late.remove(&assignment_id);
        self.commit_done(&waiters);
        match result {
            Ok(landed) => {
                for l in &landed {
                    let how = if l.merged { ", merged with a concurrent commit" } else { "" };
                    self.commit_line(&waiters, &worker_id, &format!("cache {:?}: committed {}{how}", l.head.cache_id, bytes(l.total_bytes)));
                }
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    // The worker holds what it captured; after a merge the
                    // head is newer than its copy.
                    let held: Vec<(HeadKey, Digest)> = landed.into_iter().filter(|l| !l.merged).map(|l| (l.head, l.snapshot)).collect();
                    w.info.snapshots.retain(|(k, _)| !held.iter().any(|(h, _)| h == k));
                    w.info.snapshots.extend(held);
                }
            }
            Err(message) => {
                tracing::warn!(assignment = %assignment_id, "cache commits after the step failed: {message}");
                self.commit_line(&waiters, &worker_id, &format!("cache commit failed, the cache keeps its previous head: {message}"));
            }
        }
        for (bid, _) in &waiters {
            self.end_if_complete(bid).await;
        }
    }

    /// `worker_id` is gone: the commits it still owed are lost.
    pub(super) async fn late_commits_lost(&mut self, worker_id: &str) {
        let lost: Vec<String> = self.late.iter().filter(|(_, l)| l.worker_id == worker_id && !l.arrived).map(|(a, _)| a.clone()).collect();
        for assignment_id in lost {
            let Some(late) = self.late.remove(&assignment_id) else { continue };
            let _ = self.heads.release(&assignment_id).await;
            tracing::warn!(worker = worker_id, assignment = %assignment_id, "worker lost before it sent its cache commits");
            self.commit_line(&late.waiters, worker_id, "cache commit lost (the worker left before it was sent); the cache keeps its previous head");
            self.commit_done(&late.waiters);
            for (bid, _) in &late.waiters {
                self.end_if_complete(bid).await;
            }
        }
    }

    /// Heartbeats of `worker_id` keep the leases its late commits hold.
    pub(super) async fn renew_late_commits(&self, worker_id: &str) {
        for (assignment_id, l) in &self.late {
            if l.worker_id == worker_id {
                let _ = self.heads.renew(assignment_id, now_ms(), self.config.lease_ttl.as_millis() as u64).await;
            }
        }
    }
}
