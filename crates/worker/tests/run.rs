//! RUN steps in a real OCI runtime (runc, and crun for the same step).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rbk_image::{OciLayout, RegistryClient};
use rbk_worker::{RuntimeKind, SecretValue, StepInputs, logs::discard};
use serde_json::json;

const DELETE_VI: &str = "echo hi > /a && rm /bin/vi";

fn assert_new_file_and_whiteout(out: &rbk_worker::StepOutput) {
    assert!(out.succeeded(), "exit {} tail {:?}", out.exit_code, out.tail);
    let e = entries(out.layer.as_ref().expect("a layer"));
    assert_eq!(e["a"].data, b"hi\n");
    assert_eq!(e["a"].kind, tar::EntryType::Regular);
    assert!(e.contains_key("bin/.wh.vi"), "no whiteout for /bin/vi in {:?}", e.keys().collect::<Vec<_>>());
    // Only the change: no mount stubs, no untouched base files.
    // (`etc` may appear as an unchanged directory: the runtime created and
    // we removed the /etc/hosts and /etc/resolv.conf mount points in it.)
    let unexpected: Vec<_> = e.keys().filter(|k| !["a", "bin", "bin/.wh.vi", "etc"].contains(&k.as_str())).collect();
    assert!(e.get("etc").is_none_or(|etc| etc.kind == tar::EntryType::Directory));
    assert!(unexpected.is_empty(), "unexpected entries {unexpected:?}");
}

#[tokio::test]
async fn run_on_busybox_pulled_from_registry_records_new_file_and_whiteout() {
    let registry = rbk_testsupport::registry();
    let reference = rbk_image::testimage::push_busybox(&registry, &rbk_testsupport::program("busybox")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("pulled")).unwrap();
    let image = RegistryClient::new().unwrap().with_insecure(&registry).pull(&reference, &layout).await.unwrap();
    let base = Base { dir, layout, image };
    let (_s, ex) = executor(RuntimeKind::Runc);
    let out = run(&ex, &base, shell(DELETE_VI)).await;
    assert_new_file_and_whiteout(&out);
}

#[tokio::test]
async fn same_run_under_crun_records_the_same_change() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Crun);
    let out = run(&ex, &base, shell(DELETE_VI)).await;
    assert_new_file_and_whiteout(&out);
}

#[tokio::test]
async fn exported_image_runs_with_the_new_file_and_without_the_deleted_one() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let out = run(&ex, &base, shell(DELETE_VI)).await;
    let image = extend(&base, out.layer.as_ref().unwrap());
    // Export as an OCI archive and import it elsewhere, as a consumer would.
    let elsewhere = tempfile::tempdir().unwrap();
    let archive = elsewhere.path().join("image.tar");
    rbk_image::export_oci_archive(&base.layout, &image.manifest_descriptor, Some("built:latest"), &archive).unwrap();
    let layout = OciLayout::create(elsewhere.path().join("imported")).unwrap();
    let imported = rbk_image::import_oci(&archive, None, &rbk_image::Platform::linux_amd64(), &layout).unwrap();
    assert_eq!(imported.layers().len(), 2);
    let (_s2, fresh) = executor(RuntimeKind::Runc);
    let step = json!({"kind": "run", "command": {"shell": "cat /a; if [ -e /bin/vi ]; then echo vi-present; else echo vi-absent; fi"},
                      "base": layer_refs(&imported)});
    let (sink, lines) = collect();
    let out = fresh.execute(&serde_json::from_value(step).unwrap(), &layout, &StepInputs::default(), sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let text: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    assert_eq!(text, vec!["hi", "vi-absent"]);
}

