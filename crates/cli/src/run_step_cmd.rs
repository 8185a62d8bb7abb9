//! `rbk run-step`: execute one worker step description (JSON) against a
//! base image on this machine — for tests and for debugging a worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use rbk_image::{History, Image, ImageRef, OciLayout, Platform, RegistryClient};
use rbk_worker::{Executor, LayerRef, LogLine, RuntimeKind, SecretValue, Step, StepInputs, Stream, WorkerConfig};

#[derive(Args)]
pub struct RunStepArgs {
    /// The step description (JSON, as `rbk_worker::Step`).
    step: PathBuf,
    /// Base image: a registry reference, or an OCI layout directory
    /// (optionally `DIR:REF_NAME`). Its layers replace the step's `base`.
    #[arg(long)]
    base: Option<String>,
    /// Registries reached over plain HTTP (localhost is always allowed).
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    #[arg(long, value_enum, default_value = "runc")]
    runtime: Runtime,
    /// The runtime binary (default: `runc`/`crun` from PATH).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    /// Worker state (layer store, scratch); default ./.rbk-worker.
    #[arg(long, default_value = ".rbk-worker")]
    state: PathBuf,
    /// The build context directory (`from: "context"`).
    #[arg(long)]
    context: Option<PathBuf>,
    /// `ID=DIR`: a cache mount's host directory.
    #[arg(long = "cache")]
    caches: Vec<String>,
    /// `ID=FILE`: a secret's value read from FILE.
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// `ID=SOCKET`: an SSH agent socket.
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Where to write the layer blob.
    #[arg(long)]
    layer_out: Option<PathBuf>,
    /// Also write the base image plus the new layer as an OCI archive.
    #[arg(long)]
    export_oci: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Runtime {
    Runc,
    Crun,
}

fn pairs(list: &[String], what: &str) -> anyhow::Result<HashMap<String, PathBuf>> {
    list.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| format!("--{what} {s:?}: expected ID=PATH"))?;
            Ok((k.to_owned(), PathBuf::from(v)))
        })
        .collect()
}

async fn load_base(spec: &str, state: &std::path::Path, insecure: &[String]) -> anyhow::Result<(OciLayout, Image)> {
    let (dir, ref_name) = match spec.rsplit_once(':') {
        Some((d, r)) if std::path::Path::new(d).is_dir() => (PathBuf::from(d), Some(r.to_owned())),
        _ => (PathBuf::from(spec), None),
    };
    if dir.join("index.json").is_file() {
        let layout = OciLayout::open(&dir)?;
        let desc = layout.find(ref_name.as_deref())?;
        let image = layout.load_image(&desc, &Platform::linux_amd64())?;
        return Ok((layout, image));
    }
    let reference: ImageRef = spec.parse().with_context(|| format!("--base {spec:?} is neither an OCI layout directory nor an image reference"))?;
    let layout = OciLayout::create(state.join("images"))?;
    let mut client = RegistryClient::new()?;
    for r in insecure {
        client = client.with_insecure(r);
    }
    let image = client.pull(&reference, &layout).await.with_context(|| format!("pulling {spec}"))?;
    Ok((layout, image))
}

pub async fn run(args: RunStepArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.step).with_context(|| format!("reading {}", args.step.display()))?;
    let mut step: Step = serde_json::from_str(&text).with_context(|| format!("{}: not a step description", args.step.display()))?;
    std::fs::create_dir_all(&args.state).with_context(|| format!("creating {}", args.state.display()))?;
    let (layout, image) = match &args.base {
        Some(b) => {
            let (layout, image) = load_base(b, &args.state, &args.insecure).await?;
            step.base = image.layers().iter().zip(image.diff_ids()).map(|(d, id)| LayerRef { digest: d.digest, diff_id: *id }).collect();
            // The image config's env, user and workdir, where the step
            // leaves them unset (the coordinator does this for real builds).
            if let rbk_worker::StepKind::Run(run) = &mut step.kind {
                let c = &image.config.config;
                if run.env.is_empty() {
                    run.env = c.env.clone().unwrap_or_default();
                }
                if run.user.is_none() {
                    run.user = c.user.clone().filter(|u| !u.is_empty());
                }
                if run.workdir.is_none() {
                    run.workdir = c.working_dir.clone().filter(|w| !w.is_empty());
                }
            }
            (layout, Some(image))
        }
        None => (OciLayout::create(args.state.join("images"))?, None),
    };
    let (kind, default) = match args.runtime {
        Runtime::Runc => (RuntimeKind::Runc, "runc"),
        Runtime::Crun => (RuntimeKind::Crun, "crun"),
    };
    let program = args.runtime_path.clone().unwrap_or_else(|| PathBuf::from(default));
    let ex = Executor::new(WorkerConfig::new(&args.state, kind, program))?;
    let mut secrets = HashMap::new();
    for (id, file) in pairs(&args.secrets, "secret")? {
        secrets.insert(id.clone(), SecretValue(std::fs::read(&file).with_context(|| format!("reading secret {id:?} from {}", file.display()))?));
    }
    let inputs =
        StepInputs { context: args.context.clone(), stages: HashMap::new(), caches: pairs(&args.caches, "cache")?, secrets, ssh: pairs(&args.ssh, "ssh")?, allow: Vec::new() };
    let sink = Arc::new(|l: &LogLine| {
        let t = l.time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let tag = if l.stream == Stream::Stdout { "out" } else { "err" };
        eprintln!("{}.{:03} {tag} {}", t.as_secs(), t.subsec_millis(), l.line);
    });
    let out = ex.execute(&step, &layout, &inputs, sink).await?;
    let t = out.timings;
    let Some(layer) = out.layer else {
        let why = if out.timed_out { "was killed at its wall-time limit".to_owned() } else { format!("exited with code {}", out.exit_code) };
        bail!("the step {why}; last lines:\n{}", out.tail.join("\n"));
    };
    println!(
        "{}",
        serde_json::json!({
            "digest": layer.digest.to_string(), "diff_id": layer.diff_id.to_string(), "blake3": layer.blake3.to_string(),
            "size": layer.size, "media_type": layer.media_type,
            "timings_ms": {"prepare": t.prepare.as_millis() as u64, "run": t.run.as_millis() as u64, "diff": t.diff.as_millis() as u64},
        })
    );
    if let Some(p) = &args.layer_out {
        std::fs::copy(layer.path(), p).with_context(|| format!("writing the layer to {}", p.display()))?;
    }
    if let Some(p) = &args.export_oci {
        let mut image = image.unwrap_or_else(|| Image::scratch(&Platform::linux_amd64()));
        layer.add_to_layout(&layout)?;
        image.push_layer(&layer, History { created_by: Some(format!("rbk run-step {}", args.step.display())), ..Default::default() });
        let desc = image.save(&layout, None)?;
        rbk_image::export_oci_archive(&layout, &desc, None, p)?;
    }
    Ok(())
}
