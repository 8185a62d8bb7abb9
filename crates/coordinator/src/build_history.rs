//! What a coordinator keeps of the builds it ran beyond the replicated
//! state: their log lines, when each step started and ended and where its
//! time went on its worker (phases, bytes stored, the cache commit after
//! it), for `rbk builds logs|inspect` (`service/history.rs`) and the web
//! dashboard.
//!
//! Log lines are too many and too big for the Raft log (and may carry what
//! a step printed of its secrets), so they stay in the memory of the node
//! whose scheduler ran the build, fed from the same event sink as the
//! submitting client (`scheduler/events.rs`). Both dimensions are bounded:
//! the newest [`HistoryLimits::builds`] builds, and per build at most
//! [`HistoryLimits::log_bytes_per_build`] of lines, dropping the oldest
//! lines first (a failure's cause is usually at the end). A leader change
//! or a restart loses them; the steps' states, workers and results are in
//! the replicated state and survive.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::model::{BuildEvent, StepPhases};
use crate::state::now_ms;

/// How much history a coordinator keeps (config `[history]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryLimits {
    /// Builds whose logs and step times are kept, newest first.
    pub builds: usize,
    /// Bytes of log lines kept per build; beyond it the oldest go.
    pub log_bytes_per_build: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { builds: 100, log_bytes_per_build: 1 << 20 }
    }
}

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub step_id: String,
    pub stream: String,
    pub line: String,
    pub at_ms: u64,
}

/// When a step started and ended, as this node saw it (0: not seen), and
/// what its worker reported of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepTimes {
    pub started_ms: u64,
    pub finished_ms: u64,
    /// The worker's own measure of the step (restore, run, upload).
    pub worker_ms: u64,
    /// Cache-mount bytes the worker restored from the store for it.
    pub bytes_restored: u64,
    /// An action-cache hit: nothing ran.
    pub cached: bool,
    /// Where the time went on the worker (zero from workers that do not
    /// report it), and the capture after the step when it followed.
    pub phases: StepPhases,
    /// The step's cache mounts are captured after its result (their
    /// commit follows), and when it landed here (0: not yet).
    pub commit_follows: bool,
    pub commit_done_ms: u64,
}

impl StepTimes {
    /// Bytes the step stored: its layer and what its cache-mount capture
    /// uploaded.
    pub fn bytes_committed(&self) -> u64 {
        self.phases.layer_bytes + self.phases.cache_bytes_uploaded
    }
}

/// A build's totals over its kept step times (the builds page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildTotals {
    pub bytes_restored: u64,
    pub bytes_committed: u64,
}

/// One build's kept history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildLog {
    pub lines: VecDeque<LogLine>,
    /// Lines dropped from the front to stay within the byte bound.
    pub dropped: u64,
    pub steps: BTreeMap<String, StepTimes>,
    bytes: usize,
}

impl BuildLog {
    fn push(&mut self, line: LogLine, cap: usize) {
        self.bytes += cost(&line);
        self.lines.push_back(line);
        while self.bytes > cap {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= cost(&old);
            self.dropped += 1;
        }
    }
}

/// What a line counts against the bound: its text plus a little for the
/// bookkeeping, so a flood of empty lines is bounded too.
fn cost(l: &LogLine) -> usize {
    l.line.len() + l.step_id.len() + 32
}

#[derive(Default)]
struct Inner {
    limits: HistoryLimits,
    /// Build ids, oldest first: the eviction order.
    order: VecDeque<String>,
    builds: HashMap<String, BuildLog>,
}

/// The kept history of this node's builds; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct BuildHistory {
    inner: Arc<Mutex<Inner>>,
}

impl BuildHistory {
    /// Sets the bounds (at start-up, from the config); builds beyond the
    /// new bound go at the next build.
    pub fn set_limits(&self, limits: HistoryLimits) {
        self.lock().limits = limits;
    }

