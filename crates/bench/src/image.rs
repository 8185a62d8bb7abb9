//! `rbk-bench image`: layer unpack and layer diff+compress throughput on
//! the synthetic workload (an overlay upper dir of about 500 MB).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rbk_image::{Compression, LayerOptions, UnpackOptions, layer_from_upper, unpack_layer_file};

#[derive(Args)]
pub struct ImageBenchArgs {
    /// Scratch directory (upper dir, layer blobs, unpacked trees). Wiped first.
    #[arg(long, default_value = "/tmp/rbk-bench-image")]
    work_dir: PathBuf,
    /// The synthetic workload generator (gen.py).
    #[arg(long, default_value = "/work/shared/workloads/synthetic/gen.py")]
    generator: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Runs per measurement; the table shows the best.
    #[arg(long, default_value_t = 2)]
    runs: usize,
}

pub async fn run(args: ImageBenchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || bench(&args)).await?
}

fn bench(args: &ImageBenchArgs) -> anyhow::Result<()> {
    let w = &args.work_dir;
    let _ = std::fs::remove_dir_all(w);
    std::fs::create_dir_all(w)?;
    let upper = w.join("upper");
    eprintln!("generating {} files ...", args.files);
    let st = std::process::Command::new("python3").arg(&args.generator).arg(&upper).arg(args.files.to_string()).arg("0").status().context("running python3 gen.py")?;
    if !st.success() {
        bail!("{} failed: {st}", args.generator.display());
    }
    let blobs = w.join("blobs");
    std::fs::create_dir_all(&blobs)?;

    println!("| operation | compression | tar MB | blob MB | seconds | MB/s (tar bytes) |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, compression, level) in [("gzip -6", Compression::Gzip, None), ("gzip -1", Compression::Gzip, Some(1)), ("zstd -3", Compression::Zstd, None)] {
        let mut best = f64::MAX;
        let mut layer = None;
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let l = layer_from_upper(&upper, &LayerOptions { compression, level, ..LayerOptions::new(&blobs) })?;
            best = best.min(t.elapsed().as_secs_f64());
            layer = Some(l);
        }
        let layer = layer.expect("at least one run");
        let tar_mb = layer.uncompressed_size as f64 / 1e6;
        println!("| diff+compress (layer_from_upper) | {name} | {tar_mb:.0} | {:.0} | {best:.2} | {:.0} |", layer.size as f64 / 1e6, tar_mb / best);

        let mut best = f64::MAX;
        for i in 0..args.runs.max(1) {
            let dest = w.join(format!("unpacked-{i}"));
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(&dest)?;
            let t = Instant::now();
            let stats = unpack_layer_file(layer.path(), &dest, &UnpackOptions::default())?;
            best = best.min(t.elapsed().as_secs_f64());
            anyhow::ensure!(stats.diff_id == layer.diff_id, "unpack of {name} saw diff_id {} not {}", stats.diff_id, layer.diff_id);
            remove(&dest)?;
        }
        println!("| unpack (unpack_layer) | {name} | {tar_mb:.0} | {:.0} | {best:.2} | {:.0} |", layer.size as f64 / 1e6, tar_mb / best);
    }
    remove(w)?;
    Ok(())
}

fn remove(p: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}
