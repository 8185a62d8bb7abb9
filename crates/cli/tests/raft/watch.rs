//! `Build.Watch` on any node, Redis fan-out of build events, and
//! `rbk submit` following its build across a leader kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbk_client::leader::{follow_leader, leader_hint};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};
use tonic::{Code, Request, Status, Streaming};

use crate::harness::*;

const RBK: &str = env!("CARGO_BIN_EXE_rbk");

/// A private redis-server the test may kill.
struct Redis {
    child: Option<Child>,
    url: String,
}

impl Redis {
    fn start() -> Self {
        let port = rbk_testsupport::free_port();
        let child = Command::new(rbk_testsupport::program("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "redis-server", Duration::from_secs(10));
        Self { child: Some(child), url: format!("redis://127.0.0.1:{port}") }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes, with `[redis]` when `redis` is given, all started.
fn cluster(redis: Option<&Redis>) -> Cluster {
    let mut c = Cluster::new(3, 1000);
    if let Some(r) = redis {
        for n in &c.nodes {
            let path = c.dir.path().join(format!("node{}.toml", n.id));
            let mut text = std::fs::read_to_string(&path).unwrap();
            text += &format!("[redis]\nurl = \"{}\"\n", r.url);
            std::fs::write(&path, text).unwrap();
        }
    }
    c.start_all();
    c
}

/// The leader's URL once it serves the tenant (its token file installed).
async fn serving_leader(c: &Cluster) -> String {
    let start = Instant::now();
    loop {
        let leader = c.leader_via(&c.node(1).api()).await;
        let r = follow_leader(&rbk_client::ClientTls::default(), &leader, Duration::from_secs(2), |channel| async move {
            Ok(BuildClient::new(channel).list(bearer(pb::ListRequest { limit: 1 })).await?.into_inner())
        })
        .await;
        if let Ok((Ok(_), url)) = r {
            return url;
        }
        assert!(start.elapsed() < WAIT, "no leader serves the tenant: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bearer<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {TENANT}").parse().unwrap());
    r
}

/// `Watch` on exactly `url` (no redirect following).
async fn watch_on(url: &str, build_id: &str) -> Result<Streaming<pb::BuildEvent>, Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    Ok(BuildClient::new(channel).watch(bearer(pb::WatchRequest { build_id: build_id.into(), secrets: Default::default(), submitter: false })).await?.into_inner())
}

/// Events until the build's final one (which is included).
async fn collect(stream: &mut Streaming<pb::BuildEvent>, into: &mut Vec<Event>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, stream.message()).await.expect("the watch did not finish within 60 s");
        let e = m.expect("the watch stream broke").expect("the watch stream ended before the build finished").event.unwrap();
        let last = matches!(e, Event::BuildFinished(_));
        into.push(e);
        if last {
            return;
        }
    }
}

fn finished_steps(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Finished(f) => Some(f.step_id.clone()),
            Event::Cached(c) => Some(c.step_id.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn logs(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Log(l) = e { Some(l.line.clone()) } else { None }).collect()
}

fn final_state(events: &[Event]) -> String {
    match events.last() {
        Some(Event::BuildFinished(b)) => b.state.clone(),
        other => panic!("the last event is not the build's end: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_client_watching_a_follower_sees_every_step_of_a_build_on_the_leader() {
    let redis = Redis::start();
    let c = cluster(Some(&redis));
    let leader = serving_leader(&c).await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 400);
    let build = submit(&leader, chain(3, "fanout")).await;
    let mut stream = watch_on(&follower, &build).await.expect("a follower with Redis serves Watch itself");
    let mut events = Vec::new();
    collect(&mut stream, &mut events).await;
    assert_eq!(final_state(&events), "succeeded", "{events:?}");
    assert_eq!(finished_steps(&events), vec!["s0", "s1", "s2"], "each step once: {events:?}");
    // Log lines exist only live, so they came over Redis (s0 may have
    // logged before the watch began).
    let lines = logs(&events);
    assert!(lines.contains(&"running s1".to_owned()) && lines.contains(&"running s2".to_owned()), "{lines:?}");
    let Some(Event::Finished(f)) = events.iter().find(|e| matches!(e, Event::Finished(_))) else { unreachable!() };
    assert_eq!(f.config, b"{}", "results carry the config the client assembles from");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_watch_on_a_follower_is_redirected_to_the_leader_and_sees_the_whole_stream() {
    let c = cluster(None);
    let leader = serving_leader(&c).await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 400);
    let build = submit(&leader, chain(3, "noredis")).await;
    let Err(refused) = watch_on(&follower, &build).await else { panic!("a follower without Redis serves Watch instead of redirecting") };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(leader_hint(&refused).as_deref(), Some(leader.as_str()));
    let (stream, served_by) = follow_leader(&rbk_client::ClientTls::default(), &follower, WAIT, |channel| {
        let build = build.clone();
        async move { Ok(BuildClient::new(channel).watch(bearer(pb::WatchRequest { build_id: build, secrets: Default::default(), submitter: false })).await?.into_inner()) }
    })
    .await
    .unwrap();
    assert_eq!(served_by, leader);
    let mut events = Vec::new();
    collect(&mut stream.unwrap(), &mut events).await;
    assert_eq!(final_state(&events), "succeeded");
    assert_eq!(finished_steps(&events), vec!["s0", "s1", "s2"], "{events:?}");
    assert!(logs(&events).contains(&"running s2".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_mid_build_the_build_and_a_follower_watching_it_still_finish() {
    let mut redis = Redis::start();
    let c = cluster(Some(&redis));
    let leader = serving_leader(&c).await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 500);
    let build = submit(&leader, chain(4, "redisdies")).await;
    let mut stream = watch_on(&follower, &build).await.unwrap();
    let mut events = Vec::new();
    // Until the first step is done, then Redis goes away.
    loop {
        let e = stream.message().await.unwrap().unwrap().event.unwrap();
        let first_done = matches!(e, Event::Finished(_));
        events.push(e);
        if first_done {
            break;
        }
    }
    redis.kill();
    collect(&mut stream, &mut events).await;
    assert_eq!(final_state(&events), "succeeded", "{events:?}");
    assert_eq!(finished_steps(&events), vec!["s0", "s1", "s2", "s3"], "every result, once: {events:?}");
    assert_eq!(wait_finished(&c.apis(), &build).await.state, "succeeded");
}

/// A context whose image is the host's static busybox (`FROM scratch`):
/// one slow step (the leader dies during it), then one that needs a secret.
/// `rbk submit` to every node of `c`, with secret `tok` from `secret` and
/// `agent` as `--ssh default` (the steps of [`context`] use both); the
/// caller adds outputs and the context.
/// A real `rbk worker` (runc) as `w1`, reaching the farm through `via`,
/// its state under `work`; with `log`, it logs at info into that file.
fn worker(via: &str, work: &Path, log: Option<&Path>) -> Child {
    let mut cmd = Command::new(RBK);
    cmd.args(["worker", "--coordinator", via, "--token", WORKER, "--id", "w1", "--max-backoff", "1s"])
        .arg("--state-dir")
        .arg(work.join("worker"))
        .arg("--runtime-path")
        .arg(rbk_testsupport::program("runc"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(log) = log {
        cmd.env("RBK_LOG", "info").stderr(std::fs::File::create(log).unwrap());
    }
    cmd.spawn().unwrap()
}

fn submit_to(c: &Cluster, work: &Path, secret: &Path, agent: &crate::ssh_agent::TestAgent) -> Command {
    let mut cmd = Command::new(RBK);
    cmd.args(["submit", "--progress=plain", "--token", TENANT, "--coordinator", &c.apis().join(",")])
        .arg("--client-dir")
        .arg(work.join("client"))
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret.display()))
        .args(["--ssh", "default"])
        .env("SSH_AUTH_SOCK", &agent.sock);
    cmd
}

fn context(dir: &Path) {
    std::fs::copy(rbk_testsupport::program("busybox"), dir.join("busybox")).unwrap();
    crate::ssh_agent::stage_ssh_add(dir);
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY sshroot/ /\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep 4 && echo slow > /slow\"]\n\
         RUN --mount=type=secret,id=tok,required=true [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox wc -c < /run/secrets/tok > /len\"]\n\
         RUN --mount=type=ssh,required=true [\"/bin/busybox\", \"sh\", \"-c\", \"/usr/bin/ssh-add -l > /keys\"]\n",
    )
    .unwrap();
}

/// The newest build of the tenant, as the leader reached through `urls`
/// says.
async fn newest_build(urls: &[String]) -> Option<pb::BuildStatus> {
    for url in urls {
        let r = follow_leader(&rbk_client::ClientTls::default(), url, Duration::from_secs(2), |channel| async move {
            Ok(BuildClient::new(channel).list(bearer(pb::ListRequest { limit: 1 })).await?.into_inner().builds)
        })
        .await;
        if let Ok((Ok(b), _)) = r {
            return b.into_iter().next();
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbk_submit_follows_its_build_to_a_new_leader_and_the_new_leader_gets_its_secret_and_ssh_agent() {
    let mut c = cluster(None);
    let leader_url = serving_leader(&c).await;
    let leader = c.id_of(&leader_url);
    let follower = c.apis().into_iter().find(|u| *u != leader_url).unwrap();
    // A real worker (runc), reaching the farm through a node that survives.
    let work = tempfile::tempdir().unwrap();
    let worker_log = work.path().join("worker.log");
    let mut worker = worker(&follower, work.path(), Some(&worker_log));
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    context(&ctx);
    let value = format!("tok-{}-value", std::process::id());
    let secret_file = work.path().join("secret");
    std::fs::write(&secret_file, &value).unwrap();
    let out = work.path().join("rootfs");
    let agent = crate::ssh_agent::TestAgent::start();
    let (stdout_path, stderr_path) = (work.path().join("submit.out"), work.path().join("submit.err"));
    let mut submit = submit_to(&c, work.path(), &secret_file, &agent)
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // Mid-build: a step done, the slow one running. Then SIGKILL the leader.
    let start = Instant::now();
    loop {
        if let Some(b) = newest_build(&c.apis()).await
            && b.steps.iter().any(|s| s.state == "done")
            && b.steps.iter().any(|s| s.state == "running")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the build never got going: {}", std::fs::read_to_string(&stderr_path).unwrap());
        assert!(submit.try_wait().unwrap().is_none(), "rbk submit ended early: {}", std::fs::read_to_string(&stderr_path).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill(leader);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = submit.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = submit.kill();
            panic!("rbk submit did not finish after the failover: {}", std::fs::read_to_string(&stderr_path).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("rbk submit finished {:?} after the leader's SIGKILL", start.elapsed());
    let _ = worker.kill();
    let _ = worker.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "rbk submit failed after the failover:\n{stderr}\nworker log:\n{}", std::fs::read_to_string(&worker_log).unwrap_or_default());
    assert!(stderr.contains("following build"), "the client re-attached: {stderr}");
    // Each step (two COPYs, the slow RUN, the secret RUN, the ssh RUN) is
    // reported done once.
    for n in 1..=5 {
        let reported = stderr.lines().filter(|l| l.starts_with(&format!("#{n} DONE")) || l.starts_with(&format!("#{n} CACHED"))).count();
        assert_eq!(reported, 1, "step #{n} reported {reported} times:\n{stderr}");
    }
    // The image was assembled; the secret step after the failover saw the
    // secret (its length), which no output or log holds.
    assert_eq!(std::fs::read_to_string(out.join("slow")).unwrap().trim(), "slow");
    assert_eq!(std::fs::read_to_string(out.join("len")).unwrap().trim(), value.len().to_string());
    // The agent was relayed through the new leader.
    let keys = std::fs::read_to_string(out.join("keys")).unwrap();
    assert!(keys.contains(&agent.fingerprint), "{keys}");
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    assert!(!stdout.trim().is_empty(), "the image digest is printed");
    assert!(!stderr.contains(&value));
    let grep = Command::new("grep").args(["-rl", &value]).arg(c.dir.path()).output().unwrap();
    assert!(grep.stdout.is_empty(), "the secret reached a coordinator file: {}", String::from_utf8_lossy(&grep.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_rbk_submit_looks_for_a_new_leader_ends_it_at_once() {
    let mut c = cluster(None);
    let leader_url = serving_leader(&c).await;
    let follower = c.apis().into_iter().find(|u| *u != leader_url).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut worker = worker(&follower, work.path(), None);
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    context(&ctx);
    let secret_file = work.path().join("secret");
    std::fs::write(&secret_file, "s").unwrap();
    let agent = crate::ssh_agent::TestAgent::start();
    let stderr_path = work.path().join("submit.err");
    let mut submit = submit_to(&c, work.path(), &secret_file, &agent)
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !newest_build(&c.apis()).await.is_some_and(|b| b.steps.iter().any(|s| s.state == "running")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the build never got going: {}", std::fs::read_to_string(&stderr_path).unwrap());
        assert!(submit.try_wait().unwrap().is_none(), "rbk submit ended early: {}", std::fs::read_to_string(&stderr_path).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every node gone: the client looks for a leader (for up to 60 s).
    for n in c.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        c.kill(n);
    }
    let start = Instant::now();
    while !std::fs::read_to_string(&stderr_path).unwrap().contains("following build") {
        assert!(start.elapsed() < Duration::from_secs(30), "rbk submit never noticed: {}", std::fs::read_to_string(&stderr_path).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill").args(["-INT", &submit.id().to_string()]).status().unwrap();
    let interrupted = Instant::now();
    let status = loop {
        if let Some(st) = submit.try_wait().unwrap() {
            break st;
        }
        assert!(interrupted.elapsed() < Duration::from_secs(5), "rbk submit ignored Ctrl-C while looking for a leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = worker.kill();
    let _ = worker.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("interrupted while following build") && stderr.contains("not cancelled"), "{stderr}");
}