    pub fn limits(&self) -> HistoryLimits {
        self.lock().limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what `e`, an event of `build_id`, says about its history.
    pub fn record(&self, build_id: &str, e: &BuildEvent) {
        self.record_at(build_id, e, now_ms());
    }

    fn record_at(&self, build_id: &str, e: &BuildEvent, at_ms: u64) {
        let mut inner = self.lock();
        let limits = inner.limits;
        if limits.builds == 0 {
            return;
        }
        if !inner.builds.contains_key(build_id) {
            inner.order.push_back(build_id.to_owned());
            inner.builds.insert(build_id.to_owned(), BuildLog::default());
            while inner.order.len() > limits.builds {
                if let Some(old) = inner.order.pop_front() {
                    inner.builds.remove(&old);
                }
            }
        }
        let Some(b) = inner.builds.get_mut(build_id) else { return };
        match e {
            BuildEvent::Log { step_id, stream, line, .. } => {
                b.push(LogLine { step_id: step_id.clone(), stream: stream.clone(), line: line.clone(), at_ms }, limits.log_bytes_per_build);
            }
            // A retry starts the step's clock again.
            BuildEvent::Started { step_id, .. } => {
                b.steps.insert(step_id.clone(), StepTimes { started_ms: at_ms, ..Default::default() });
            }
            BuildEvent::Cached { step_id, .. } => {
                b.steps.insert(step_id.clone(), StepTimes { started_ms: at_ms, finished_ms: at_ms, cached: true, ..Default::default() });
            }
            BuildEvent::Finished { step_id, duration_ms, bytes_restored, .. } => {
                let t = b.steps.entry(step_id.clone()).or_default();
                (t.finished_ms, t.worker_ms, t.bytes_restored) = (at_ms, *duration_ms, *bytes_restored);
            }
            BuildEvent::Failed { step_id, .. } => {
                b.steps.entry(step_id.clone()).or_default().finished_ms = at_ms;
            }
            BuildEvent::Accepted { .. } | BuildEvent::BuildFinished { .. } => {}
        }
    }

    /// Changes the kept times of one step, if this node keeps the build
    /// and has seen the step start.
    fn update_step(&self, build_id: &str, step_id: &str, f: impl FnOnce(&mut StepTimes)) {
        let mut inner = self.lock();
        if let Some(t) = inner.builds.get_mut(build_id).and_then(|b| b.steps.get_mut(step_id)) {
            f(t);
        }
    }

    /// What the step's worker reported of where its time went (a result's
    /// phases, then its late commit's capture).
    pub fn record_phases(&self, build_id: &str, step_id: &str, phases: &StepPhases) {
        self.update_step(build_id, step_id, |t| t.phases.merge(phases));
    }

    /// The step's result said its cache commits follow.
    pub fn record_commit_follows(&self, build_id: &str, step_id: &str) {
        self.update_step(build_id, step_id, |t| t.commit_follows = true);
    }

    /// The step's late cache commits landed (or were lost) at `at_ms`.
    pub fn record_commit_done(&self, build_id: &str, step_id: &str, at_ms: u64) {
        self.update_step(build_id, step_id, |t| t.commit_done_ms = at_ms);
    }

    /// Bytes restored and committed by each of `build_ids` this node keeps
    /// (one lock for the whole page, no copies of the step maps).
    pub fn totals<'a>(&self, build_ids: impl IntoIterator<Item = &'a str>) -> Vec<Option<BuildTotals>> {
        let inner = self.lock();
        build_ids
            .into_iter()
            .map(|id| {
                inner.builds.get(id).map(|b| {
                    b.steps.values().fold(BuildTotals::default(), |acc, t| BuildTotals {
                        bytes_restored: acc.bytes_restored + t.bytes_restored,
                        bytes_committed: acc.bytes_committed + t.bytes_committed(),
                    })
                })
            })
            .collect()
    }

    /// A copy of what is kept of `build_id`, if anything.
    pub fn get(&self, build_id: &str) -> Option<BuildLog> {
        self.lock().builds.get(build_id).cloned()
    }

    /// The kept step times of `build_id` (without its lines).
    pub fn step_times(&self, build_id: &str) -> Option<BTreeMap<String, StepTimes>> {
        self.lock().builds.get(build_id).map(|b| b.steps.clone())
    }

