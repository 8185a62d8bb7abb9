//! `rbk build`: build a Dockerfile on this machine, the embedded default
//! (coordinator state, one worker and a filesystem store in one process;
//! no servers). The solver lives in `rbk-build`; this file maps flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rbk_build::{BuildOutput, BuildRequest, OutputKind, Progress, ProgressMode};
use rbk_worker::RuntimeKind;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name of the image (repeatable); the first also names it in the export.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    target: Option<String>,
    /// Run every step; cache mounts keep their contents.
    #[arg(long)]
    no_cache: bool,
    /// auto, plain (full logs), tty (same as auto) or quiet.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// `type=oci,dest=FILE` or `type=docker,dest=FILE` (repeatable).
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Coordinator state (action cache, cache heads); also holds `worker/`
    /// and `store/` unless --worker-dir / --store say otherwise.
    #[arg(long, default_value = "/var/lib/rbk")]
    state_dir: PathBuf,
    /// The worker's local state; a new directory is a fresh worker.
    #[arg(long)]
    worker_dir: Option<PathBuf>,
    /// The content store directory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// NAME=DIR[:REF]: `FROM NAME` loads this OCI layout instead of pulling.
    #[arg(long = "base-image")]
    base_images: Vec<String>,
    /// Registries reached over plain HTTP (loopback always is).
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// runc or crun.
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// The runtime binary (default: the runtime's name, from PATH).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    /// The build context directory.
    context: PathBuf,
}

fn parse_output(s: &str) -> anyhow::Result<BuildOutput> {
    let mut kind = None;
    let mut dest = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("type", "oci")) => kind = Some(OutputKind::Oci),
            Some(("type", "docker")) => kind = Some(OutputKind::Docker),
            Some(("type", t)) => bail!("--output {s}: type={t} is not supported by rbk build yet (oci or docker)"),
            Some(("dest", d)) => dest = Some(PathBuf::from(d)),
            _ => bail!("--output {s}: unknown field {part:?} (expected type=...,dest=...)"),
        }
    }
    match (kind, dest) {
        (Some(kind), Some(dest)) => Ok(BuildOutput { kind, dest }),
        _ => bail!("--output {s}: needs both type= and dest="),
    }
}

/// `--build-arg NAME=VALUE`, or `NAME` to take the value from the
/// environment (skipped when unset, as docker does).
pub(crate) fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    let mut build_args = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    build_args
}

pub async fn run(args: BuildArgs) -> anyhow::Result<()> {
    let mode: ProgressMode = args.progress.parse().map_err(anyhow::Error::msg)?;
    let mut req = BuildRequest::new(&args.context, &args.state_dir);
    req.dockerfile = args.file;
    req.tags = args.tags;
    req.target = args.target;
    req.no_cache = args.no_cache;
    req.worker_dir = args.worker_dir;
    req.store_dir = args.store;
    req.insecure_registries = args.insecure;
    req.build_args = parse_build_args(&args.build_args);
    for b in &args.base_images {
        let (name, dir) = b.split_once('=').with_context(|| format!("--base-image {b}: expected NAME=DIR"))?;
        req.base_images.insert(name.to_owned(), dir.to_owned());
    }
    req.outputs = args.outputs.iter().map(|o| parse_output(o)).collect::<anyhow::Result<_>>()?;
    req.runtime = match args.runtime.as_str() {
        "runc" => RuntimeKind::Runc,
        "crun" => RuntimeKind::Crun,
        r => bail!("--runtime {r}: expected runc or crun"),
    };
    req.runtime_program = args.runtime_path.unwrap_or_else(|| PathBuf::from(&args.runtime));
    let result = rbk_build::build(&req, Progress::stderr(mode)).await?;
    println!("{}", result.manifest_digest);
    Ok(())
}
