//! The sandbox around a RUN step (issue #14): resource limits that fail
//! the step with a message naming the limit, bounded output, seccomp and
//! capabilities, the step's own network namespace, entitlements, and a
//! state directory other local users cannot enter. Real runc and crun.

mod common;

use common::*;
use rbk_worker::{Entitlement, Executor, LogLine, RuntimeKind, StepInputs, WorkerConfig};
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
    for kind in BOTH {
        let (_s, ex) = executor_with(kind, |c| c.limits.pids = Some(16));
        let (out, _) = output_of(&ex, &base, shell("for i in $(seq 1 40); do sleep 2 & done; wait; echo finished")).await;
        assert!(!out.succeeded() && out.layer.is_none(), "{kind:?}");
        assert!(out.why().starts_with("pids limit 16 reached"), "{kind:?}: {}", out.why());
        let (next, _) = output_of(&ex, &base, shell("true")).await;
        assert!(next.succeeded(), "{kind:?}: {:?}", next.tail);
    }
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

// ---- network ----

#[tokio::test]
async fn default_network_step_cannot_reach_a_service_on_the_workers_loopback() {
    let base = busybox_base();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for kind in BOTH {
        let (_s, ex) = executor(kind);
        // The loopback address, and the gateway (which pasta would map to
        // the worker's loopback without --no-map-gw).
        let cmd = format!(
            "gw=$(ip route | awk '/^default/ {{print $3}}'); echo gateway=$gw; \
             for a in 127.0.0.1 $gw; do if nc -w 2 $a {port} </dev/null; then echo reached-$a; else echo refused-$a; fi; done"
        );
        let (out, lines) = output_of(&ex, &base, shell(&cmd)).await;
        assert!(out.succeeded(), "{kind:?}: {:?}", out.tail);
        let text: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
        assert!(text.iter().any(|l| l.starts_with("gateway=") && l.len() > "gateway=".len()), "{kind:?}: no default route: {text:?}");
        assert!(!text.iter().any(|l| l.starts_with("reached-")), "{kind:?}: {text:?}");
        assert_eq!(text.iter().filter(|l| l.starts_with("refused-")).count(), 2, "{kind:?}: {text:?}");
        assert!(listener.accept().is_err(), "{kind:?}: the step connected to the worker's loopback");
    }
}

#[tokio::test]
async fn default_network_step_has_an_interface_and_the_forwarded_resolver() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (out, lines) = output_of(&ex, &base, shell("ls /sys/class/net; cat /etc/resolv.conf")).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    let text: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    assert!(text.iter().any(|l| *l != "lo" && !l.contains(' ') && !l.is_empty()), "only lo: {text:?}");
    assert!(text.contains(&"nameserver 169.254.1.1"), "{text:?}");
    // Nothing of the network setup lands in the layer.
    assert!(!entries(out.layer.as_ref().unwrap()).keys().any(|k| k.starts_with("etc/")), "etc files in the layer");
}

#[tokio::test]
async fn step_network_namespaces_are_torn_down_with_their_pasta() {
    let base = busybox_base();
    let (state, ex) = executor_with(RuntimeKind::Runc, |c| c.netns_pool = 0);
    let (out, _) = output_of(&ex, &base, shell("true")).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    let left: Vec<_> = std::fs::read_dir(state.path().join("netns")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---- entitlements ----

fn host_network_step() -> serde_json::Value {
    let mut s = shell("ls /sys/class/net");
    s["network"] = json!("host");
    s
}

#[tokio::test]
async fn host_network_is_refused_without_the_pool_policy_before_anything_runs() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    let inputs = StepInputs { allow: vec![Entitlement::NetworkHost], ..Default::default() };
    let err = ex.execute(&step(&base, host_network_step()), &base.layout, &inputs, rbk_worker::logs::discard()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("network.host") && msg.contains("--network=host") && msg.contains("policy"), "{msg}");
    // Nothing was unpacked or started.
    assert_eq!(std::fs::read_dir(state.path().join("layers")).unwrap().count(), 0);
}

#[tokio::test]
async fn host_network_is_refused_without_the_builds_allow() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.entitlements = vec![Entitlement::NetworkHost]);
    let err = ex.execute(&step(&base, host_network_step()), &base.layout, &StepInputs::default(), rbk_worker::logs::discard()).await.unwrap_err();
    assert!(err.to_string().contains("--allow network.host"), "{err}");
}

#[tokio::test]
async fn host_network_runs_with_pool_policy_and_allow() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.entitlements = vec![Entitlement::NetworkHost]);
    let inputs = StepInputs { allow: vec![Entitlement::NetworkHost], ..Default::default() };
    let (sink, lines) = collect();
    let out = ex.execute(&step(&base, host_network_step()), &base.layout, &inputs, sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let names: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    let host: Vec<String> = std::fs::read_dir("/sys/class/net").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(host.iter().all(|h| names.iter().any(|n| n.split_whitespace().any(|w| w == h))), "step {names:?} host {host:?}");
}

fn insecure_step() -> serde_json::Value {
    let mut s = shell("mkdir -p /m && mount -t tmpfs none /m && echo mounted");
    s["security"] = json!("insecure");
    s
}

#[tokio::test]
async fn insecure_is_refused_without_the_pool_policy() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let inputs = StepInputs { allow: vec![Entitlement::SecurityInsecure], ..Default::default() };
    let err = ex.execute(&step(&base, insecure_step()), &base.layout, &inputs, rbk_worker::logs::discard()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("security.insecure") && msg.contains("policy"), "{msg}");
}

#[tokio::test]
async fn insecure_runs_privileged_with_pool_policy_and_allow() {
    let base = busybox_base();
    let (_s, ex) = executor_with(RuntimeKind::Runc, |c| c.entitlements = vec![Entitlement::SecurityInsecure]);
    let inputs = StepInputs { allow: vec![Entitlement::SecurityInsecure], ..Default::default() };
    let (sink, lines) = collect();
    let out = ex.execute(&step(&base, insecure_step()), &base.layout, &inputs, sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    assert!(lines.lock().unwrap().iter().any(|l| l.line == "mounted"));
}

// ---- worker host hygiene ----

/// Runs `cmd` with `sh -c` as the unprivileged local user `nobody`.
fn as_nobody(cmd: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", cmd])
        .output()
        .unwrap()
}

#[tokio::test]
async fn local_non_root_user_cannot_list_or_execute_under_the_state_dir() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    // A tenant's setuid-root program, kept in the layer as Docker keeps it.
    let (out, _) = output_of(&ex, &base, shell("cp /bin/busybox /suid && chmod 4755 /suid")).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e["suid"].mode & 0o4000, 0o4000, "setuid bit kept in the layer");
    let suid: Vec<_> = std::fs::read_dir(state.path().join("layers"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join("suid"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(suid.len(), 1, "the adopted layer holds the program");
    // The sanity check: nobody can run programs at all.
    assert!(as_nobody("id -u").status.success());
    for dir in [state.path().to_path_buf(), state.path().join("layers"), state.path().join("steps")] {
        let ls = as_nobody(&format!("ls {}", dir.display()));
        assert!(!ls.status.success(), "nobody listed {}", dir.display());
        assert!(String::from_utf8_lossy(&ls.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&ls.stderr));
    }
    let run = as_nobody(&format!("{} id -u", suid[0].display()));
    assert!(!run.status.success(), "nobody ran {}: {}", suid[0].display(), String::from_utf8_lossy(&run.stdout));
    assert!(String::from_utf8_lossy(&run.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&run.stderr));
}
