//! `rbk bench ...`: measurements recorded in docs/benchmarks.md.

use clap::{Args, Subcommand};

use crate::{bench_worker_cmd, bench_image_cmd, bench_snapshot_cmd, bench_store_cmd};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Container start overhead per RUN (`true`): runc vs crun.
    Worker(bench_worker_cmd::WorkerBenchArgs),
    /// Content store throughput: hashing, zstd, filesystem and S3 put/get next to the raw SDK.
    Store(bench_store_cmd::BenchStoreArgs),
    /// Directory snapshots vs tar|zstd on the synthetic workload (filesystem store and S3).
    Snapshot(bench_snapshot_cmd::SnapshotBenchArgs),
    /// Image layers: unpack and diff+compress (gzip, zstd) on a ~500 MB upper dir.
    Image(bench_image_cmd::ImageBenchArgs),
    /// Replicated coordinator: committed commands/s and commit latency, 1 and 3 Raft nodes.
    Raft(crate::bench_raft_cmd::RaftBenchArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Worker(a) => bench_worker_cmd::run(a).await,
        BenchCommand::Store(a) => bench_store_cmd::run(a).await,
        BenchCommand::Snapshot(a) => bench_snapshot_cmd::run(a).await,
        BenchCommand::Image(a) => bench_image_cmd::run(a).await,
        BenchCommand::Raft(a) => crate::bench_raft_cmd::run(a).await,
    }
}
