//! What the coordinator tells Prometheus (`rbk_metrics::global()`).
//!
//! Build and step counters are derived from the [`BuildEvent`]s the
//! scheduler already produces, on their way to the client, so the numbers
//! are exactly what clients were told and the scheduler needs no counter
//! calls of its own: [`observed_events`] is the events channel with a tap.
//! Facts no event carries once (bytes a worker restored, cache-mount
//! grants and commits) are observed where the worker stream carries them.

use std::time::Duration;

use rbk_metrics::{BuildResult, CacheKind, StepResult};
use tokio::sync::mpsc;

use crate::model::{BuildEvent, BuildState, MountGrant, StepOutcome};

/// A build's events channel whose events are recorded as metrics before
/// they reach the receiver (same order; recorded even after the client
/// stopped listening).
pub(crate) fn observed_events() -> (mpsc::UnboundedSender<BuildEvent>, mpsc::UnboundedReceiver<BuildEvent>) {
    let (tx, mut tapped) = mpsc::unbounded_channel();
    let (out, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = tapped.recv().await {
            record(&e);
            let _ = out.send(e);
        }
    });
    (tx, rx)
}

fn record(e: &BuildEvent) {
    let m = rbk_metrics::global();
    match e {
        BuildEvent::Accepted { .. } | BuildEvent::Log { .. } => {}
        // Every waiting build step gets `Started` per attempt; the first
        // attempt means the action cache had nothing for the key.
        BuildEvent::Started { attempt, .. } => {
            if *attempt <= 1 {
                m.cache_lookup(CacheKind::Action, false);
            } else {
                m.step(StepResult::Retried);
            }
        }
        BuildEvent::Cached { .. } => {
            m.cache_lookup(CacheKind::Action, true);
            m.step(StepResult::Cached);
        }
        BuildEvent::Finished { duration_ms, .. } => {
            m.step(StepResult::Done);
            m.step_succeeded_after(Duration::from_millis(*duration_ms));
        }
        BuildEvent::Failed { .. } => m.step(StepResult::Failed),
        BuildEvent::BuildFinished { state, duration_ms, .. } => {
            let result = match state {
                BuildState::Succeeded => BuildResult::Succeeded,
                BuildState::Cancelled => BuildResult::Cancelled,
                // A build only ends in one of these three.
                BuildState::Failed | BuildState::Running => BuildResult::Failed,
            };
            m.build_finished(result, Duration::from_millis(*duration_ms));
        }
    }
}

/// The scheduler's live numbers, after every message it handles.
pub(crate) fn scheduler(queue_depth: usize, workers: usize, running: usize, builds: usize) {
    rbk_metrics::global().set_scheduler(queue_depth, workers, running, builds);
}

/// An assignment leaves for a worker: each cache mount either starts from
/// a head (a hit) or from nothing (a miss).
pub(crate) fn assigned(mounts: &[MountGrant]) {
    for g in mounts {
        rbk_metrics::global().cache_lookup(CacheKind::CacheMount, g.head.is_some());
    }
}

/// A worker reported a step's result (once per execution, however many
/// builds wait for it).
pub(crate) fn step_result(outcome: &StepOutcome) {
    if let StepOutcome::Succeeded { commits, bytes_restored, .. } = outcome {
        rbk_metrics::global().cache_mount_restored(*bytes_restored);
        self::commits(commits);
    }
}

/// Cache commits a worker reported (with its result, or after it).
pub(crate) fn commits(commits: &[crate::model::CacheCommit]) {
    let m = rbk_metrics::global();
    for c in commits {
        m.cache_mount_committed(c.total_bytes);
    }
}
