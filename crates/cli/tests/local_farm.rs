//! `deploy/local/farm.sh`: the farm as processes on one machine (the S3
//! server and Redis from deploy/dev/services.sh, coordinators, two workers),
//! a build through it with `rbk submit`, its `/metrics` and `status` during
//! and after, and `down`. Needs root (runc) and the test services.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rbk_metrics::exposition::sample;

const RBK: &str = env!("CARGO_BIN_EXE_rbk");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A base port whose API (+0..2), Raft (+100..), coordinator metrics
/// (+200..) and worker metrics (+300..) neighbours are all free now.
fn free_port_block() -> u16 {
    for _ in 0..100 {
        let base = rbk_testsupport::free_port();
        if base > 65535 - 400 {
            continue;
        }
        let offsets = [0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301];
        if offsets.iter().all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of ports for the farm");
}

struct LocalFarm {
    dir: tempfile::TempDir,
    port: u16,
    env: Vec<(String, String)>,
}

impl LocalFarm {
    fn script(&self, args: &[&str]) -> Output {
        // The script reads the services' variables itself (services.sh up).
        Command::new(repo().join("deploy/local/farm.sh"))
            .args(args)
            .env("RBK", RBK)
            .env("RBK_FARM_DIR", self.dir.path().join("farm"))
            .env("RBK_FARM_PORT", self.port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running deploy/local/farm.sh")
    }

    fn up(extra: &[&str]) -> (LocalFarm, String, String) {
        Self::up_with(extra, &[])
    }

    fn up_with(extra: &[&str], env: &[(&str, &str)]) -> (LocalFarm, String, String) {
        let farm = LocalFarm { dir: tempfile::tempdir().unwrap(), port: free_port_block(), env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let mut args = vec!["up"];
        args.extend(extra);
        let out = farm.script(&args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "farm.sh up failed:\n{stderr}");
        (farm, stdout, stderr)
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_dir(self.dir.path().join("farm"))
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                (p.extension()? == "pid").then(|| std::fs::read_to_string(&p).ok()?.trim().parse().ok())?
            })
            .collect()
    }
}

impl Drop for LocalFarm {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// `GET /metrics` of a farm process by port.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("metrics on port {port}: {e}"));
    write!(s, "GET /metrics HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}"))
}

/// The demo context: examples/demo-quick plus a static busybox.
fn demo_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    for f in ["Dockerfile", "hello.txt"] {
        std::fs::copy(repo().join("examples/demo-quick").join(f), ctx.join(f)).unwrap();
    }
    std::fs::copy(rbk_testsupport::program("busybox"), ctx.join("busybox")).unwrap();
    ctx
}

