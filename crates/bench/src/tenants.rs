//! `rbk-bench tenants`: many tenants submitting at once (issue #15). One
//! `rbk coordinator` process (the `rbk` binary next to this one, or `$RBK`)
//! on 127.0.0.1 — or, with `--raft N`, a Raft group of N such processes
//! (every write committed through the replicated, fsynced log) — two
//! workers serving every tenant (gRPC sessions that finish each step after
//! 20 ms), and `--tenants` × `--submits` builds of one step submitted
//! concurrently to the leader. Every build must complete or be refused by
//! a quota with a clear message; prints the submit latency (Submit sent →
//! `Accepted`) and the leader's peak RSS.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{self as pb, build_event::Event};

use crate::step_sleeper::{self, bearer};

const WORKER: &str = "tenants-bench-worker-token-01";

#[derive(clap::Args)]
pub struct TenantsBenchArgs {
    /// Tenants, each with a token of its own.
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Concurrent submits per tenant.
    #[arg(long, default_value_t = 50)]
    submits: usize,
    /// Give up on the run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Run the coordinator as a Raft group of this many nodes (0: one
    /// coordinator with its state in memory).
    #[arg(long, default_value_t = 0, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["0", "1", "3", "5"]), |v| v.parse::<usize>().expect("listed")))]
    raft: usize,
}

fn tenant_token(i: usize) -> String {
    format!("tenants-bench-tenant-token-{i:04}")
}

struct Coordinator {
    children: Vec<Child>,
    /// Every node's API URL.
    urls: Vec<String>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Coordinator {
    /// One coordinator (`raft` 0) or a Raft group of `raft` nodes.
    fn start(dir: &std::path::Path, tenants: usize, raft: usize) -> anyhow::Result<Self> {
        let mut tokens = String::from("[tenants]\n");
        for i in 0..tenants {
            tokens += &format!("\"{}\" = \"tenant-{i}\"\n", tenant_token(i));
        }
        let served: Vec<String> = (0..tenants).map(|i| format!("\"tenant-{i}\"")).collect();
        tokens += &format!("[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [{}]\n", served.join(", "));
        std::fs::write(dir.join("tokens.toml"), tokens)?;
        std::fs::write(dir.join("raft.secret"), "rbk-tenants-bench-raft-secret")?;
        let nodes = raft.max(1);
        let api: Vec<u16> = (0..nodes).map(|_| free_port()).collect::<Result<_, _>>()?;
        let peer: Vec<u16> = (0..nodes).map(|_| free_port()).collect::<Result<_, _>>()?;
        let mut children = Vec::new();
        for i in 0..nodes {
            let mut config = format!("listen = \"127.0.0.1:{}\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n", api[i]);
            if raft > 0 {
                config += &format!(
                    "[raft]\nnode_id = {}\ndata_dir = \"node{}\"\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"raft.secret\"\n[raft.peers]\n",
                    i + 1,
                    i + 1,
                    peer[i]
                );
                for j in 0..nodes {
                    config += &format!("{} = {{ raft = \"127.0.0.1:{}\", api = \"http://127.0.0.1:{}\" }}\n", j + 1, peer[j], api[j]);
                }
            }
            let path = dir.join(format!("node{}.toml", i + 1));
            std::fs::write(&path, config)?;
            let child = Command::new(crate::raft::soak::rbk_binary()?)
                .args(["coordinator", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting rbk coordinator")?;
            children.push(child);
        }
        Ok(Self { children, urls: api.iter().map(|p| format!("http://127.0.0.1:{p}")).collect() })
    }

    /// The leader's URL (the only node, without Raft), once one serves.
    async fn leader(&self) -> anyhow::Result<String> {
        let tls = rbk_client::ClientTls::default();
        let (_, url) = rbk_client::leader::connect_leader(&tls, &self.urls[0], &tenant_token(0), Duration::from_secs(30))
            .await
            .context("no coordinator leader within 30 s")?;
        Ok(url)
    }

    /// The process serving `url`.
    fn child_of(&self, url: &str) -> &Child {
        &self.children[self.urls.iter().position(|u| u == url).unwrap_or(0)]
    }

    /// Peak resident set size (`VmHWM`) of the node at `url`, in MiB.
    fn peak_rss_mib(&self, url: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child_of(url).id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM")?;
        Ok(kb / 1024.0)
    }
}

/// A worker session that finishes every step after 20 ms.
async fn worker(url: String, id: String) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(url)?.connect().await?;
    step_sleeper::session(channel, id, WORKER, Duration::from_millis(1000)).await
}

enum Outcome {
    /// Submit → `Accepted`, and the build's final state.
    Built(Duration, String),
    /// Refused by a per-tenant limit (the message).
    Refused(String),
}

async fn one_build(url: String, token: String, salt: usize) -> anyhow::Result<Outcome> {
    let channel = tonic::transport::Channel::from_shared(url)?.connect().await?;
    let step = pb::StepNode { id: "s".into(), key: format!("tenants-bench-{salt}"), payload: format!("{{\"n\":{salt}}}").into_bytes(), name: "RUN s".into(), ..Default::default() };
    let req = pb::SubmitRequest { options: Some(Default::default()), steps: vec![step], ..Default::default() };
    let sent = Instant::now();
    let mut events = match BuildClient::new(channel).submit(bearer(req, &token)).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::ResourceExhausted => return Ok(Outcome::Refused(s.message().to_owned())),
        Err(s) => bail!("submit refused: {s}"),
    };
    let Some(Event::Accepted(_)) = events.message().await?.and_then(|m| m.event) else { bail!("the first event is not Accepted") };
    let accepted = sent.elapsed();
    while let Some(m) = events.message().await? {
        if let Some(Event::BuildFinished(f)) = m.event {
            return Ok(Outcome::Built(accepted, f.state));
        }
    }
    bail!("the stream ended before BuildFinished")
}

pub async fn run(args: TenantsBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let coordinator = Coordinator::start(tmp.path(), args.tenants, args.raft)?;
    let leader = coordinator.leader().await?;
    let workers: Vec<_> = (0..2).map(|i| tokio::spawn(worker(leader.clone(), format!("w{i}")))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut builds = Vec::new();
    for t in 0..args.tenants {
        for s in 0..args.submits {
            builds.push(tokio::spawn(one_build(leader.clone(), tenant_token(t), t * args.submits + s)));
        }
    }
    let all = futures::future::join_all(builds);
    let results = tokio::time::timeout(Duration::from_secs(args.timeout_secs), all).await.context("the builds did not all end in time")?;
    let wall = started.elapsed();
    let (mut latencies, mut refused, mut failed) = (Vec::new(), Vec::new(), 0);
    for r in results {
        match r?? {
            Outcome::Built(d, state) if state == "succeeded" => latencies.push(d),
            Outcome::Built(_, _) => failed += 1,
            Outcome::Refused(m) => refused.push(m),
        }
    }
    let rss = coordinator.peak_rss_mib(&leader)?;
    for w in workers {
        w.abort();
    }
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!("| coordinators | tenants × submits | completed | refused (quota) | failed | submit p50 | p99 | max | wall | leader peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} × {} | {} | {} | {failed} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} s | {rss:.0} MiB |",
        if args.raft == 0 { "1, no Raft".to_owned() } else { format!("{} (Raft)", args.raft) },
        args.tenants,
        args.submits,
        latencies.len(),
        refused.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        wall.as_secs_f64()
    );
    if let Some(m) = refused.first() {
        println!("\nfirst refusal: {m}");
    }
    ensure!(failed == 0, "{failed} builds failed");
    Ok(())
}