    /// Up to `max` kept lines of `build_id` from line number `from` on,
    /// counting every line the build ever logged here (dropped ones
    /// included), and the number after the last one returned: a reader
    /// follows a growing log without copying it whole. Lines dropped
    /// before `from` was reached are skipped.
    pub fn lines_since(&self, build_id: &str, from: u64, max: usize) -> Option<(Vec<LogLine>, u64)> {
        let inner = self.lock();
        let b = inner.builds.get(build_id)?;
        let skip = from.saturating_sub(b.dropped) as usize;
        let lines: Vec<LogLine> = b.lines.iter().skip(skip).take(max).cloned().collect();
        let next = b.dropped + (skip.min(b.lines.len()) + lines.len()) as u64;
        Some((lines, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(step: &str, line: &str) -> BuildEvent {
        BuildEvent::Log { step_id: step.into(), worker_id: "w".into(), stream: "stdout".into(), line: line.into() }
    }

    fn history(builds: usize, bytes: usize) -> BuildHistory {
        let h = BuildHistory::default();
        h.set_limits(HistoryLimits { builds, log_bytes_per_build: bytes });
        h
    }

    #[test]
    fn lines_are_kept_in_order_with_their_step() {
        let h = history(10, 1 << 20);
        h.record("b1", &log("a", "one"));
        h.record("b1", &log("b", "two"));
        let lines: Vec<_> = h.get("b1").unwrap().lines.into_iter().map(|l| (l.step_id, l.line)).collect();
        assert_eq!(lines, [("a".to_string(), "one".to_string()), ("b".into(), "two".into())]);
    }

    #[test]
    fn only_the_newest_builds_are_kept() {
        let h = history(2, 1 << 20);
        for b in ["b1", "b2", "b3"] {
            h.record(b, &log("s", b));
        }
        assert!(h.get("b1").is_none());
        assert!(h.get("b2").is_some() && h.get("b3").is_some());
    }

    #[test]
    fn a_build_over_its_byte_bound_keeps_its_newest_lines_and_counts_the_dropped() {
        let h = history(10, 3 * (10 + 1 + 32));
        for i in 0..10 {
            h.record("b1", &log("s", &format!("line-{i:05}")));
        }
        let kept = h.get("b1").unwrap();
        let lines: Vec<_> = kept.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(lines, ["line-00007", "line-00008", "line-00009"]);
        assert_eq!(kept.dropped, 7);
    }

    #[test]
    fn step_times_follow_start_retry_and_end() {
        let h = history(10, 1 << 20);
        let started = |attempt| BuildEvent::Started { step_id: "s".into(), worker_id: "w".into(), attempt, name: String::new() };
        h.record_at("b1", &started(1), 10);
        h.record_at("b1", &started(2), 20);
        let done = BuildEvent::Failed { step_id: "s".into(), worker_id: "w".into(), message: String::new(), exit_code: 1 };
        h.record_at("b1", &done, 35);
        assert_eq!(h.get("b1").unwrap().steps["s"], StepTimes { started_ms: 20, finished_ms: 35, ..Default::default() });
    }

    #[test]
    fn a_finished_step_keeps_what_its_worker_reported() {
        let h = history(10, 1 << 20);
        h.record_at("b1", &BuildEvent::Started { step_id: "s".into(), worker_id: "w".into(), attempt: 1, name: String::new() }, 10);
        let done = BuildEvent::Finished { step_id: "s".into(), worker_id: "w".into(), duration_ms: 7, bytes_restored: 99, layers: vec![], config: vec![] };
        h.record_at("b1", &done, 20);
        assert_eq!(h.step_times("b1").unwrap()["s"], StepTimes { started_ms: 10, finished_ms: 20, worker_ms: 7, bytes_restored: 99, ..Default::default() });
    }

    #[test]
    fn a_steps_phases_and_its_late_commit_are_kept_and_count_towards_the_bytes_committed() {
        let h = history(10, 1 << 20);
        h.record_at("b1", &BuildEvent::Started { step_id: "s".into(), worker_id: "w".into(), attempt: 1, name: String::new() }, 10);
        let result = StepPhases { restore_ms: 3, run_ms: 5, upload_ms: 2, layer_bytes: 1000, ..Default::default() };
        h.record_phases("b1", "s", &result);
        h.record_commit_follows("b1", "s");
        h.record_phases("b1", "s", &StepPhases { commit_ms: 4, cache_bytes_uploaded: 500, ..Default::default() });
        h.record_commit_done("b1", "s", 40);
        let t = h.step_times("b1").unwrap()["s"];
        assert_eq!(t.phases, StepPhases { commit_ms: 4, cache_bytes_uploaded: 500, ..result });
        assert!(t.commit_follows);
        assert_eq!(t.commit_done_ms, 40);
        assert_eq!(h.totals(["b1", "unknown"]), [Some(BuildTotals { bytes_restored: 0, bytes_committed: 1500 }), None]);
    }

    #[test]
    fn phases_of_a_step_this_node_did_not_see_start_are_not_kept() {
        let h = history(10, 1 << 20);
        h.record("b1", &log("other", "x"));
        h.record_phases("b1", "s", &StepPhases { run_ms: 5, ..Default::default() });
        assert!(h.step_times("b1").unwrap().is_empty());
    }

    #[test]
    fn lines_since_follows_a_log_across_dropped_lines() {
        let h = history(10, 3 * (10 + 1 + 32));
        for i in 0..5 {
            h.record("b1", &log("s", &format!("line-{i:05}")));
        }
        // Lines 0 and 1 were dropped: a reader at 1 gets 2.. and the next number.
        let (lines, next) = h.lines_since("b1", 1, 2).unwrap();
        assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["line-00002", "line-00003"]);
        assert_eq!(next, 4);
        let (lines, next) = h.lines_since("b1", next, 100).unwrap();
        assert_eq!((lines.len(), next), (1, 5));
        assert_eq!(h.lines_since("b1", 5, 100).unwrap(), (vec![], 5));
    }

    #[test]
    fn zero_builds_keeps_nothing() {
        let h = history(0, 1 << 20);
        h.record("b1", &log("s", "x"));
        assert!(h.get("b1").is_none());
    }
}
