//! Recording methods and the names they show up under.

use std::time::Duration;

use rbk_metrics::exposition::sample;
use rbk_metrics::{CacheKind, Metrics, StepResult};

#[test]
fn the_running_step_gauge_drops_when_the_guard_does() {
    let m = Metrics::new();
    let a = m.worker_step_running();
    let b = m.worker_step_running();
    assert_eq!(sample(&m.encode_prometheus(), "rbk_worker_steps_running", &[]), Some(2.0));
    drop(a);
    drop(b);
    assert_eq!(sample(&m.encode_prometheus(), "rbk_worker_steps_running", &[]), Some(0.0));
}

#[test]
fn raft_setters_show_the_latest_status() {
    let m = Metrics::new();
    m.set_raft_term(3);
    m.set_raft_leader(2, false);
    m.set_raft_commit_index(41);
    m.set_raft_applied_index(40);
    m.set_raft_term(4);
    m.set_raft_leader(1, true);
    let t = m.encode_prometheus();
    assert_eq!(sample(&t, "rbk_raft_term", &[]), Some(4.0));
    assert_eq!(sample(&t, "rbk_raft_leader_id", &[]), Some(1.0));
    assert_eq!(sample(&t, "rbk_raft_is_leader", &[]), Some(1.0));
    assert_eq!(sample(&t, "rbk_raft_commit_index", &[]), Some(41.0));
    assert_eq!(sample(&t, "rbk_raft_applied_index", &[]), Some(40.0));
}

#[test]
fn cache_hits_and_misses_are_counted_per_cache() {
    let m = Metrics::new();
    m.cache_lookup(CacheKind::Action, true);
    m.cache_lookup(CacheKind::CacheMount, false);
    m.cache_lookup(CacheKind::CacheMount, true);
    m.cache_lookup(CacheKind::CacheMount, true);
    let t = m.encode_prometheus();
    assert_eq!(sample(&t, "rbk_cache_hits_total", &[("cache", "action")]), Some(1.0));
    assert_eq!(sample(&t, "rbk_cache_misses_total", &[("cache", "action")]), Some(0.0));
    assert_eq!(sample(&t, "rbk_cache_hits_total", &[("cache", "cache_mount")]), Some(2.0));
    assert_eq!(sample(&t, "rbk_cache_misses_total", &[("cache", "cache_mount")]), Some(1.0));
    assert_eq!(sample(&t, "rbk_cache_hits_total", &[("cache", "layer")]), Some(0.0));
}

#[test]
fn worker_and_cache_mount_bytes_accumulate() {
    let m = Metrics::new();
    m.worker_restored(1000);
    m.worker_restored(24);
    m.worker_committed(5);
    m.cache_mount_restored(7);
    m.cache_mount_committed(300);
    m.worker_step_finished(StepResult::Done);
    m.step_succeeded_after(Duration::from_secs(2));
    let t = m.encode_prometheus();
    assert_eq!(sample(&t, "rbk_worker_restored_bytes_total", &[]), Some(1024.0));
    assert_eq!(sample(&t, "rbk_worker_committed_bytes_total", &[]), Some(5.0));
    assert_eq!(sample(&t, "rbk_cache_mount_restored_bytes_total", &[]), Some(7.0));
    assert_eq!(sample(&t, "rbk_cache_mount_commits_total", &[]), Some(1.0));
    assert_eq!(sample(&t, "rbk_cache_mount_committed_bytes_total", &[]), Some(300.0));
    assert_eq!(sample(&t, "rbk_worker_steps_total", &[("result", "done")]), Some(1.0));
    assert_eq!(sample(&t, "rbk_step_duration_seconds_count", &[]), Some(1.0));
}

#[test]
fn every_metric_is_named_rbk_or_process_and_documented() {
    let t = Metrics::new().encode_prometheus();
    let helps: Vec<_> = t.lines().filter(|l| l.starts_with("# HELP ")).collect();
    // Families without series yet (store, build duration) print no HELP.
    assert!(helps.len() >= 20, "{t}");
    for h in helps {
        let name = h.split_whitespace().nth(2).unwrap();
        // process_*: the Prometheus client libraries' standard process
        // series, under their standard names so dashboards find them.
        assert!(name.starts_with("rbk_") || name.starts_with("process_"), "{h}");
        let doc = include_str!("../../../docs/metrics.md");
        let base = name.trim_end_matches("_total");
        assert!(doc.contains(&format!("`{base}")), "{name} is missing from docs/metrics.md");
    }
}