#[tokio::test]
async fn output_lines_stream_with_timestamps_in_order() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    // After each of its first two lines the step waits until the sink has
    // seen that line (the sink drops a file into a cache mount). A worker
    // that held lines back until the step ended would never let it go on:
    // the wall-time limit would end it, and the test fails. The waits also
    // fix the order across stdout and stderr.
    let sync = tempfile::tempdir().unwrap();
    let seen_dir = sync.path().to_path_buf();
    let lines: Arc<Mutex<Vec<rbk_worker::LogLine>>> = Arc::default();
    let sink: rbk_worker::LogSink = {
        let lines = lines.clone();
        Arc::new(move |l: &rbk_worker::LogLine| {
            lines.lock().unwrap().push(l.clone());
            std::fs::write(seen_dir.join(format!("seen-{}", l.line)), "").unwrap();
        })
    };
    let inputs = StepInputs { caches: [("sync".to_string(), sync.path().to_path_buf())].into(), ..Default::default() };
    let mut s = shell(
        "echo one; until [ -e /sync/seen-one ]; do sleep 0.01; done; \
         echo two >&2; until [ -e /sync/seen-two ]; do sleep 0.01; done; \
         seq 3 40",
    );
    s["mounts"] = json!([{"target": "/sync", "type": "cache", "id": "sync"}]);
    s["limits"] = json!({"wall_time_ms": 60_000});
    let before = std::time::SystemTime::now();
    let out = ex.execute(&step(&base, s), &base.layout, &inputs, sink).await.unwrap();
    let after = std::time::SystemTime::now();
    assert!(out.succeeded(), "timed out {} (lines not streamed?), exit {} tail {:?}", out.timed_out, out.exit_code, out.tail);
    let lines = lines.lock().unwrap();
    let got: Vec<(rbk_worker::Stream, &str)> = lines.iter().map(|l| (l.stream, l.line.as_str())).collect();
    let numbers: Vec<String> = (3..=40).map(|i| i.to_string()).collect();
    let mut want = vec![(rbk_worker::Stream::Stdout, "one"), (rbk_worker::Stream::Stderr, "two")];
    want.extend(numbers.iter().map(|n| (rbk_worker::Stream::Stdout, n.as_str())));
    assert_eq!(got, want);
    assert!(lines.first().unwrap().time >= before && lines.last().unwrap().time <= after);
    assert!(lines.windows(2).all(|w| w[0].time <= w[1].time), "timestamps go back: {:?}", lines.iter().map(|l| l.time).collect::<Vec<_>>());
}

#[tokio::test]
async fn failing_command_reports_exit_code_and_last_lines() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let out = run(&ex, &base, shell("for i in $(seq 1 30); do echo line$i; done; sleep 0.2; echo boom >&2; exit 3")).await;
    assert_eq!(out.exit_code, 3);
    assert!(!out.succeeded() && out.layer.is_none());
    assert_eq!(out.tail.len(), rbk_worker::TAIL_LINES);
    assert!(out.tail.contains(&"boom".to_string()) && out.tail.contains(&"line30".to_string()), "{:?}", out.tail);
    assert!(!out.tail.contains(&"line1".to_string()));
}

