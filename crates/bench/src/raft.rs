//! `rbk-bench raft`: committed coordinator commands per second and commit
//! latency (propose on the leader → committed on a quorum, fsynced, applied
//! on the leader) for 1-, 3- and 5-node Raft clusters on 127.0.0.1. The nodes
//! run in this process but talk over real gRPC and fsync to real files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rbk_coordinator::raft_config::RaftConfig;
use rbk_coordinator::state::{ActionResult, Command, CoordinatorState};
use rbk_raft::RaftState;

#[derive(Args)]
pub struct RaftBenchArgs {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    nodes: Vec<u64>,
    /// Commands per measurement.
    #[arg(long, default_value_t = 3000)]
    commands: usize,
    /// Concurrent proposers (1 measures latency alone; more, batching).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Where the nodes' data dirs go (default: a temporary dir); the disk's
    /// fsync latency dominates the result.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Instead: the failover soak with 3 real `rbk coordinator` processes,
    /// SIGKILLing the leader this many times under a stream of builds
    /// (bench/raft-soak.sh).
    #[arg(long)]
    soak_kills: Option<usize>,
    /// Instead: the cost of one durable 100–500-byte append on the disk
    /// under --dir, by method (fsync, fdatasync, preallocated, O_DSYNC,
    /// O_DIRECT), --commands appends each.
    #[arg(long)]
    fsync_probe: bool,
}

pub(crate) mod soak;

mod fsync;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn cluster(dir: &std::path::Path, n: u64) -> anyhow::Result<Vec<RaftState>> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    std::fs::write(dir.join("raft.secret"), "rbk-bench-raft-secret-0001")?;
    for id in 1..=n {
        let mut text = format!(
            "node_id = {id}\ndata_dir = \"n{n}-{id}\"\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"raft.secret\"\nsnapshot_entries = 100000\ntick_ms = 50\nheartbeat_ticks = 1\n[peers]\n",
            ports[id as usize - 1]
        );
        for (i, p) in ports.iter().enumerate() {
            text += &format!("{} = {{ raft = \"127.0.0.1:{p}\", api = \"http://127.0.0.1:1\" }}\n", i + 1);
        }
        let mut c: RaftConfig = toml_from(&text)?;
        c.resolve(dir).map_err(anyhow::Error::msg)?;
        nodes.push(RaftState::start(&c).await?);
    }
    Ok(nodes)
}

fn toml_from(text: &str) -> anyhow::Result<RaftConfig> {
    // The coordinator config parser owns TOML; reuse it through a wrapper.
    let wrapped = format!("listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[raft]\n{}", text.replace("[peers]", "[raft.peers]"));
    let c = rbk_coordinator::CoordinatorConfig::parse(&wrapped, std::path::Path::new("bench.toml"))?;
    c.raft.context("no [raft] section")
}

fn command(i: usize) -> Command {
    Command::PutAction {
        namespace: "bench".into(),
        key: format!("key-{i:08}"),
        result: ActionResult { layers: vec![], config: b"{\"env\":[]}".to_vec(), duration_ms: 1, worker_id: "w".into(), created_ms: i as u64 },
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

pub async fn run(args: RaftBenchArgs) -> anyhow::Result<()> {
    if let Some(kills) = args.soak_kills {
        return soak::run(kills).await;
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    if args.fsync_probe {
        return fsync::run(&dir, args.commands);
    }
    println!("| nodes | proposers | commands | commands/s | p50 commit | p99 commit | max commit |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let nodes = cluster(&dir, n).await?;
        let start = Instant::now();
        let leader = loop {
            if let Some(l) = nodes.iter().find(|x| x.is_serving_leader()) {
                break l.clone();
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "no leader among {n} nodes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut base = 0;
        for &c in &args.concurrency {
            let leader = Arc::new(leader.clone());
            let per = args.commands / c.max(1);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..c {
                let leader = leader.clone();
                let first = base + w * per;
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per);
                    for i in 0..per {
                        let t = Instant::now();
                        leader.apply(command(first + i)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                        lat.push(t.elapsed());
                    }
                    anyhow::Ok(lat)
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            let took = t0.elapsed();
            base += c * per;
            all.sort();
            println!(
                "| {n} | {c} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
                all.len(),
                all.len() as f64 / took.as_secs_f64(),
                pct(&all, 0.50).as_secs_f64() * 1e3,
                pct(&all, 0.99).as_secs_f64() * 1e3,
                all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
            );
        }
        for node in &nodes {
            node.stop();
        }
    }
    Ok(())
}
