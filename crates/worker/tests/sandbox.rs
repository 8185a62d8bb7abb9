//! The sandbox around a RUN step (issue #14): resource limits that fail
//! the step with a message naming the limit, bounded output, seccomp and
//! capabilities, the step's own network namespace, entitlements, and a
//! state directory other local users cannot enter. Real runc and crun.

mod common;

use common::*;
use rbk_worker::{Executor, LogLine, RuntimeKind, StepInputs, WorkerConfig};
use serde_json::json;

fn executor_with(kind: RuntimeKind, f: impl FnOnce(&mut WorkerConfig)) -> (tempfile::TempDir, Executor) {
    let state = tempfile::tempdir().unwrap();
    let program = match kind {
        RuntimeKind::Runc => rbk_testsupport::program("runc"),
        RuntimeKind::Crun => rbk_testsupport::program("crun"),
    };
    let mut config = WorkerConfig::new(state.path(), kind, program);
    f(&mut config);
    (state, Executor::new(config).unwrap())
}

async fn output_of(ex: &Executor, base: &Base, s: serde_json::Value) -> (rbk_worker::StepOutput, Vec<LogLine>) {
    let (sink, lines) = collect();
    let out = ex.execute(&step(base, s), &base.layout, &StepInputs::default(), sink).await.unwrap();
    let lines = lines.lock().unwrap().clone();
    (out, lines)
}

const BOTH: [RuntimeKind; 2] = [RuntimeKind::Runc, RuntimeKind::Crun];

// ---- resource limits ----

#[tokio::test]
async fn step_past_its_memory_limit_fails_naming_the_limit_and_the_next_step_runs() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor_with(kind, |c| c.limits.memory_bytes = Some(64 << 20));
        // tmpfs pages are charged to the step's memory cgroup; `dd` is the
        // process the OOM killer picks.
        let mut s = shell("dd if=/dev/zero of=/scratch/big bs=1M count=200");
        s["mounts"] = json!([{"target": "/scratch", "type": "tmpfs", "size_bytes": 512u64 << 20}]);
        let (out, _) = output_of(&ex, &base, s).await;
        assert!(!out.succeeded() && out.layer.is_none(), "{kind:?}: exit {}", out.exit_code);
        let why = out.why();
        assert!(why.starts_with("memory limit 64 MiB exceeded"), "{kind:?}: {why}");
        let (next, _) = output_of(&ex, &base, shell("echo fine > /ok")).await;
        assert!(next.succeeded(), "{kind:?}: next step {:?}", next.tail);
    }
}

#[tokio::test]
async fn step_can_lower_the_pool_memory_limit_but_not_raise_it() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.limits.memory_bytes = Some(64 << 20));
    let mut s = shell("dd if=/dev/zero of=/scratch/big bs=1M count=200");
    s["mounts"] = json!([{"target": "/scratch", "type": "tmpfs", "size_bytes": 512u64 << 20}]);
    s["limits"] = json!({"memory_bytes": 1i64 << 40});
    let (out, _) = output_of(&ex, &base, s.clone()).await;
    assert!(out.why().starts_with("memory limit 64 MiB exceeded"), "{}", out.why());
    s["limits"] = json!({"memory_bytes": 32 << 20});
    let (out, _) = output_of(&ex, &base, s).await;
    assert!(out.why().starts_with("memory limit 32 MiB exceeded"), "{}", out.why());
}

#[tokio::test]
async fn step_forking_past_its_pids_limit_fails_naming_the_limit() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.limits.pids = Some(16));
    let (out, _) = output_of(&ex, &base, shell("for i in $(seq 1 40); do sleep 2 & done; wait; echo finished")).await;
    assert!(!out.succeeded() && out.layer.is_none());
    assert!(out.why().starts_with("pids limit 16 reached"), "{}", out.why());
    let (next, _) = output_of(&ex, &base, shell("true")).await;
    assert!(next.succeeded(), "{:?}", next.tail);
}

#[tokio::test]
async fn step_past_its_wall_time_limit_is_killed_naming_the_limit() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor_with(kind, |c| c.limits.wall_time_ms = Some(60_000));
        let mut s = shell("sleep 600");
        s["limits"] = json!({"wall_time_ms": 1000});
        let (out, _) = output_of(&ex, &base, s).await;
        assert!(out.timed_out && !out.succeeded(), "{kind:?}");
        assert!(out.why().starts_with("wall-time limit 1s exceeded (killed)"), "{kind:?}: {}", out.why());
        let (next, _) = output_of(&ex, &base, shell("true")).await;
        assert!(next.succeeded(), "{kind:?}: {:?}", next.tail);
    }
}

