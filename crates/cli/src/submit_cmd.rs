//! `rbk submit`: build a Dockerfile on the farm, with `docker build`'s
//! flags. Plans locally (`rbk_plan::planner`: syntax errors name the
//! file and line before anything is sent; base layers and the context go
//! into the store through the coordinator's Content service), submits the
//! graph and follows it (`rbk_client::submit`: BuildKit-style progress
//! from the event stream, re-attach after a failover), then assembles the
//! image from the target's result
//! (`rbk_plan::assemble`) and writes the outputs. Ctrl-C cancels the
//! build on the coordinator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rbk_client::submit::{Target, human, run_build};
use rbk_client::{Progress, ProgressMode, RemoteStore};
use rbk_plan::assemble::{self, FarmOutput};
use rbk_plan::planner;
use rbk_proto::build::Output;
use rbk_store::Store;

use crate::farm_images::SubmitImages;
use crate::flags::{CoordinatorConn, DockerBuildFlags, OutputFlags};
use rbk_client::images::FarmImages;

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Name of the image (repeatable): the tags pushed by --push and
    /// written into docker/oci archives.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// default|ID[=SOCKET]: forward an SSH agent (default
    /// `$SSH_AUTH_SOCK`) to `RUN --mount=type=ssh` steps; the agent stays
    /// on this machine and is reachable only while the build runs.
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    #[command(flatten)]
    out: OutputFlags,
    /// Pull FROM images and push results from this machine (uploading
    /// base layers to the farm and downloading the image from it) instead
    /// of letting the farm pull and push.
    #[arg(long)]
    client_registry_access: bool,
    /// How long to keep trying when no coordinator URL accepts a
    /// connection (e.g. 30s, while one starts); by default a refused
    /// address fails at once.
    #[arg(long, env = "RBK_CONNECT_RETRY", default_value = "0s", value_parser = crate::cache_cmd::parse_duration)]
    connect_retry: Duration,
    #[command(flatten)]
    conn: CoordinatorConn,
    /// Client scratch space: pulled base images (kept between submits),
    /// the staged context and the assembled image.
    #[arg(long, env = "RBK_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
    #[command(flatten)]
    docker: DockerBuildFlags,
    /// The build context: a directory, a git URL (`URL#REF:SUBDIR`), an
    /// http(s) URL of a tar archive or Dockerfile, or `-` (stdin).
    context: PathBuf,
}

fn client_dir(args: &SubmitArgs) -> PathBuf {
    if let Some(d) = &args.client_dir {
        return d.clone();
    }
    match std::env::var_os("XDG_CACHE_HOME").or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").into())) {
        Some(c) => PathBuf::from(c).join("rbk/client"),
        None => std::env::temp_dir().join("rbk-client"),
    }
}

