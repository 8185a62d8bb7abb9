//! The `rbk` binary: one command for developers, CI runners and operators.

mod build_info;
mod build_result;
mod builds_cmd;
mod cache_cmd;
mod coordinator_cmd;
mod coordinator_members_cmd;
mod coordinator_snapshot_cmd;
mod coordinator_raft;
mod context_source;
mod embedded_farm;
mod farm_images;
mod file_lock;
mod flags;
mod git_context;
mod raft_port;
mod snapshot_cmd;
mod graph_cmd;
mod log_format;
mod named_contexts;
mod store_cmd;
mod run_step_cmd;
mod build_cmd;
mod submit_cmd;
mod utc;
mod worker_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rbk", version = build_info::VERSION, about = "A distributed remote-cache build farm for Dockerfiles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or json (one object per line, for log
    /// shippers); which lines is RBK_LOG (e.g. info, rbk_coordinator=debug).
    #[arg(long, env = "RBK_LOG_FORMAT", global = true, default_value = "text", value_enum)]
    log_format: log_format::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Build a Dockerfile on the farm (docker build's flags; --coordinator, --token).
    Submit(submit_cmd::SubmitArgs),
    /// Build a Dockerfile on this machine (embedded coordinator, one worker, filesystem store).
    Build(build_cmd::BuildArgs),
    /// Execute one worker step description (JSON) against a base image (debugging).
    RunStep(run_step_cmd::RunStepArgs),
    /// Inspect and exercise the content store.
    Store(store_cmd::StoreArgs),
    /// Run the farm's coordinator (build, worker and content services).
    Coordinator(coordinator_cmd::CoordinatorArgs),
    /// List cache-mount heads and their sizes on a coordinator.
    Cache(cache_cmd::CacheArgs),
    /// Past and running builds on a coordinator: ls, inspect, logs.
    Builds(builds_cmd::BuildsArgs),
    /// Print a Dockerfile's build graph with cache keys (no build).
    Graph(graph_cmd::GraphArgs),
    /// Capture, restore and inspect directory snapshots by hand (debugging).
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// Join a farm as a worker: connect out to a coordinator and run the steps it assigns.
    Worker(worker_cmd::WorkerArgs),
}

/// User errors (a bad Dockerfile, bad flags, an unreachable coordinator)
/// print their message and causes, never a stack trace, whatever
/// `RUST_BACKTRACE` says (anyhow's `Debug` would add one).
fn main() -> std::process::ExitCode {
    rbk_worker::hygiene::close_inherited_fds();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
            if !causes.is_empty() {
                eprintln!("\nCaused by:");
                for c in causes {
                    eprintln!("    {c}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    log_format::init(cli.log_format);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.command {
            Command::Build(args) => build_cmd::run(args).await,
            Command::Submit(args) => submit_cmd::run(args).await,
            Command::RunStep(args) => run_step_cmd::run(args).await,
            Command::Store(args) => store_cmd::run(args).await,
            Command::Coordinator(args) => coordinator_cmd::run(args).await,
            Command::Cache(args) => cache_cmd::run(args).await,
            Command::Builds(args) => builds_cmd::run(args).await,
            Command::Graph(args) => graph_cmd::run(args).await,
            Command::Snapshot(args) => snapshot_cmd::run(args).await,
            Command::Worker(args) => worker_cmd::run(args).await,
        }
    })
}