#[tokio::test]
async fn wall_time_limit_kills_the_container() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    let started = Instant::now();
    let mut s = shell("echo started; sleep 60");
    s["limits"] = json!({"wall_time_ms": 1000});
    let out = run(&ex, &base, s).await;
    assert!(out.timed_out, "exit {}", out.exit_code);
    assert!(!out.succeeded() && out.layer.is_none());
    assert!(started.elapsed() < Duration::from_secs(20));
    // The container is gone from the runtime's state.
    let list = std::process::Command::new(rbk_testsupport::program("runc"))
        .args(["--root", &state.path().join("runtime").display().to_string(), "list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (sink, lines) = collect();
    let mut s = shell("ls /sys/class/net");
    s["network"] = json!("none");
    let out = ex.execute(&step(&base, s), &base.layout, &StepInputs::default(), sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let names: Vec<String> = lines.lock().unwrap().iter().flat_map(|l| l.line.split_whitespace().map(String::from).collect::<Vec<_>>()).collect();
    assert_eq!(names, vec!["lo"]);
}

#[tokio::test]
async fn cache_mount_writes_land_in_host_dir_and_not_in_layer() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("pip");
    let inputs = StepInputs { caches: [("pip".to_string(), cache_dir.clone())].into(), ..Default::default() };
    let mut s = shell("echo cached > /root/.cache/pip/wheel && echo out > /b");
    s["mounts"] = json!([{"target": "/root/.cache/pip", "type": "cache", "id": "pip", "mode": 0o700, "uid": 0, "gid": 0}]);
    let out = run_with(&ex, &base, s, &inputs).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    assert_eq!(std::fs::read_to_string(cache_dir.join("wheel")).unwrap(), "cached\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let e = entries(out.layer.as_ref().unwrap());
    assert!(e.contains_key("b"));
    assert!(!e.keys().any(|k| k.contains("wheel") || k.contains(".cache")), "{:?}", e.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn readonly_cache_mount_refuses_writes() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("kept"), "from the cache\n").unwrap();
    let inputs = StepInputs { caches: [("c".to_string(), cache.path().to_path_buf())].into(), ..Default::default() };
    // /root exists in the base (writable there), so a dropped mount would
    // let the write succeed; reading `kept` shows the cache is mounted.
    let mut s = shell("cat /root/kept && touch /root/x 2>&1; echo touch-exit=$?");
    s["mounts"] = json!([{"target": "/root", "type": "cache", "id": "c", "readonly": true}]);
    let (sink, lines) = collect();
    let out = ex.execute(&step(&base, s), &base.layout, &inputs, sink).await.unwrap();
    let text: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    assert!(out.succeeded(), "exit {} output {text:?}", out.exit_code);
    assert_eq!(text.first().map(String::as_str), Some("from the cache"), "{text:?}");
    assert!(text.iter().any(|l| l.contains("Read-only file system")), "no EROFS in {text:?}");
    assert_eq!(text.last().map(String::as_str), Some("touch-exit=1"), "{text:?}");
    assert!(!cache.path().join("x").exists());
    assert!(!entries(out.layer.as_ref().unwrap()).keys().any(|k| k.starts_with("root/")));
}

#[tokio::test]
async fn secret_is_readable_during_run_and_absent_from_layer_image_and_logs() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let value = "s3cr3t-token-value";
    let inputs = StepInputs { secrets: [("tok".to_string(), SecretValue(value.as_bytes().to_vec()))].into(), ..Default::default() };
    let mut s = shell("cat /run/secrets/tok; echo; cp /run/secrets/tok /tmp/len-check && wc -c < /tmp/len-check > /len && rm /tmp/len-check");
    s["mounts"] = json!([{"target": "", "type": "secret", "id": "tok", "required": true}]);
    let (sink, lines) = collect();
    let out = ex.execute(&step(&base, s), &base.layout, &inputs, sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let layer = out.layer.as_ref().unwrap();
    let e = entries(layer);
    // It was readable: its length was recorded.
    assert_eq!(String::from_utf8_lossy(&e["len"].data).trim(), value.len().to_string());
    assert!(!e.keys().any(|k| k.starts_with("run")), "mount stub left in the layer: {:?}", e.keys().collect::<Vec<_>>());
    for (path, entry) in &e {
        assert!(!String::from_utf8_lossy(&entry.data).contains(value), "secret in layer file {path}");
    }
    // Not in the image either (config, manifest, every blob).
    let image = extend(&base, layer);
    for blob in std::fs::read_dir(base.layout.root().join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(blob.unwrap().path()).unwrap();
        assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()));
    }
    let _ = image;
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.line == "****"), "{:?}", lines);
    assert!(!lines.iter().any(|l| l.line.contains(value)));
    assert!(!out.tail.iter().any(|l| l.contains(value)));
}

#[tokio::test]
async fn missing_required_secret_is_an_error_naming_it() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    let mut s = shell("true");
    s["mounts"] = json!([{"target": "", "type": "secret", "id": "npmrc", "required": true}]);
    let err = ex.execute(&step(&base, s), &base.layout, &StepInputs::default(), discard()).await.unwrap_err().to_string();
    assert!(err.contains("npmrc") && err.contains("/run/secrets/npmrc"), "{err}");
    // The failed step's scratch space (and its overlay mount) is gone.
    assert_eq!(std::fs::read_dir(state.path().join("steps")).unwrap().count(), 0);
}

#[tokio::test]
async fn tmpfs_and_readonly_bind_mounts_leave_nothing_in_the_layer() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("input.txt"), "from-context\n").unwrap();
    let inputs = StepInputs { context: Some(ctx.path().to_path_buf()), ..Default::default() };
    let mut s = shell("echo scratch > /scratch/f && cat /src/input.txt > /copied && ! touch /src/new 2>/dev/null");
    s["mounts"] = json!([{"target": "/scratch", "type": "tmpfs"}, {"target": "/src", "type": "bind", "from": "context"}]);
    let out = run_with(&ex, &base, s, &inputs).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e["copied"].data, b"from-context\n");
    assert!(!e.keys().any(|k| k.starts_with("scratch") || k.starts_with("src")), "{:?}", e.keys().collect::<Vec<_>>());
    assert!(!ctx.path().join("new").exists());
}

#[tokio::test]
async fn user_workdir_and_env_reach_the_process() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (sink, lines) = collect();
    let s = json!({"kind": "run", "command": {"exec": ["/bin/sh", "-c", "id -u; id -g; pwd; echo $GREETING; echo $HOME"]},
                   "user": "nobody", "workdir": "/work/dir", "env": ["GREETING=hello", "PATH=/bin"]});
    let out = ex.execute(&step(&base, s), &base.layout, &StepInputs::default(), sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let text: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    assert_eq!(text, vec!["65534", "65534", "/work/dir", "hello", "/nonexistent"]);
    assert!(entries(out.layer.as_ref().unwrap()).contains_key("work/dir"));
}

