//! What the pages show, shaped from the replicated state and the history
//! this node kept of the builds it ran (`build_history.rs`): plain
//! functions, so the pages, the live feed and the tests share them.

use std::collections::BTreeMap;

use rbk_coordinator::build_history::{BuildHistory, StepTimes};
use rbk_coordinator::model::{BuildState, StepPhases};
use rbk_coordinator::state::{BuildRecord, StateMachine, StepState};
use serde::Serialize;

/// The builds page's filters (`?status=...&q=...`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BuildFilter {
    /// running | succeeded | failed | cancelled; empty: all.
    #[serde(default)]
    pub status: String,
    /// Text the build id or a step name contains; empty: all.
    #[serde(default)]
    pub q: String,
}

impl BuildFilter {
    fn keeps(&self, b: &BuildRecord) -> bool {
        (self.status.is_empty() || b.state.as_str() == self.status)
            && (self.q.is_empty() || b.id.contains(&self.q) || b.graph.iter().any(|n| n.name.contains(&self.q)))
    }
}

/// One line of the builds page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildRow {
    pub id: String,
    pub state: &'static str,
    /// The build's last step (its target's last instruction).
    pub title: String,
    pub created: String,
    /// The name of the token that submitted it (never the token).
    pub submitter: String,
    pub duration: String,
    pub steps_total: usize,
    pub steps_run: usize,
    pub steps_cached: usize,
    /// Cache-mount bytes restored, when this node ran the build.
    pub restored: String,
    /// Bytes its steps stored (layers and cache-mount captures), when this
    /// node ran the build.
    pub committed: String,
}

/// Builds shown at most on one page.
pub const MAX_ROWS: usize = 1000;

/// The tenant's builds, newest first, filtered: only `namespace`'s.
pub fn build_rows(m: &StateMachine, history: &BuildHistory, namespace: &str, filter: &BuildFilter, now_ms: u64) -> Vec<BuildRow> {
    let mut builds: Vec<&BuildRecord> = m.builds_in(namespace).filter(|b| filter.keeps(b)).collect();
    builds.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
    builds.truncate(MAX_ROWS);
    let totals = history.totals(builds.iter().map(|b| b.id.as_str()));
    builds
        .into_iter()
        .zip(totals)
        .map(|(b, totals)| {
            let count = |s: StepState| b.steps.iter().filter(|x| x.state == s).count();
            let end = if b.state == BuildState::Running { now_ms } else { b.finished_ms };
            let totals = totals.unwrap_or_default();
            let shown = |n: u64| if n == 0 { String::new() } else { bytes(n) };
            BuildRow {
                id: b.id.clone(),
                state: b.state.as_str(),
                title: b.graph.last().map(|n| n.name.clone()).unwrap_or_default(),
                created: utc(b.created_ms),
                submitter: b.submitter.clone(),
                duration: duration(end.saturating_sub(b.created_ms)),
                steps_total: b.steps.len(),
                steps_run: count(StepState::Done) + count(StepState::Failed),
                steps_cached: count(StepState::Cached),
                restored: shown(totals.bytes_restored),
                committed: shown(totals.bytes_committed),
            }
        })
        .collect()
}

/// One step of the build page: what it is, how it went, and its times on
/// one clock (milliseconds since the epoch; 0: not seen by this node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepView {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub worker: String,
    pub attempts: u32,
    pub message: String,
    /// The Dockerfile and line the step comes from, when its payload says.
    pub file: String,
    pub line: u64,
    pub deps: Vec<String>,
    pub cache_mounts: Vec<String>,
    /// When its last dependency finished (the build's start for a root):
    /// the queue wait runs from here to `started_ms`.
    pub ready_ms: u64,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// The worker's own measure (restore, run, upload).
    pub worker_ms: u64,
    pub bytes_restored: u64,
    pub cached: bool,
    /// Where the time went on the worker (restore, run, upload, commit)
    /// and what it stored; zero from workers that do not say.
    pub phases: StepPhases,
    /// Its cache mounts were captured after its result; the commit landed
    /// at `commit_done_ms` (0: not yet).
    pub commit_follows: bool,
    pub commit_done_ms: u64,
}

