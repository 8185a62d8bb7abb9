//! `rbk worker` processes in a farm: cache mounts that follow builds from
//! worker to worker, concurrent commits, locked caches, a worker killed
//! mid-step, drain on SIGTERM, exit when idle.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rbk_proto::build::build_event::Event;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_mount_follows_builds_from_a_to_b_and_back() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let _b = farm.worker("b", &[]);
    let mut placed = Vec::new();
    for (n, on) in [(1, "a"), (2, "b"), (3, "a")] {
        let step = farm.run("s", &format!("k{n}"), &format!("echo build{n} >> /cache/lines"), Some(("c", "shared")), Some(on));
        let events = farm.build(vec![step]).await;
        assert_eq!(final_state(&events), "succeeded", "{events:#?}");
        placed.push(finished_on(&events)["s"].clone());
        if n == 2 {
            let restored = events.iter().find_map(|e| if let Event::Finished(f) = e { Some(f.bytes_restored) } else { None });
            assert!(restored.unwrap_or(0) > 0, "worker b started cold and restored nothing: {events:#?}");
        }
    }
    assert_eq!(placed, ["a", "b", "a"]);
    assert_eq!(farm.cache_files("c").await["lines"], "build1\nbuild2\nbuild3\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_on_s3_directly_and_one_through_the_coordinator_share_layers_and_caches() {
    let farm = Farm::start().await;
    let a = farm.worker_on_s3("a");
    assert!(a.log_text().contains("store: s3("), "worker a does not use S3 directly:\n{}", a.log_text());
    let _b = farm.worker("b", &[]);
    let first = farm.run("s", "k1", "echo from-s3-worker >> /cache/lines", Some(("c", "shared")), Some("a"));
    let events = farm.build(vec![first]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let second = farm.run("s", "k2", "echo via-coordinator >> /cache/lines; cat /cache/lines", Some(("c", "shared")), Some("b"));
    let events = farm.build(vec![second]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(logs_of(&events, "s"), ["from-s3-worker", "via-coordinator"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_in_their_own_network_namespaces_pass_a_cache_along_through_the_coordinator() {
    let farm = Farm::start_for_netns().await;
    let (na, nb) = (NetNs::new(0), NetNs::new(1));
    let a = farm.worker_in(&na, "a");
    let b = farm.worker_in(&nb, "b");
    assert!(a.log_text().contains(&format!("connecting to http://{}:", na.host_ip)), "{}", a.log_text());
    // Inside the namespace, loopback is the namespace's own: the S3 server
    // and the coordinator's 127.0.0.1 are out of reach.
    let s3 = rbk_testsupport::s3().endpoint;
    let hostport = s3.split("://").nth(1).unwrap().trim_end_matches('/').replace(':', "/");
    let connect = format!("exec 3<>/dev/tcp/{hostport}");
    let probe = |ns: Option<&str>| {
        let mut c = Command::new("nsenter");
        if let Some(n) = ns {
            c.arg(format!("--net=/var/run/netns/{n}"));
        }
        c.args(["timeout", "3", "bash", "-c", &connect]).stderr(Stdio::null()).status().unwrap().success()
    };
    assert!(probe(None), "the S3 server is not reachable from the host: the probe is broken");
    assert!(!probe(Some(&na.name)), "the S3 server is reachable from inside the namespace");
    for (n, on) in [(1, "a"), (2, "b")] {
        let step = farm.run("s", &format!("k{n}"), &format!("echo build{n} >> /cache/lines; cat /cache/lines"), Some(("c", "shared")), Some(on));
        let events = farm.build(vec![step]).await;
        assert_eq!(final_state(&events), "succeeded", "{events:#?}\n{}\n{}", a.log_text(), b.log_text());
        assert_eq!(finished_on(&events)["s"], on);
    }
    assert_eq!(farm.cache_files("c").await["lines"], "build1\nbuild2\n");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_builds_on_a_and_b_both_land_in_one_shared_cache() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let _b = farm.worker("b", &[]);
    // Each step marks that it runs (a file in its cache mount, which is a
    // directory under its worker's state dir) and waits for `go`, which
    // this test drops into both only once it has seen both marks: so the
    // steps provably overlap, and steps run one after the other (as a
    // locked cache would) never get `go` and the test fails.
    let script = |w: &str| {
        format!(
            "echo {w} > /cache/running-{w}; i=0; until [ -e /cache/go ] || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done; \
             [ -e /cache/go ] && rm /cache/go /cache/running-{w} && echo from {w} > /cache/from-{w}"
        )
    };
    let on_a = farm.run("s", "ka", &script("a"), Some(("shared-c", "shared")), Some("a"));
    let on_b = farm.run("s", "kb", &script("b"), Some(("shared-c", "shared")), Some("b"));
    let workers = farm.dir.path().join("workers");
    let rendezvous = async {
        let start = Instant::now();
        loop {
            let marks = (find_file(&workers.join("a"), "running-a"), find_file(&workers.join("b"), "running-b"));
            if let (Some(a), Some(b)) = marks {
                std::fs::write(a.with_file_name("go"), "").unwrap();
                std::fs::write(b.with_file_name("go"), "").unwrap();
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the two shared-cache steps never ran at the same time: {marks:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (ea, eb, ()) = tokio::join!(farm.build(vec![on_a]), farm.build(vec![on_b]), rendezvous);
    assert_eq!((final_state(&ea), final_state(&eb)), ("succeeded".into(), "succeeded".into()), "{ea:#?} {eb:#?}");
    assert_eq!((finished_on(&ea)["s"].as_str(), finished_on(&eb)["s"].as_str()), ("a", "b"));
    let files = farm.cache_files("shared-c").await;
    assert_eq!(files.get("from-a").map(String::as_str), Some("from a\n"), "{files:?}");
    assert_eq!(files.get("from-b").map(String::as_str), Some("from b\n"), "{files:?}");
}

/// The first file named `name` under `dir` (None if there is none yet).
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_file() && e.file_name() == name {
            return Some(path);
        }
        if kind.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_fails_the_build_but_its_cache_writes_are_kept() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let step = farm.run("s", "k", "echo kept > /cache/f; echo boom; exit 3", Some(("c", "locked")), None);
    let events = farm.build(vec![step]).await;
    assert_eq!(final_state(&events), "failed", "{events:#?}");
    let failed = events.iter().find_map(|e| if let Event::Failed(f) = e { Some(f.clone()) } else { None }).expect("a Failed event");
    assert_eq!(failed.exit_code, 3);
    assert!(failed.message.contains("exit code 3"), "{}", failed.message);
    assert_eq!(logs_of(&events, "s"), ["boom"]);
    assert_eq!(farm.wait_cache_files("c").await.get("f").map(String::as_str), Some("kept\n"));
}

/// Whether a process whose command line contains `needle` is running.
fn running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_build_kills_its_running_container() {
    let farm = Farm::start().await;
    let a = farm.worker("a", &[]);
    // A sleep length no other test uses, to find the container's process.
    let step = farm.run("s", "k", "sleep 417; echo never", None, None);
    let mut stream = farm.submit(vec![step], Default::default()).await;
    let mut build_id = String::new();
    loop {
        let e = tokio::time::timeout(WAIT, stream.message()).await.expect("no Started within the deadline").unwrap().unwrap();
        if let Some(Event::Accepted(acc)) = &e.event {
            build_id = acc.build_id.clone();
        }
        if matches!(e.event, Some(Event::Started(_))) {
            break;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !running("sleep 417") {
        assert!(std::time::Instant::now() < deadline, "the step's container never started:\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    farm.cancel(&build_id).await;
    while running("sleep 417") {
        assert!(std::time::Instant::now() < deadline, "the cancelled step's container is still running:\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.log_text().contains("cancelled"), "{}", a.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_reconnects_after_the_coordinator_restarts_and_serves_again() {
    let mut farm = Farm::start_with(Timing { heartbeat_ms: 200, worker_timeout_ms: 2000 }).await;
    let mut a = farm.worker("a", &[]);
    farm.restart_coordinator();
    a.wait_registered();
    let events = farm.build(vec![farm.run("s", "k", "echo after restart", None, None)]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(finished_on(&events)["s"], "a");
}

/// `start end` (seconds of host uptime) as the step recorded them.
fn interval(s: &str) -> (f64, f64) {
    let v: Vec<f64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[tokio::test(flavor = "multi_thread")]
async fn locked_cache_steps_on_different_workers_never_overlap() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let _b = farm.worker("b", &[]);
    let script = |w: &str| format!("s=$(cut -d' ' -f1 /proc/uptime); sleep 1; e=$(cut -d' ' -f1 /proc/uptime); echo \"$s $e\" > /cache/{w}");
    let on_a = farm.run("s", "ka", &script("a"), Some(("locked-c", "locked")), Some("a"));
    let on_b = farm.run("s", "kb", &script("b"), Some(("locked-c", "locked")), Some("b"));
    let (ea, eb) = tokio::join!(farm.build(vec![on_a]), farm.build(vec![on_b]));
    assert_eq!((final_state(&ea), final_state(&eb)), ("succeeded".into(), "succeeded".into()), "{ea:#?} {eb:#?}");
    assert_eq!((finished_on(&ea)["s"].as_str(), finished_on(&eb)["s"].as_str()), ("a", "b"));
    let files = farm.cache_files("locked-c").await;
    let (a, b) = (interval(&files["a"]), interval(&files["b"]));
    assert!(a.1 <= b.0 || b.1 <= a.0, "locked steps overlapped: a ran {a:?}, b ran {b:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_of_a_worker_killed_mid_run_reruns_on_another_and_the_build_succeeds() {
    let farm = Farm::start_with(Timing { heartbeat_ms: 200, worker_timeout_ms: 2000 }).await;
    let mut a = farm.worker("a", &[]);
    let step = farm.run("s", "k", "echo started; sleep 4; echo finished", None, None);
    let mut stream = farm.submit(vec![step], Default::default()).await;
    let mut events = Vec::new();
    // Until the step runs on a.
    read_until(&mut stream, &mut events, "a Started on a", |e| matches!(e, Event::Started(s) if s.worker_id == "a")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.sigkill();
    let _b = farm.worker("b", &[]);
    read_until(&mut stream, &mut events, "the end of the build", |e| matches!(e, Event::BuildFinished(_))).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(finished_on(&events)["s"], "b");
    assert!(events.iter().any(|e| matches!(e, Event::Started(s) if s.worker_id == "b" && s.attempt == 2)), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigtermed_worker_finishes_its_running_step_then_exits_0() {
    let farm = Farm::start().await;
    let mut a = farm.worker("a", &[]);
    let step = farm.run("s", "k", "sleep 2; echo drained-ok", None, None);
    let mut stream = farm.submit(vec![step], Default::default()).await;
    let mut events = Vec::new();
    read_until(&mut stream, &mut events, "a Started", |e| matches!(e, Event::Started(_))).await;
    a.sigterm();
    read_until(&mut stream, &mut events, "the end of the build", |e| matches!(e, Event::BuildFinished(_))).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(logs_of(&events, "s"), ["drained-ok"]);
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "drained worker exited with {status}:\n{}", a.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_until_idle_runs_a_step_then_exits_0_when_idle() {
    let farm = Farm::start().await;
    let mut a = farm.worker("a", &["--until-idle", "2s"]);
    let events = farm.build(vec![farm.run("s", "k", "echo ran", None, None)]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "idle worker exited with {status}:\n{}", a.log_text());
}

/// `rbk submit --progress=plain --no-cache CTX` as the test tenant; returns
/// its stderr (the progress), failing the test if it fails or hangs.
fn submit_plain(farm: &Farm, ctx: &Path) -> String {
    let mut cmd = Command::new(RBK);
    cmd.args(["submit", "--progress=plain", "--no-cache", "--coordinator", &farm.url, "--token", TENANT, "--client-dir"])
        .arg(farm.dir.path().join("client"))
        .arg(ctx);
    let out = run_within(cmd, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rbk submit failed:\n{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rbk_submit_a_cache_mount_follows_the_build_to_a_fresh_worker_and_back() {
    let farm = Farm::start().await;
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(rbk_testsupport::program("busybox"), ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN --mount=type=cache,target=/cache,id=notes echo run >> /cache/log && echo \"lines: $(wc -l < /cache/log)\"\n",
    )
    .unwrap();
    // One worker at a time, so the build has to go where the test says.
    let mut a = farm.worker("a", &[]);
    let first = submit_plain(&farm, ctx.path());
    assert!(first.contains("lines: 1") && first.contains(" on a"), "{first}");
    // The cache is committed after the step is done, and rbk submit says so.
    assert!(first.contains("notes\": committed"), "{first}");
    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(30)).success());

    let mut b = farm.worker("b", &[]);
    let second = submit_plain(&farm, ctx.path());
    assert!(second.contains("lines: 2") && second.contains(" on b"), "a fresh worker b starts from a's cache:\n{second}");
    assert!(second.contains("restored"), "b reports the bytes it restored:\n{second}");
    b.sigterm();
    assert!(b.wait_exit(Duration::from_secs(30)).success());

    // a again, with its older copy of the cache: brought up to b's commit.
    let _a = farm.worker("a", &[]);
    let third = submit_plain(&farm, ctx.path());
    assert!(third.contains("lines: 3") && third.contains(" on a"), "{third}");
}

#[test]
fn a_worker_with_until_idle_exits_0_even_when_no_coordinator_answers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", rbk_testsupport::free_port());
    let mut child = Command::new(RBK)
        .args(["worker", "--coordinator", &url, "--token", WORKER_TOKEN, "--id", "lonely", "--until-idle", "1s", "--max-backoff", "500ms"])
        .arg("--state-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = exited_within(&mut child, Duration::from_secs(30)).expect("the worker kept retrying past its idle limit");
    assert!(status.success(), "{status}");
}

/// Files (not temporaries) directly in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or(vec![], |rd| {
        rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_over_its_layer_budget_evicts_blobs_and_their_held_markers_and_still_builds() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &["--max-layer-bytes", "1"]);
    for n in 1..=2 {
        let step = farm.run("s", &format!("budget{n}"), &format!("echo {n} > /n"), None, Some("a"));
        let events = farm.build(vec![step]).await;
        assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    }
    let state = farm.dir.path().join("workers/a");
    // Every blob is larger than the 1-byte budget: none stays once the
    // worker is idle (its sweep runs after the step, in the background),
    // and it no longer claims to hold any layer.
    for _ in 0..200 {
        if files_in(&state.join("images/blobs/sha256")).is_empty() && files_in(&state.join("held-layers")).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(files_in(&state.join("images/blobs/sha256")), Vec::<String>::new());
    assert_eq!(files_in(&state.join("held-layers")), Vec::<String>::new());
}

