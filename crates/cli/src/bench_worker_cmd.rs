//! `rbk bench worker`: container start overhead per RUN (`true`) for runc
//! and crun, through the worker's whole path (overlay mount, spec, runtime,
//! diff of the empty upper dir) and the runtime alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rbk_image::{History, Image, LayerOptions, OciLayout, Platform, layer_from_upper};
use rbk_worker::{Command, Executor, LayerRef, RunStep, RuntimeKind, Step, StepInputs, StepKind, WorkerConfig};

#[derive(Args)]
pub struct WorkerBenchArgs {
    /// RUNs per runtime.
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

fn busybox_image(layout: &OciLayout, busybox: &std::path::Path) -> anyhow::Result<Image> {
    let root = tempfile::tempdir()?;
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.path().join(d))?;
    }
    std::fs::copy(busybox, root.path().join("bin/busybox"))?;
    for a in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(a))?;
    }
    std::fs::write(root.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 localhost\n")?;
    std::fs::write(root.path().join("etc/resolv.conf"), "")?;
    let layer = layer_from_upper(root.path(), &LayerOptions::new(layout.root()))?;
    layer.add_to_layout(layout)?;
    let mut image = Image::scratch(&Platform::linux_amd64());
    image.push_layer(&layer, History::default());
    image.save(layout, None)?;
    Ok(image)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

pub async fn run(args: WorkerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let layout = OciLayout::create(dir.path().join("layout"))?;
    let image = busybox_image(&layout, &args.busybox)?;
    let base: Vec<LayerRef> = image.layers().iter().zip(image.diff_ids()).map(|(d, id)| LayerRef { digest: d.digest, diff_id: *id }).collect();
    let step = Step {
        base,
        kind: StepKind::Run(RunStep {
            command: Command::Exec(vec!["/bin/true".into()]),
            shell: rbk_worker::step::default_shell(),
            env: vec![],
            user: None,
            workdir: None,
            mounts: vec![],
            network: rbk_worker::Network::None,
            limits: Default::default(),
            security: Default::default(),
        }),
    };
    println!("| runtime | runs | step total median | step total p90 | runtime run median | runtime run p90 |");
    println!("|---|---|---|---|---|---|");
    for (kind, program) in [(RuntimeKind::Runc, &args.runc), (RuntimeKind::Crun, &args.crun)] {
        let ex = Executor::new(WorkerConfig::new(dir.path().join(format!("{kind:?}")), kind, program))?;
        // One warm-up run unpacks the base layer.
        let out = ex.execute(&step, &layout, &StepInputs::default(), rbk_worker::logs::discard()).await?;
        anyhow::ensure!(out.succeeded(), "{kind:?}: `true` failed: {:?}", out.tail);
        let (mut total, mut run) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let t = std::time::Instant::now();
            let out = ex.execute(&step, &layout, &StepInputs::default(), rbk_worker::logs::discard()).await?;
            anyhow::ensure!(out.succeeded(), "{kind:?}: `true` failed: {:?}", out.tail);
            total.push(t.elapsed());
            run.push(out.timings.run);
        }
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            format!("{kind:?}").to_lowercase(),
            args.runs,
            ms(median(&mut total)),
            ms(p90(&mut total)),
            ms(median(&mut run)),
            ms(p90(&mut run))
        );
    }
    Ok(())
}
