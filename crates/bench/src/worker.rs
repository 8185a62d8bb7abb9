//! `rbk-bench worker`: container start overhead per RUN (`true`) for runc
//! and crun (see `rbk_bench::start_overhead`).

use std::path::PathBuf;

use clap::Args;
use rbk_worker::RuntimeKind;

#[derive(Args)]
pub struct WorkerBenchArgs {
    /// RUNs per runtime (after one warm-up).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// A static busybox for the base image.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    #[arg(long, default_value = "crun")]
    crun: PathBuf,
}

pub async fn run(args: WorkerBenchArgs) -> anyhow::Result<()> {
    let results = rbk_bench::start_overhead::start_overhead(args.runs, &args.busybox, &[(RuntimeKind::Runc, &args.runc), (RuntimeKind::Crun, &args.crun)]).await?;
    print!("{}", rbk_bench::start_overhead::table(&results));
    Ok(())
}
