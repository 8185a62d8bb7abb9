//! Container start overhead per RUN (`true`), runc vs crun, through the
//! worker's whole path (overlay mount, spec, runtime, diff of the empty
//! upper dir) and the runtime alone, through `rbk-worker`'s public API.
//! Shared by `rbk-bench worker` and `cargo bench -p rbk-bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use rbk_image::{History, Image, LayerOptions, OciLayout, Platform, layer_from_upper};

use anyhow::{Context, Result, bail};
use rbk_worker::{Command, Executor, LayerRef, Network, RunStep, RuntimeKind, Step, StepInputs, StepKind, WorkerConfig};

/// Medians and 90th percentiles of one runtime's runs.
#[derive(Debug, Clone)]
pub struct StartOverhead {
    pub runtime: RuntimeKind,
    pub runs: usize,
    pub total_median: Duration,
    pub total_p90: Duration,
    pub run_median: Duration,
    pub run_p90: Duration,
}

fn busybox_image(layout: &OciLayout, busybox: &Path, scratch: &Path) -> Result<Image> {
    let root = scratch.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).with_context(|| format!("creating {}", root.join(d).display()))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).with_context(|| format!("copying {}", busybox.display()))?;
    for a in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).with_context(|| format!("linking {a}"))?;
    }
    for (f, content) in [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")] {
        std::fs::write(root.join(f), content).with_context(|| format!("writing {f}"))?;
    }
    let layer = layer_from_upper(&root, &LayerOptions::new(scratch))?;
    layer.add_to_layout(layout)?;
    let mut image = Image::scratch(&Platform::linux_amd64());
    image.push_layer(&layer, History::default());
    image.save(layout, None)?;
    Ok(image)
}

fn percentile(v: &mut [Duration], pct: usize) -> Duration {
    v.sort();
    v[(v.len() * pct / 100).min(v.len() - 1)]
}

/// Runs `true` `runs` times under each of `runtimes` (after one warm-up
/// run that unpacks the base layer) with network `none`.
pub async fn start_overhead(runs: usize, busybox: &Path, runtimes: &[(RuntimeKind, &Path)]) -> Result<Vec<StartOverhead>> {
    if runs == 0 {
        bail!("runs: must be at least 1");
    }
    let dir = tempfile::tempdir().context("creating a scratch dir")?;
    let layout = OciLayout::create(dir.path().join("layout"))?;
    let image = busybox_image(&layout, busybox, dir.path())?;
    let base: Vec<LayerRef> = image.layers().iter().zip(image.diff_ids()).map(|(d, id)| LayerRef { digest: d.digest, diff_id: *id }).collect();
    let step = Step {
        base,
        kind: StepKind::Run(RunStep { network: Network::None, ..RunStep::new(Command::Exec(vec!["/bin/true".into()])) }),
    };
    let mut results = Vec::new();
    for (kind, program) in runtimes {
        let ex = Executor::new(WorkerConfig::new(dir.path().join(format!("{kind:?}")), *kind, *program))?;
        let (mut total, mut run) = (Vec::new(), Vec::new());
        for i in 0..=runs {
            let t = Instant::now();
            let out = ex.execute(&step, &layout, &StepInputs::default(), rbk_worker::logs::discard()).await?;
            if !out.succeeded() {
                bail!("{}: `true` failed: {:?}", program.display(), out.tail);
            }
            if i > 0 {
                total.push(t.elapsed());
                run.push(out.timings.run);
            }
        }
        results.push(StartOverhead {
            runtime: *kind,
            runs,
            total_median: percentile(&mut total, 50),
            total_p90: percentile(&mut total, 90),
            run_median: percentile(&mut run, 50),
            run_p90: percentile(&mut run, 90),
        });
    }
    Ok(results)
}

/// The results as a Markdown table.
pub fn table(results: &[StartOverhead]) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mut s = String::from("| runtime | runs | whole step, median | whole step, p90 | runtime run, median | runtime run, p90 |\n|---|---|---|---|---|---|\n");
    for r in results {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            format!("{:?}", r.runtime).to_lowercase(),
            r.runs,
            ms(r.total_median),
            ms(r.total_p90),
            ms(r.run_median),
            ms(r.run_p90)
        );
    }
    s
}
