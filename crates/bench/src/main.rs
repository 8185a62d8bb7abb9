//! `rbk-bench ...`: measurements recorded in docs/benchmarks.md. A binary
//! of its own so the product binary (`rbk`) carries neither the benchmark
//! code nor the dependencies only it needs (the raw S3 SDK, tar, zstd).

mod image;
mod raft;
mod snapshot;
mod soak;
mod step_sleeper;
mod store;
mod tenants;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rbk-bench", version, about = "Measure throughput (prints tables for docs/benchmarks.md)")]
struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Container start overhead per RUN (`true`): runc vs crun.
    Worker(worker::WorkerBenchArgs),
    /// Content store throughput: hashing, zstd, filesystem and S3 put/get next to the raw SDK.
    Store(store::BenchStoreArgs),
    /// Directory snapshots vs tar|zstd on the synthetic workload (filesystem store and S3).
    Snapshot(snapshot::SnapshotBenchArgs),
    /// Image layers: unpack and diff+compress (gzip, zstd) on a ~500 MB upper dir.
    Image(image::ImageBenchArgs),
    /// Replicated coordinator: committed commands/s and commit latency, 1 and 3 Raft nodes.
    Raft(raft::RaftBenchArgs),
    /// Many tenants submitting at once: submit latency, quota refusals, coordinator RSS.
    Tenants(tenants::TenantsBenchArgs),
    /// Storage bounds under load: builds with cache mounts, the collector and small budgets, S3 faults, a final reachability check.
    Soak(soak::SoakArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RBK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = BenchArgs::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match args.command {
            BenchCommand::Worker(a) => worker::run(a).await,
            BenchCommand::Store(a) => store::run(a).await,
            BenchCommand::Snapshot(a) => snapshot::run(a).await,
            BenchCommand::Image(a) => image::run(a).await,
            BenchCommand::Raft(a) => raft::run(a).await,
            BenchCommand::Tenants(a) => tenants::run(a).await,
            BenchCommand::Soak(a) => soak::run(a).await,
        }
    })
}
