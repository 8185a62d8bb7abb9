//! `rbk builds ls|inspect|logs`: the caller's builds after the fact, as
//! `docker buildx history ls|inspect|logs` shows BuildKit's. The list and
//! the steps' states, workers and results come from the coordinator's
//! replicated state (`Build.List`, `History.Inspect`); log lines and step
//! times from what the coordinator that ran the build keeps in memory
//! (`History.Logs`, bounded by its `[history]` config). Scoped to the
//! token's tenant: another tenant's build is "not found".

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{BuildStatus, ListRequest};
use rbk_proto::history::history_client::HistoryClient;
use rbk_proto::history::{BuildDetail, InspectRequest, LogLine, LogsRequest, StepDetail};
use tonic::transport::Channel;

use crate::utc;

/// How long to look for a leader (an election takes about a second).
const LEADER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct BuildsArgs {
    #[command(subcommand)]
    command: BuildsCommand,
    #[command(flatten)]
    conn: crate::flags::CoordinatorConn,
}

#[derive(clap::Subcommand)]
enum BuildsCommand {
    /// Recent builds, newest first: id, status, steps, cache hits, start, duration.
    Ls {
        /// At most this many builds (the coordinator keeps its newest 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// table or json (one object per build per line).
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// One build's steps: status, worker, attempts, timings, cache hits.
    Inspect {
        /// The build id (as `rbk builds ls` and `rbk submit` print it).
        build: String,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// A build's log lines, replayed as `--progress=plain` prints them.
    Logs {
        build: String,
        /// Only this step's lines (its id, as `inspect` shows it).
        #[arg(long)]
        step: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

struct Conn {
    channel: Channel,
    token: String,
}

impl Conn {
    async fn open(args: &BuildsArgs) -> anyhow::Result<Conn> {
        let (token, coordinator) = (args.conn.token()?.to_owned(), &args.conn.coordinator);
        let tls = args.conn.tls.load()?;
        rbk_client::reattach::reachable_any(&tls, coordinator, Duration::ZERO).await?;
        let (channel, _) = rbk_client::reattach::connect_any(&tls, coordinator, &token, LEADER_PATIENCE)
            .await
            .with_context(|| format!("connecting to the coordinator at {coordinator}"))?;
        Ok(Conn { channel, token })
    }

    fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        Ok(rbk_client::bearer::authorized(msg, &self.token)?)
    }
}

/// A gRPC failure as the user reads it: the coordinator's message.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

pub async fn run(args: BuildsArgs) -> anyhow::Result<()> {
    let conn = Conn::open(&args).await?;
    match &args.command {
        BuildsCommand::Ls { limit, format } => {
            let req = conn.req(ListRequest { limit: (*limit).max(1) })?;
            let builds = BuildClient::new(conn.channel.clone()).list(req).await.map_err(status)?.into_inner().builds;
            print_list(&builds, *format);
        }
        BuildsCommand::Inspect { build, format } => {
            let d = inspect(&conn, build).await?;
            match format {
                Format::Table => print_detail(&d),
                Format::Json => println!("{}", detail_json(&d)),
            }
        }
        BuildsCommand::Logs { build, step } => {
            let d = inspect(&conn, build).await?;
            let req = conn.req(LogsRequest { build_id: build.clone(), step_id: step.clone().unwrap_or_default() })?;
            let mut stream = HistoryClient::new(conn.channel.clone()).logs(req).await.map_err(status)?.into_inner();
            let (mut lines, mut dropped) = (Vec::new(), 0);
            while let Some(chunk) = stream.message().await.map_err(status)? {
                dropped += chunk.dropped;
                lines.extend(chunk.lines);
            }
            print!("{}", plain_logs(&d, step.as_deref(), &lines, dropped));
        }
    }
    Ok(())
}

async fn inspect(conn: &Conn, build: &str) -> anyhow::Result<BuildDetail> {
    let req = conn.req(InspectRequest { build_id: build.to_owned() })?;
    Ok(HistoryClient::new(conn.channel.clone()).inspect(req).await.map_err(status)?.into_inner())
}

/// `1.2s`, `3m4s`: durations as BuildKit prints them.
fn duration(ms: u64) -> String {
    if ms < 60_000 { format!("{:.1}s", ms as f64 / 1000.0) } else { format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000) }
}

/// How long a build ran, or has been running ("+": still running).
fn build_duration(state: &str, created_ms: u64, finished_ms: u64) -> String {
    if state == "running" { format!("{}+", duration(utc::now_ms().saturating_sub(created_ms))) } else { duration(finished_ms.saturating_sub(created_ms)) }
}

fn count(steps: &[impl AsRef<str>], state: &str) -> usize {
    steps.iter().filter(|s| s.as_ref() == state).count()
}

fn print_list(builds: &[BuildStatus], format: Format) {
    if format == Format::Table {
        println!("{:<36}  {:<10}  {:>7}  {:>6}  {:<19}  DURATION", "BUILD ID", "STATUS", "STEPS", "CACHED", "CREATED AT");
    }
    for b in builds {
        let states: Vec<&str> = b.steps.iter().map(|s| s.state.as_str()).collect();
        let (cached, done) = (count(&states, "cached"), count(&states, "done"));
        let took = build_duration(&b.state, b.created_ms, b.finished_ms);
        match format {
            Format::Table => println!(
                "{:<36}  {:<10}  {:>7}  {:>6}  {:<19}  {took}",
                b.build_id,
                b.state,
                format!("{}/{}", cached + done, states.len()),
                cached,
                utc::short(b.created_ms),
            ),
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "id": b.build_id, "state": b.state, "steps": states.len(), "completed": cached + done,
                    "cached": cached, "created": utc::rfc3339_ms(b.created_ms),
                    "finished": (b.finished_ms > 0).then(|| utc::rfc3339_ms(b.finished_ms)),
                    "duration_ms": b.finished_ms.saturating_sub(b.created_ms),
                })
            ),
        }
    }
}

