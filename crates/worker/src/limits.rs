//! Per-step resource limits: the pool's defaults combined with what a step
//! asks for (a step may only lower them), and, after the container ended,
//! which limit it ran into, read from the kernel's cgroup counters so the
//! failure names the limit instead of a bare exit code.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::step::Limits;

/// The limits a step runs with: each one is the smaller of the pool's
/// default and the step's own request; a step cannot raise a pool limit,
/// only lower it (a build that asks for more is given the pool's).
pub fn effective(pool: &Limits, step: &Limits) -> Limits {
    fn lower<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    Limits {
        memory_bytes: lower(pool.memory_bytes, step.memory_bytes.filter(|m| *m > 0)),
        pids: lower(pool.pids, step.pids.filter(|p| *p > 0)),
        wall_time_ms: lower(pool.wall_time_ms, step.wall_time_ms.filter(|t| *t > 0)),
    }
}

/// A limit a step ran into; its `Display` is the message the step fails
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The kernel's OOM killer fired inside the step's memory cgroup.
    /// `certain` is false when the runtime left no counter to read (crun
    /// removes the cgroup as the container ends) and the step was killed by
    /// SIGKILL with a memory limit set.
    Memory { limit_bytes: i64, certain: bool },
    /// A `fork`/`clone` was refused because the step had `limit` tasks.
    Pids { limit: i64, refused: u64 },
    /// No counters to read (crun removes the cgroup as the container
    /// ends), but the step failed after a fork failed with `EAGAIN`.
    PidsLikely { limit: i64 },
    /// The container was killed at the wall-time limit.
    WallTime { limit: Duration },
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitHit::Memory { limit_bytes, certain: true } => write!(f, "memory limit {} exceeded (OOM kill)", human_bytes(*limit_bytes)),
            LimitHit::Memory { limit_bytes, certain: false } => {
                write!(f, "memory limit {} exceeded (killed by SIGKILL, most likely the OOM killer)", human_bytes(*limit_bytes))
            }
            LimitHit::Pids { limit, refused } => write!(f, "pids limit {limit} reached ({refused} fork/clone refused)"),
            LimitHit::PidsLikely { limit } => {
                write!(f, "pids limit {limit} reached (a fork failed with \"Resource temporarily unavailable\", most likely at this limit)")
            }
            LimitHit::WallTime { limit } => write!(f, "wall-time limit {} exceeded (killed)", human_duration(*limit)),
        }
    }
}

/// `256 MiB`, `1.5 GiB`, `1000 bytes`.
pub fn human_bytes(b: i64) -> String {
    const UNITS: [(&str, i64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if b >= size {
            return if b % size == 0 { format!("{} {name}", b / size) } else { format!("{:.1} {name}", b as f64 / size as f64) };
        }
    }
    format!("{b} bytes")
}

fn human_duration(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// What the kernel counted in a finished container's cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Processes the OOM killer killed in the memory cgroup.
    pub oom_kills: u64,
    /// Forks refused by the pids controller.
    pub pids_refused: u64,
}

impl CgroupEvents {
    /// Reads the counters of a container whose cgroup directories are
    /// `memory` and `pids` (cgroup v1), or one `unified` directory (v2).
    /// Missing files count as zero: the counters only add detail to a
    /// failure message.
    pub fn read(memory: Option<&Path>, pids: Option<&Path>, unified: Option<&Path>) -> Self {
        let mut ev = CgroupEvents::default();
        if let Some(m) = memory {
            // v1: `memory.oom_control` has `oom_kill N` (Linux 4.13+).
            ev.oom_kills = ev.oom_kills.max(counter(&m.join("memory.oom_control"), "oom_kill"));
        }
        if let Some(p) = pids {
            ev.pids_refused = ev.pids_refused.max(counter(&p.join("pids.events"), "max"));
        }
        if let Some(u) = unified {
            ev.oom_kills = ev.oom_kills.max(counter(&u.join("memory.events"), "oom_kill"));
            ev.pids_refused = ev.pids_refused.max(counter(&u.join("pids.events"), "max"));
        }
        ev
    }
}

/// The value of `key N` in a flat-keyed cgroup file; 0 when absent.
fn counter(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_can_lower_a_pool_limit_but_not_raise_it() {
        let pool = Limits { memory_bytes: Some(1 << 30), pids: Some(1000), wall_time_ms: None };
        let step = Limits { memory_bytes: Some(256 << 20), pids: Some(5000), wall_time_ms: Some(60_000) };
        assert_eq!(effective(&pool, &step), Limits { memory_bytes: Some(256 << 20), pids: Some(1000), wall_time_ms: Some(60_000) });
    }

    #[test]
    fn zero_or_negative_step_limits_do_not_remove_the_pool_limit() {
        let pool = Limits { memory_bytes: Some(1 << 30), pids: Some(1000), wall_time_ms: Some(1000) };
        let step = Limits { memory_bytes: Some(0), pids: Some(-1), wall_time_ms: Some(0) };
        assert_eq!(effective(&pool, &step), pool);
    }

    #[test]
    fn messages_name_the_limit() {
        assert_eq!(LimitHit::Memory { limit_bytes: 256 << 20, certain: true }.to_string(), "memory limit 256 MiB exceeded (OOM kill)");
        assert_eq!(LimitHit::Pids { limit: 64, refused: 3 }.to_string(), "pids limit 64 reached (3 fork/clone refused)");
        assert!(LimitHit::PidsLikely { limit: 64 }.to_string().starts_with("pids limit 64 reached (a fork failed"));
        assert_eq!(LimitHit::WallTime { limit: Duration::from_secs(2) }.to_string(), "wall-time limit 2s exceeded (killed)");
    }

    #[test]
    fn counters_are_read_from_flat_keyed_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        std::fs::write(d.path().join("pids.events"), "max 7\n").unwrap();
        assert_eq!(CgroupEvents::read(Some(d.path()), Some(d.path()), None), CgroupEvents { oom_kills: 2, pids_refused: 7 });
    }
}