/// The build page's data (also what the live feed sends as `steps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildView {
    pub id: String,
    pub state: &'static str,
    pub created_ms: u64,
    pub finished_ms: u64,
    pub message: String,
    /// Whether this node keeps the build's logs and step times.
    pub kept: bool,
    pub steps: Vec<StepView>,
}

/// The tenant's build `id`, or `None` (also for another tenant's).
pub fn build_view(m: &StateMachine, history: &BuildHistory, namespace: &str, id: &str) -> Option<BuildView> {
    let b = m.build(id).filter(|b| b.namespace == namespace)?;
    let times = history.step_times(id);
    let kept = times.is_some();
    let times = times.unwrap_or_default();
    let time = |s: &str| times.get(s).copied().unwrap_or_default();
    let steps = b
        .steps
        .iter()
        .map(|s| {
            let node = b.graph.iter().find(|n| n.id == s.id);
            let (file, line) = node.map(|n| source_of(&n.payload)).unwrap_or_default();
            let deps = node.map(|n| n.deps.clone()).unwrap_or_default();
            let t: StepTimes = time(&s.id);
            StepView {
                id: s.id.clone(),
                name: node.map(|n| n.name.clone()).unwrap_or_default(),
                state: s.state.as_str(),
                worker: s.worker_id.clone(),
                attempts: s.attempts,
                message: s.message.clone(),
                file,
                line,
                ready_ms: ready_at(b.created_ms, &deps, &times),
                deps,
                cache_mounts: node.map(|n| n.cache_mounts.iter().map(|c| format!("{} ({})", c.id, c.sharing.as_str())).collect()).unwrap_or_default(),
                started_ms: t.started_ms,
                finished_ms: t.finished_ms,
                worker_ms: t.worker_ms,
                bytes_restored: t.bytes_restored,
                cached: t.cached || s.state == StepState::Cached,
                phases: t.phases,
                commit_follows: t.commit_follows,
                commit_done_ms: t.commit_done_ms,
            }
        })
        .collect();
    Some(BuildView { id: b.id.clone(), state: b.state.as_str(), created_ms: b.created_ms, finished_ms: b.finished_ms, message: b.message.clone(), kept, steps })
}

/// When a step could start: its last dependency's end, or the build's
/// start; a dependency this node did not see end counts as the start.
fn ready_at(created_ms: u64, deps: &[String], times: &BTreeMap<String, StepTimes>) -> u64 {
    deps.iter().filter_map(|d| times.get(d)).map(|t| t.finished_ms).fold(created_ms, u64::max)
}

/// The Dockerfile and line a planned step's payload names (`file`,
/// `line`), read conservatively: anything else is "unknown".
fn source_of(payload: &[u8]) -> (String, u64) {
    #[derive(serde::Deserialize)]
    struct Source {
        #[serde(default)]
        file: String,
        #[serde(default)]
        line: u64,
    }
    serde_json::from_slice::<Source>(payload).map(|s| (s.file, s.line)).unwrap_or_default()
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SSZ`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// A duration as people read it: `850 ms`, `12.3 s`, `4 min 05 s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_the_epoch_and_a_leap_day() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_827_696_000), "2000-02-29 12:34:56Z");
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 << 20), "20.0 MiB");
    }

    #[test]
    fn a_step_is_ready_when_its_last_dependency_finished() {
        let times = BTreeMap::from([
            ("a".to_string(), StepTimes { finished_ms: 50, ..Default::default() }),
            ("b".to_string(), StepTimes { finished_ms: 80, ..Default::default() }),
        ]);
        assert_eq!(ready_at(10, &["a".into(), "b".into()], &times), 80);
        assert_eq!(ready_at(10, &[], &times), 10);
        assert_eq!(ready_at(10, &["unseen".into()], &times), 10);
    }

    #[test]
    fn the_source_line_comes_from_the_payload_or_is_unknown() {
        assert_eq!(source_of(br#"{"file":"Dockerfile","line":7,"work":{}}"#), ("Dockerfile".into(), 7));
        assert_eq!(source_of(b"not json"), (String::new(), 0));
    }
}