// ---- output bounds ----

#[tokio::test]
async fn a_50_mb_line_is_split_into_bounded_pieces_and_the_log_clipped() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    // 50 MB of `a` with no newline, then a marker the step writes to a file
    // after printing: it kept running.
    let (out, lines) = output_of(&ex, &base, shell("head -c 50000000 /dev/zero | tr '\\0' a; echo done > /after")).await;
    assert!(out.succeeded(), "{:?}", out.why());
    assert!(out.log_clipped);
    assert!(lines.iter().all(|l| l.line.len() <= rbk_worker::MAX_LINE_BYTES), "a line longer than the bound");
    let sent: usize = lines.iter().map(|l| l.line.len() + 1).sum();
    assert!(sent <= rbk_worker::DEFAULT_LOG_LIMIT_BYTES as usize + 1024, "{sent} bytes sent");
    assert!(lines.last().unwrap().line.contains("log clipped"), "{:?}", lines.last().map(|l| &l.line[..l.line.len().min(80)]));
    assert!(entries(out.layer.as_ref().unwrap()).contains_key("after"));
}

#[tokio::test]
async fn a_100_mb_log_is_clipped_with_one_marker_at_the_configured_size() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor_with(kind, |c| c.log_limit_bytes = 1 << 20);
        // ~100 MB: 1.6 M lines of 63 bytes + newline.
        let cmd = "yes 012345678901234567890123456789012345678901234567890123456789012 | head -n 1600000; echo tail-line";
        let (out, lines) = output_of(&ex, &base, shell(cmd)).await;
        assert!(out.succeeded(), "{kind:?}: {}", out.why());
        assert!(out.log_clipped, "{kind:?}");
        let markers = lines.iter().filter(|l| l.line.contains("log clipped")).count();
        assert_eq!(markers, 1, "{kind:?}");
        let sent: usize = lines.iter().map(|l| l.line.len() + 1).sum();
        assert!(sent <= (1 << 20) + 1024, "{kind:?}: {sent} bytes sent");
        // The step ran to its end: the last line is in the tail.
        assert_eq!(out.tail.last().map(String::as_str), Some("tail-line"), "{kind:?}");
    }
}

// ---- seccomp, capabilities, privileges ----

#[tokio::test]
async fn step_runs_under_seccomp_filter_with_no_new_privileges() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor(kind);
        let (out, lines) = output_of(&ex, &base, shell("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")).await;
        assert!(out.succeeded(), "{kind:?}: {:?}", out.tail);
        let text: Vec<String> = lines.iter().map(|l| l.line.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert!(text.contains(&"Seccomp: 2".to_string()) && text.contains(&"NoNewPrivs: 1".to_string()), "{kind:?}: {text:?}");
    }
}

#[tokio::test]
async fn step_cannot_open_a_packet_socket() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor(kind);
        // busybox arping opens its AF_PACKET socket before anything else.
        let (_, lines) = output_of(&ex, &base, shell("arping -c1 -I lo 127.0.0.1")).await;
        let text: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
        assert!(text.iter().any(|l| l.contains("arping: socket") && l.contains("not permitted")), "{kind:?}: {text:?}");
    }
}

#[tokio::test]
async fn pool_that_allows_net_raw_lets_a_step_open_a_packet_socket() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.allow_net_raw = true);
    let (_, lines) = output_of(&ex, &base, shell("arping -c1 -I lo 127.0.0.1")).await;
    let text: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    assert!(!text.iter().any(|l| l.contains("arping: socket")), "{text:?}");
    assert!(text.iter().any(|l| l.contains("arping")), "arping said nothing: {text:?}");
}

#[tokio::test]
async fn step_cannot_create_user_or_network_namespaces() {
    let base = busybox_base();
    for kind in BOTH {
        let (_s, ex) = executor(kind);
        let (out, lines) = output_of(&ex, &base, shell("unshare -U -r -n true")).await;
        assert_ne!(out.exit_code, 0, "{kind:?}: unshare succeeded");
        assert!(lines.iter().any(|l| l.line.contains("not permitted")), "{kind:?}: {:?}", lines.iter().map(|l| &l.line).collect::<Vec<_>>());
    }
}