/// The `rbk submit ...` line `up` prints, run with CONTEXT filled in.
fn submit_as_printed(up_stderr: &str, context: &Path) -> Output {
    let line = up_stderr
        .lines()
        .find_map(|l| l.trim_start_matches("farm:").trim().strip_prefix(RBK).map(str::to_owned))
        .unwrap_or_else(|| panic!("farm.sh up printed no rbk submit line:\n{up_stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"submit"), "{line}");
    assert_eq!(words.last(), Some(&"CONTEXT"), "{line}");
    Command::new(RBK).args(&words[..words.len() - 1]).arg("--progress=plain").arg(context).output().unwrap()
}

#[test]
fn a_build_runs_through_the_local_farm_and_its_metrics_and_status_follow() {
    let (farm, env, stderr) = LocalFarm::up(&[]);
    assert!(env.contains(&format!("export RBK_COORDINATOR=http://127.0.0.1:{}", farm.port)), "{env}");
    let coordinator = farm.port + 200;
    let before = scrape(coordinator);
    // Workers register a moment after they start.
    let mut workers = value(&before, "rbk_workers_connected", &[]);
    for _ in 0..100 {
        if workers == 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        workers = value(&scrape(coordinator), "rbk_workers_connected", &[]);
    }
    assert_eq!(workers, 2.0, "both workers joined");

    let out = submit_as_printed(&stderr, &demo_context(farm.dir.path()));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rbk submit failed:\n{progress}");
    assert!(progress.contains("on local-worker-"), "{progress}");

    let after = scrape(coordinator);
    assert_eq!(value(&after, "rbk_builds_total", &[("result", "succeeded")]), 1.0, "{after}");
    let ran = value(&after, "rbk_steps_total", &[("result", "done")]);
    assert!(ran >= 4.0, "the demo's steps ran: {after}");
    assert_eq!(value(&after, "rbk_cache_misses_total", &[("cache", "cache_mount")]), 1.0, "the demo's cache starts empty");
    let on_workers: f64 = (0..2).map(|i| value(&scrape(farm.port + 300 + i), "rbk_worker_steps_total", &[("result", "done")])).sum();
    assert_eq!(on_workers, ran, "every step the coordinator saw done ran on a farm worker");

    let status = farm.script(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.matches(" running (pid ").count(), 3, "{status}");
    assert!(status.contains("workers=2") && status.contains("builds ok=1 failed=0"), "{status}");

    let pids = farm.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let down = farm.script(&["down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid), "process {pid} still runs after down");
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// Until one coordinator says it leads and all agree on the term: the
/// leader's index (0..3) and every node's metrics.
fn raft_leader(farm: &LocalFarm) -> (usize, Vec<String>) {
    for _ in 0..300 {
        let all: Vec<String> = (0..3).map(|i| scrape(farm.port + 200 + i)).collect();
        let leaders: Vec<usize> = (0..3).filter(|&i| sample(&all[i], "rbk_raft_is_leader", &[]) == Some(1.0)).collect();
        let terms: Vec<_> = all.iter().map(|t| sample(t, "rbk_raft_term", &[])).collect();
        if leaders.len() == 1 && terms.iter().all(|t| *t == terms[0] && t.unwrap_or(0.0) > 0.0) {
            return (leaders[0], all);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no single raft leader agreed on by three coordinators");
}

#[test]
fn three_coordinators_elect_one_leader_visible_in_their_metrics_and_a_build_sent_to_a_follower_runs() {
    let (farm, _env, stderr) = LocalFarm::up_with(&["3"], &[("RBK_FARM_STORE", "s3")]);
    let (leader, all) = raft_leader(&farm);
    let leader_id = (leader + 1) as f64;
    for (i, text) in all.iter().enumerate() {
        assert_eq!(value(text, "rbk_raft_leader_id", &[]), leader_id, "coordinator {i} names another leader:\n{text}");
    }
    // The submit line names coordinator 0; send the build to a FOLLOWER:
    // it names the leader and rbk submit follows.
    let follower = (leader + 1) % 3;
    let printed = format!("--coordinator http://127.0.0.1:{} ", farm.port);
    let to_follower = stderr.replace(&printed, &format!("--coordinator http://127.0.0.1:{} ", farm.port + follower as u16));
    let before = value(&scrape(farm.port + 200 + leader as u16), "rbk_raft_commit_index", &[]);
    let mut connected = 0.0;
    for _ in 0..200 {
        connected = value(&scrape(farm.port + 200 + leader as u16), "rbk_workers_connected", &[]);
        if connected == 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Worker i was pointed at coordinator i; followers name the leader and
    // the workers follow.
    assert_eq!(connected, 2.0, "both workers reach the leader, coordinator {leader}");
    let out = submit_as_printed(&to_follower, &demo_context(farm.dir.path()));
    assert!(out.status.success(), "rbk submit to follower {follower} failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let text = scrape(farm.port + 200 + leader as u16);
    assert_eq!(value(&text, "rbk_builds_total", &[("result", "succeeded")]), 1.0, "{text}");
    let committed = value(&text, "rbk_raft_commit_index", &[]);
    assert!(committed > before, "the build's state changes went through the log ({before} -> {committed})");
    // Followers apply what the leader committed.
    for i in (0..3).filter(|&i| i != leader) {
        let mut applied = 0.0;
        for _ in 0..100 {
            applied = value(&scrape(farm.port + 200 + i as u16), "rbk_raft_applied_index", &[]);
            if applied >= committed {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(applied >= committed, "coordinator {i} applied {applied} of {committed}");
    }
}