#[tokio::test]
async fn ssh_mount_forwards_the_agent_socket() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let inputs = StepInputs { ssh: [("default".to_string(), sock)].into(), ..Default::default() };
    let (sink, lines) = collect();
    let mut s = shell("echo $SSH_AUTH_SOCK; test -S $SSH_AUTH_SOCK && echo is-socket");
    s["mounts"] = json!([{"target": "", "type": "ssh"}]);
    let out = ex.execute(&step(&base, s), &base.layout, &inputs, sink).await.unwrap();
    assert!(out.succeeded(), "{:?}", out.tail);
    let text: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    assert_eq!(text, vec!["/run/buildkit/ssh_agent.0", "is-socket"]);
    assert!(!entries(out.layer.as_ref().unwrap()).keys().any(|k| k.starts_with("run")));
}

#[tokio::test]
async fn pids_limit_stops_a_fork_storm() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    // The storm runs in a subshell, which exits at its first failed fork
    // (ash gives up on "can't fork"); its sleepers stay. After it, only
    // shell builtins (a fork could fail): count the processes alive in the
    // container's pid namespace, report the fork errors, kill the sleepers.
    let mut s = shell(
        "(for i in $(seq 1 40); do sleep 600 & done) 2>/tmp/forks; \
         set -- /proc/[0-9]*; echo processes=$#; \
         while read -r l; do case $l in *fork*) echo fork-failed;; esac; done </tmp/forks; \
         kill -9 -1; echo finished",
    );
    s["limits"] = json!({"pids": 8, "wall_time_ms": 120_000});
    let (sink, lines) = collect();
    let out = ex.execute(&step(&base, s), &base.layout, &StepInputs::default(), sink).await.unwrap();
    let text: Vec<String> = lines.lock().unwrap().iter().map(|l| l.line.clone()).collect();
    // The command itself exits 0, but a step that ran into a limit fails,
    // naming it.
    assert_eq!(out.exit_code, 0, "timed out {} output {text:?}", out.timed_out);
    assert!(!out.succeeded() && out.why().starts_with("pids limit 8 reached"), "{} {text:?}", out.why());
    let processes: usize = text.iter().find_map(|l| l.strip_prefix("processes=")).expect("a process count").parse().unwrap();
    // 8 = the shell, the subshell and 6 sleepers; the 7th sleeper's fork
    // fails; the subshell is gone when we count.
    assert_eq!(processes, 7, "{text:?}");
    assert_eq!(text.iter().filter(|l| *l == "fork-failed").count(), 1, "{text:?}");
    assert_eq!(text.last().map(String::as_str), Some("finished"));
}

#[tokio::test]
async fn memory_limit_kills_a_step_that_exceeds_it() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    // tmpfs pages are charged to the step's memory cgroup; without the
    // limit the 200 MiB fit in the 512 MiB tmpfs and the step succeeds.
    let mut s = shell("dd if=/dev/zero of=/scratch/big bs=1M count=200");
    s["mounts"] = json!([{"target": "/scratch", "type": "tmpfs", "size_bytes": 512u64 << 20}]);
    s["limits"] = json!({"memory_bytes": 32 << 20});
    let out = run(&ex, &base, s).await;
    // 137 = 128 + SIGKILL: the kernel's OOM killer, not a write error.
    assert_eq!(out.exit_code, 137, "tail {:?}", out.tail);
    assert!(!out.timed_out && !out.succeeded() && out.layer.is_none());
}

#[tokio::test]
async fn rw_bind_mount_writes_are_discarded() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("input.txt"), "original\n").unwrap();
    let inputs = StepInputs { context: Some(ctx.path().to_path_buf()), ..Default::default() };
    let mut s = shell("echo changed > /src/input.txt && touch /src/new && cat /src/input.txt > /seen");
    s["mounts"] = json!([{"target": "/src", "type": "bind", "from": "context", "rw": true}]);
    let out = run_with(&ex, &base, s, &inputs).await;
    assert!(out.succeeded(), "{:?}", out.tail);
    assert_eq!(entries(out.layer.as_ref().unwrap())["seen"].data, b"changed\n");
    assert_eq!(std::fs::read_to_string(ctx.path().join("input.txt")).unwrap(), "original\n");
    assert!(!ctx.path().join("new").exists());
}
