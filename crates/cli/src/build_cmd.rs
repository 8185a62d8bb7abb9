//! `rbk build`: build a Dockerfile on this machine, the embedded default:
//! the farm in one process ([`crate::embedded_farm`]: coordinator, one
//! worker, filesystem store; no servers), driven like `rbk submit` drives a
//! farm (planning, progress from the event stream, assembly).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rbk_worker::payload::FarmResult;
use rbk_plan::assemble;
use rbk_plan::planner::{self, Plan, PlanRequest};
use rbk_client::{Progress, ProgressMode};
use rbk_store::{FilesystemStore, Store};
use rbk_worker::RuntimeKind;
use tonic::transport::Endpoint;

use crate::embedded_farm::{self, EmbeddedFarm};
use crate::flags::{DockerBuildFlags, OutputFlags};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Name of the image (repeatable); the first also names it in the export.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    out: OutputFlags,
    /// Coordinator state (action cache, cache heads); also holds `worker/`
    /// and `store/` unless --worker-dir / --store-dir say otherwise.
    #[arg(long, default_value = "/var/lib/rbk")]
    state_dir: PathBuf,
    /// The worker's local state; a new directory is a fresh worker.
    #[arg(long)]
    worker_dir: Option<PathBuf>,
    /// The content store directory (default STATE_DIR/store).
    #[arg(long = "store-dir", alias = "store")]
    store: Option<PathBuf>,
    /// default|ID[=SOCKET]: an SSH agent (default `$SSH_AUTH_SOCK`) for
    /// `RUN --mount=type=ssh`, reachable only while the build runs.
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// runc or crun.
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// The runtime binary (default: the runtime's name, from PATH).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    #[command(flatten)]
    docker: DockerBuildFlags,
    /// The build context: a directory, a git URL (`URL#REF:SUBDIR`), an
    /// http(s) URL of a tar archive or Dockerfile, or `-` (stdin).
    context: PathBuf,
}

pub async fn run(args: BuildArgs) -> anyhow::Result<()> {
    let mode: ProgressMode = args.docker.progress_mode()?;
    let outputs = args.out.parse()?;
    let runtime = match args.runtime.as_str() {
        "runc" => RuntimeKind::Runc,
        "crun" => RuntimeKind::Crun,
        r => bail!("--runtime {r}: expected runc or crun"),
    };
    let program = args.runtime_path.clone().unwrap_or_else(|| PathBuf::from(&args.runtime));
    let secrets = planner::load_secrets(&args.docker.secrets)?;
    let ssh = rbk_client::ssh_agents::SshAgents::parse(&args.ssh)?;
    let (state_dir, worker_dir, store_dir) = embedded_farm::dirs(&args.state_dir, args.worker_dir.as_deref(), args.store.as_deref())?;

    // The client's scratch space (pulled bases, staged context, the image).
    let client_dir = state_dir.join("client");
    let mut progress = Progress::stderr(mode);
    let (mut req, _inputs) = args.docker.prepare(&args.context, &client_dir, &secrets, &progress).await?;
    req.ssh_ids = ssh.ids();
    // Before anything starts: a Dockerfile error is the user's to fix first.
    let parsed = planner::parse(&req)?;

    let store: Arc<dyn Store> = Arc::new(
        FilesystemStore::open(&store_dir).await.with_context(|| format!("opening the store {}", store_dir.display()))?,
    );
    let farm = EmbeddedFarm::start(&state_dir, &worker_dir, store.clone(), runtime, &program, &args.docker.entitlements()?).await?;
    let built = build_on(&farm, &args, &req, &parsed, secrets, &ssh, store.clone(), &mut progress).await;
    farm.stop().await?;
    let result = built?;

    let image = assemble::assemble_all(&*store, &result.0, &result.1, &args.tags, &client_dir.join("out")).await?;
    let notes = assemble::write_outputs(&image, &outputs, &args.tags, &args.docker.insecure).await?;
    crate::build_result::write_files_for(&args.docker, &image, &args.tags)?;
    progress.summary(result.0.steps.len(), true);
    for n in notes {
        progress.note(&format!(" => {n}"));
    }
    progress.note(&format!(" => writing image {}", image.manifest.digest));
    progress.warnings(&result.0.checks);
    println!("{}", image.manifest.digest);
    Ok(())
}

/// Plans (bases and context into the store), submits to the in-process
/// coordinator and follows the build, as `rbk submit` does.
#[allow(clippy::too_many_arguments)]
async fn build_on(
    farm: &EmbeddedFarm,
    args: &BuildArgs,
    req: &PlanRequest,
    parsed: &planner::Parsed,
    secrets: BTreeMap<String, Vec<u8>>,
    ssh: &rbk_client::ssh_agents::SshAgents,
    store: Arc<dyn Store>,
    progress: &mut Progress,
) -> anyhow::Result<(Plan, HashMap<String, FarmResult>)> {
    let plan = match parsed.plan(req, store).await {
        Ok(p) => p,
        Err(e) => {
            // `check=error=true`: the warnings, then the error naming them.
            if let Some(checks) = e.checks() {
                progress.warnings(checks);
            }
            return Err(e.into());
        }
    };
    progress.set_total(plan.steps.len());
    progress.bases(plan.steps.len(), &plan.from_lines, plan.resolve_took);
    if plan.steps.is_empty() {
        // Nothing to run: the target is a base image with a new config.
        return Ok((plan, HashMap::new()));
    }
    let submit = args.docker.submit_request(&plan, req, secrets, vec![]);
    let channel = Endpoint::from_shared(farm.url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to the embedded coordinator at {}", farm.url))?;
    let tls = rbk_client::ClientTls::default();
    let to = rbk_client::submit::Target { tls: &tls, url: &farm.url, token: &farm.token };
    let result = match rbk_client::submit::run_build(channel, to, submit, &plan.target_steps(), progress, false, ssh).await {
        Ok(r) => r,
        Err(e) => {
            // buildx lists the warnings of a failed build too.
            progress.warnings(&plan.checks);
            return Err(e.into());
        }
    };
    Ok((plan, result))
}