/// A step's time: from the times the coordinator saw, else the worker's.
fn step_time(s: &StepDetail) -> Option<u64> {
    match (s.started_ms, s.finished_ms) {
        (a, b) if a > 0 && b >= a => Some(b - a),
        _ if s.state == "done" => Some(s.duration_ms),
        _ => None,
    }
}

fn print_detail(d: &BuildDetail) {
    let states: Vec<&str> = d.steps.iter().map(|s| s.state.as_str()).collect();
    let cached = count(&states, "cached");
    let pct = if states.is_empty() { 0 } else { cached * 100 / states.len() };
    println!("Build ID:      {}", d.build_id);
    println!("Status:        {}", d.state);
    println!("Created At:    {}", utc::rfc3339_ms(d.created_ms));
    if d.finished_ms > 0 {
        println!("Completed At:  {}", utc::rfc3339_ms(d.finished_ms));
    }
    println!("Duration:      {}", build_duration(&d.state, d.created_ms, d.finished_ms));
    println!("Build Steps:   {}/{} ({pct}% cached)", cached + count(&states, "done"), states.len());
    if !d.message.is_empty() {
        println!("Error:         {}", d.message);
    }
    let kept: u64 = d.steps.iter().map(|s| s.log_lines).sum();
    println!(
        "Logs:          {}",
        match (d.logs_kept, d.log_lines_dropped) {
            (false, _) => "not kept by this coordinator".to_string(),
            (true, 0) => format!("{kept} lines (rbk builds logs {})", d.build_id),
            (true, n) => format!("{kept} lines, {n} older ones dropped (rbk builds logs {})", d.build_id),
        }
    );
    println!();
    println!("{:<4}  {:<16}  {:<9}  {:<12}  {:>8}  {:>8}  NAME", "STEP", "ID", "STATUS", "WORKER", "ATTEMPTS", "DURATION");
    for (i, s) in d.steps.iter().enumerate() {
        let took = step_time(s).map_or_else(|| "-".to_string(), duration);
        let worker = if s.worker_id.is_empty() { "-" } else { &s.worker_id };
        println!("#{:<3}  {:<16}  {:<9}  {:<12}  {:>8}  {:>8}  {}", i + 1, s.step_id, s.state, worker, s.attempts, took, s.name);
    }
    for (i, s) in d.steps.iter().enumerate() {
        if !s.cache_mounts.is_empty() {
            println!("\n#{} cache mounts: {}", i + 1, s.cache_mounts.join(", "));
        }
        if s.state == "failed" && !s.message.is_empty() {
            println!("\n#{} error: {}", i + 1, s.message);
        }
    }
}

fn detail_json(d: &BuildDetail) -> serde_json::Value {
    let steps: Vec<_> = d
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.step_id, "name": s.name, "state": s.state, "cached": s.state == "cached",
                "worker": s.worker_id, "attempts": s.attempts, "message": s.message,
                "started": (s.started_ms > 0).then(|| utc::rfc3339_ms(s.started_ms)),
                "finished": (s.finished_ms > 0).then(|| utc::rfc3339_ms(s.finished_ms)),
                "duration_ms": step_time(s), "layers": s.layers, "deps": s.deps,
                "cache_mounts": s.cache_mounts, "log_lines": s.log_lines,
            })
        })
        .collect();
    serde_json::json!({
        "id": d.build_id, "state": d.state, "message": d.message,
        "created": utc::rfc3339_ms(d.created_ms),
        "finished": (d.finished_ms > 0).then(|| utc::rfc3339_ms(d.finished_ms)),
        "logs_kept": d.logs_kept, "log_lines_dropped": d.log_lines_dropped, "steps": steps,
    })
}

/// The build as `--progress=plain` would have printed it: per step in
/// graph order its `#N NAME` header, its lines timed from its start, and
/// how it ended.
fn plain_logs(d: &BuildDetail, only: Option<&str>, lines: &[LogLine], dropped: u64) -> String {
    let mut by_step: BTreeMap<&str, Vec<&LogLine>> = BTreeMap::new();
    for l in lines {
        by_step.entry(&l.step_id).or_default().push(l);
    }
    let mut out = String::new();
    if dropped > 0 {
        out += &format!("(the {dropped} oldest lines of this build were not kept)\n\n");
    }
    for (i, s) in d.steps.iter().enumerate() {
        if only.is_some_and(|o| o != s.step_id) || s.state == "pending" {
            continue;
        }
        let n = i + 1;
        out += &format!("#{n} [{}] {}\n", s.step_id, s.name);
        for l in by_step.get(s.step_id.as_str()).into_iter().flatten() {
            match l.at_ms.checked_sub(s.started_ms).filter(|_| s.started_ms > 0) {
                Some(t) => out += &format!("#{n} {:.3} {}\n", t as f64 / 1000.0, l.line),
                None => out += &format!("#{n} {}\n", l.line),
            }
        }
        out += &match s.state.as_str() {
            "cached" => format!("#{n} CACHED\n"),
            "done" => format!("#{n} DONE {}\n", step_time(s).map_or_else(String::new, duration)),
            "failed" => format!("#{n} ERROR: {}\n", s.message),
            "cancelled" => format!("#{n} CANCELED\n"),
            _ => format!("#{n} ...\n"),
        };
        out += "\n";
    }
    out
}