/// How long to look for a leader (an election takes about a second).
const LEADER_PATIENCE: Duration = Duration::from_secs(30);

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let mode: ProgressMode = args.docker.progress_mode()?;
    let ssh = rbk_client::ssh_agents::SshAgents::parse(&args.ssh)?;
    let outputs = args.out.parse()?;
    let secrets = planner::load_secrets(&args.docker.secrets)?;

    let work_dir = client_dir(&args);
    // The clock starts here, as BuildKit's does: fetching a remote
    // context and planning (pulling bases, uploading the context) are part
    // of the build.
    let mut progress = Progress::stderr(mode);
    let (mut req, _inputs) = args.docker.prepare(&args.context, &work_dir, &secrets, &progress).await?;
    req.ssh_ids = ssh.ids();
    // Before any connection: a Dockerfile error is the user's to fix first.
    let parsed = planner::parse(&req)?;

    let token = args.conn.token()?.to_owned();
    let tls = args.conn.tls.load()?;
    // Nothing listening there is the user's to fix, not an election to
    // wait out.
    rbk_client::reattach::reachable_any(&tls, &args.conn.coordinator, args.connect_retry).await?;
    // Any node of a Raft group will do: a follower names the leader, and
    // the build goes there (the same blob store is behind every node).
    let (channel, _leader) = rbk_client::reattach::connect_any(&tls, &args.conn.coordinator, &token, LEADER_PATIENCE)
        .await
        .with_context(|| format!("connecting to the coordinator at {}", args.conn.coordinator))?;
    let store: Arc<dyn Store> = Arc::new(RemoteStore::new(channel.clone(), &args.conn.coordinator, &token)?);
    let images = Arc::new(SubmitImages::new(FarmImages::new(channel.clone(), &args.conn.coordinator, &token), &args.docker.insecure)?);
    if !args.client_registry_access {
        req.farm = Some(images.clone());
    }

    let t0 = Instant::now();
    let plan = match parsed.plan(&req, store.clone()).await {
        Ok(p) => p,
        Err(e) => {
            // `check=error=true`: the warnings, then the error naming them.
            if let Some(checks) = e.checks() {
                progress.warnings(checks);
            }
            return Err(e.into());
        }
    };
    let u = plan.uploads;
    progress.note(&format!(
        " => [internal] bases and context: {} base layers ({} sent, {}; {} pulled by the farm, {}), {} context files ({} sent)  {:.1}s",
        u.base_layers,
        u.base_layers_sent,
        human(u.base_bytes_sent),
        u.farm_layers_pulled,
        human(u.farm_bytes_pulled),
        u.context_files,
        human(u.context_bytes_sent),
        t0.elapsed().as_secs_f64()
    ));
    progress.set_total(plan.steps.len());
    progress.bases(plan.steps.len(), &plan.from_lines, plan.resolve_took);

    let results = if plan.steps.is_empty() {
        // Nothing to run: the target is a base image with a new config.
        Default::default()
    } else {
        let outputs = args.out.outputs.iter().map(|o| Output { r#type: o.clone(), attrs: Default::default() }).collect();
        let submit = args.docker.submit_request(&plan, &req, secrets, outputs);
        let to = Target { tls: &tls, url: &args.conn.coordinator, token: &token };
        match run_build(channel, to, submit, &plan.target_steps(), &progress, true, &ssh).await {
            Ok(r) => r,
            Err(e) => {
                // buildx lists the warnings of a failed build too.
                progress.warnings(&plan.checks);
                return Err(e.into());
            }
        }
    };

    // Registry outputs of one platform's image are pushed by the farm from
    // its store; only local outputs (oci, docker, local, --load) download
    // the image. A multi-platform image index is assembled here and pushed
    // from this machine (the farm's push takes one image manifest).
    let farm_pushes = !args.client_registry_access && plan.images.len() == 1;
    let (pushed_by_farm, local): (Vec<FarmOutput>, Vec<FarmOutput>) =
        outputs.into_iter().partition(|o| matches!(o, FarmOutput::Registry { .. }) && farm_pushes);
    let mut notes = Vec::new();
    // One platform: the image is described from the step's result without
    // reading a blob (its manifest and config digests are final).
    let mut described_image = None;
    if let [only] = plan.images.as_slice() {
        let result = only.final_image.target_step().and_then(|id| results.get(id));
        let (mut described, layers) = assemble::describe(&only.final_image, result)?;
        for out in &pushed_by_farm {
            let FarmOutput::Registry { names } = out else { continue };
            let names = if names.is_empty() { &args.tags } else { names };
            if names.is_empty() {
                return Err(rbk_plan::BuildError::PushWithoutName.into());
            }
            let pushed = images.push(&mut described, &layers, names).await?;
            for name in names {
                notes.push(format!("pushing {name} ({}) from the farm: {} blobs sent, {} there already", pushed.digest, pushed.blobs_uploaded, pushed.blobs_skipped));
            }
        }
        let (_, _, manifest) = described.encode();
        described_image = Some((manifest, described.manifest.config.digest.to_string()));
    }
    let mut assembled = None;
    if !local.is_empty() || described_image.is_none() {
        let layout_dir = work_dir.join("out");
        // The node the build started on may be gone (a leader change): the
        // image's blobs are read through whichever node leads now.
        let store = match rbk_client::reattach::connect_any(&tls, &args.conn.coordinator, &token, LEADER_PATIENCE).await {
            Ok((channel, _)) => Arc::new(RemoteStore::new(channel, &args.conn.coordinator, &token)?),
            Err(_) => store,
        };
        let t0 = Instant::now();
        let mut fetched = |done: u64, total: u64| {
            progress.note(&format!(" => [internal] downloading the image for local outputs: {} / {}  {:.1}s", human(done), human(total), t0.elapsed().as_secs_f64()));
        };
        let image = assemble::assemble_all_reporting(&*store, &plan, &results, &args.tags, &layout_dir, &mut fetched).await?;
        notes.extend(assemble::write_outputs(&image, &local, &args.tags, &args.docker.insecure).await?);
        assembled = Some(image);
    }
    let digest = match (&described_image, &assembled) {
        (Some((manifest, config)), _) => {
            crate::build_result::write_files(&args.docker, manifest, Some(config), &args.tags)?;
            manifest.digest.to_string()
        }
        (None, Some(image)) => {
            crate::build_result::write_files_for(&args.docker, image, &args.tags)?;
            image.manifest.digest.to_string()
        }
        (None, None) => unreachable!("an image that is not described is assembled"),
    };
    progress.summary(plan.steps.len(), true);
    for n in notes {
        progress.note(&format!(" => {n}"));
    }
    progress.note(&format!(" => writing image {digest}"));
    progress.warnings(&plan.checks);
    println!("{digest}");
    Ok(())
}

