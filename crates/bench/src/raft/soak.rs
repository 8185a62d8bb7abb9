//! `rbk-bench raft --soak-kills N`: failover under load with real
//! processes. Three `rbk coordinator` nodes (the `rbk` binary next to this
//! one, or `$RBK`) on 127.0.0.1, a
//! worker that follows the leader, a client submitting builds without
//! pause; the leader is SIGKILLed N times (and restarted on its data dir).
//! Prints kill → new leader serving times and fails if any accepted build
//! is lost or does not finish.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rbk_client::ClientTls;
use rbk_client::leader::{connect_leader, follow_leader};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};

use crate::step_sleeper::{self, bearer};

const TENANT: &str = "soak-tenant-token-000000001";
const WORKER: &str = "soak-worker-token-000000002";

fn port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The product binary the nodes run: `$RBK`, else the `rbk` built next to
/// `rbk-bench` (`cargo build --release -p rbk -p rbk-bench`).
pub(crate) fn rbk_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("RBK") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let rbk = exe.with_file_name("rbk");
    ensure!(rbk.is_file(), "no rbk binary at {} (build it with `cargo build -p rbk`, or set RBK)", rbk.display());
    Ok(rbk)
}

struct Nodes {
    dir: std::path::PathBuf,
    api: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Nodes {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::write(dir.join("tokens.toml"), format!("[tenants]\n\"{TENANT}\" = \"soak\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"soak\"]\n"))?;
        std::fs::write(dir.join("raft.secret"), "rbk-soak-raft-secret-0001")?;
        let api: Vec<u16> = (0..3).map(|_| port()).collect::<Result<_, _>>()?;
        let raft: Vec<u16> = (0..3).map(|_| port()).collect::<Result<_, _>>()?;
        for i in 0..3 {
            let mut t = format!(
                "listen = \"127.0.0.1:{}\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n[scheduler]\nheartbeat_ms = 500\nworker_timeout_ms = 5000\n\
                 [raft]\nnode_id = {}\ndata_dir = \"node{}\"\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"raft.secret\"\nsnapshot_entries = 500\ntick_ms = 50\nelection_ticks = 10\nheartbeat_ticks = 1\n[raft.peers]\n",
                api[i], i + 1, i + 1, raft[i]
            );
            for j in 0..3 {
                t += &format!("{} = {{ raft = \"127.0.0.1:{}\", api = \"http://127.0.0.1:{}\" }}\n", j + 1, raft[j], api[j]);
            }
            std::fs::write(dir.join(format!("node{}.toml", i + 1)), t)?;
        }
        let mut n = Self { dir: dir.to_owned(), api, children: vec![None, None, None] };
        for i in 0..3 {
            n.start(i)?;
        }
        Ok(n)
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node{}.log", i + 1)))?;
        let child = Command::new(rbk_binary()?)
            .args(["coordinator", "--config"])
            .arg(self.dir.join(format!("node{}.toml", i + 1)))
            .env("RBK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rbk coordinator")?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn urls(&self) -> Vec<String> {
        self.api.iter().map(|p| format!("http://127.0.0.1:{p}")).collect()
    }
}

fn chain(salt: usize) -> Vec<pb::StepNode> {
    (0..3)
        .map(|i| pb::StepNode {
            id: format!("s{i}"),
            key: format!("soak-{salt}-{i}"),
            deps: if i == 0 { vec![] } else { vec![format!("s{}", i - 1)] },
            // One cache per build: the fake worker uploads no snapshots to merge.
            cache_mounts: vec![pb::CacheMount { id: format!("c{salt}"), sharing: "shared".into() }],
            payload: b"{}".to_vec(),
            name: format!("RUN {i}"),
            ..Default::default()
        })
        .collect()
}

/// A worker like `rbk worker` would be: follows the leader, runs steps for
/// 20 ms, commits a snapshot per cache mount, reconnects when cut off.
async fn worker(urls: Vec<String>) {
    let mut turn = 0;
    loop {
        let url = urls[turn % urls.len()].clone();
        turn += 1;
        let _ = worker_session(&url).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn worker_session(url: &str) -> anyhow::Result<()> {
    let (channel, _) = connect_leader(&ClientTls::default(), url, WORKER, Duration::from_secs(5)).await?;
    step_sleeper::session(channel, "soak-worker".into(), WORKER, Duration::from_millis(300)).await
}

async fn submit(urls: &[String], salt: usize) -> Option<String> {
    let url = &urls[salt % urls.len()];
    let r = follow_leader(&ClientTls::default(), url, Duration::from_secs(10), |channel| async move {
        let req = pb::SubmitRequest { options: Some(Default::default()), steps: chain(salt), ..Default::default() };
        let mut events = BuildClient::new(channel).submit(bearer(req, TENANT)).await?.into_inner();
        match events.message().await?.and_then(|m| m.event) {
            Some(Event::Accepted(a)) => Ok(a.build_id),
            other => Err(tonic::Status::internal(format!("first event {other:?}"))),
        }
    })
    .await;
    match r {
        Ok((Ok(id), _)) => Some(id),
        _ => None,
    }
}

async fn status(urls: &[String], id: &str) -> Option<pb::BuildStatus> {
    for url in urls {
        let id = id.to_owned();
        let r = follow_leader(&ClientTls::default(), url, Duration::from_secs(3), |channel| {
            let id = id.clone();
            async move { Ok(BuildClient::new(channel).status(bearer(pb::StatusRequest { build_id: id }, TENANT)).await?.into_inner()) }
        })
        .await;
        if let Ok((Ok(s), _)) = r {
            return Some(s);
        }
    }
    None
}

pub async fn run(kills: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut nodes = Nodes::new(tmp.path())?;
    let urls = nodes.urls();
    let w = tokio::spawn(worker(urls.clone()));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (urls, accepted, stop) = (urls.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut salt = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                salt += 1;
                if let Some(id) = submit(&urls, salt).await {
                    accepted.lock().expect("not poisoned").push(id);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut failovers = Vec::new();
    for k in 0..kills {
        let (_, leader) = connect_leader(&ClientTls::default(), &urls[k % 3], TENANT, Duration::from_secs(30)).await?;
        let i = urls.iter().position(|u| *u == leader).context("leader url")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut child = nodes.children[i].take().context("leader not running")?;
        child.kill()?;
        let killed = Instant::now();
        child.wait()?;
        let survivor = &urls[(i + 1) % 3];
        let (_, new_leader) = connect_leader(&ClientTls::default(), survivor, TENANT, Duration::from_secs(30)).await?;
        ensure!(new_leader != leader, "the killed node still leads?");
        let took = killed.elapsed();
        failovers.push(took);
        eprintln!("kill {}/{kills}: node {} → node {} serving after {took:?}", k + 1, i + 1, urls.iter().position(|u| *u == new_leader).unwrap_or(9) + 1);
        nodes.start(i)?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.await?;
    let ids = accepted.lock().expect("not poisoned").clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lost = 0;
    for id in &ids {
        loop {
            match status(&urls, id).await {
                Some(s) if s.state == "succeeded" => break,
                Some(s) if s.state != "running" => bail!("build {id} ended {}: {s:?}", s.state),
                Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Some(s) => bail!("build {id} still running after the soak: {s:?}"),
                None => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    w.abort();
    failovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| kills | builds accepted | lost | failover min | median | max |");
    println!("|---|---|---|---|---|---|");
    if !failovers.is_empty() {
        println!(
            "| {} | {} | {lost} | {:.0} ms | {:.0} ms | {:.0} ms |",
            failovers.len(),
            ids.len(),
            ms(failovers[0]),
            ms(failovers[failovers.len() / 2]),
            ms(failovers[failovers.len() - 1])
        );
    }
    ensure!(lost == 0, "{lost} accepted builds are unknown after the soak");
    Ok(())
}
