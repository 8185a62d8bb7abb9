//! Per-step log clipping on the coordinator (issue #15, item 7).
//!
//! Workers clip a step's output themselves (2 MiB by default), but the
//! coordinator cannot rely on that: a worker configured otherwise, or one
//! that misbehaves, could stream without end, and every line is fanned out
//! to the build's watchers and Redis. So the coordinator counts each
//! running step's log bytes too and, past
//! [`SchedulerConfig::max_step_log_bytes`](super::SchedulerConfig), passes
//! one marker line and drops the rest (the step keeps running).

/// What to pass on for `line`, given the bytes the step has logged so far
/// (updated): the line, the clipping marker once, then nothing.
pub(super) fn admit(logged: &mut u64, limit: u64, line: String) -> Option<String> {
    if *logged > limit {
        return None;
    }
    *logged = logged.saturating_add(line.len() as u64 + 1);
    if *logged > limit {
        return Some(marker(limit));
    }
    Some(line)
}

/// The line shown once a step's log passed the coordinator's limit.
pub(super) fn marker(limit: u64) -> String {
    format!("[rbk] log clipped by the coordinator: this step sent more than {limit} bytes of output; the rest is not shown (the step keeps running)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_pass_until_the_limit_then_one_marker_then_nothing() {
        let mut logged = 0;
        // Each line counts with its newline: 5 + 5 bytes fill the 10.
        assert_eq!(admit(&mut logged, 10, "1234".into()).as_deref(), Some("1234"));
        assert_eq!(admit(&mut logged, 10, "5678".into()).as_deref(), Some("5678"));
        assert_eq!(admit(&mut logged, 10, "x".into()), Some(marker(10)));
        assert_eq!(admit(&mut logged, 10, "y".into()), None);
    }
}
