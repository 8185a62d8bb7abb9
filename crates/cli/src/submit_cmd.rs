//! `rbk submit`: build a Dockerfile on the farm, with `docker build`'s
//! flags. Plans locally (`rbk_plan::planner`: syntax errors name the
//! file and line before anything is sent; base layers and the context go
//! into the store through the coordinator's Content service), submits the
//! graph, prints BuildKit-style progress from the event stream, then
//! assembles the image from the target's result
//! (`rbk_plan::assemble`) and writes the outputs. Ctrl-C cancels the
//! build on the coordinator.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rbk_worker::payload::{FarmResult, ImageSource};
use rbk_plan::assemble::{self, FarmOutput};
use rbk_plan::planner::{self, Plan};
use rbk_plan::{Progress, ProgressMode};
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::build_event::Event;
use rbk_proto::build::{BuildOptions, CancelRequest, Output, SubmitRequest};
use rbk_store::Store;
use tonic::transport::Channel;

/// Log lines kept per step for the failure report.
const TAIL_LINES: usize = 20;

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name of the image (repeatable): the tags pushed by --push and
    /// written into docker/oci archives.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    target: Option<String>,
    /// id=ID,src=FILE or id=ID,env=VAR: made available to
    /// `RUN --mount=type=secret,id=ID`; never stored or logged.
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// default|ID[=SOCKET]: forward an SSH agent (default
    /// `$SSH_AUTH_SOCK`) to `RUN --mount=type=ssh` steps; the agent stays
    /// on this machine and is reachable only while the build runs.
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Only this machine's platform is supported (e.g. linux/amd64).
    #[arg(long)]
    platform: Option<String>,
    /// Run every step; cache mounts keep their contents.
    #[arg(long)]
    no_cache: bool,
    /// auto, plain (full logs), tty (same as auto) or quiet.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// type=oci|docker,dest=FILE, type=local,dest=DIR, type=registry (repeatable).
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Push the image under every -t tag (type=registry).
    #[arg(long)]
    push: bool,
    /// Load the image into docker (`docker load`).
    #[arg(long)]
    load: bool,
    /// The coordinator, e.g. http://127.0.0.1:7070; for a replicated one,
    /// every node's URL, comma-separated, so the build is followed to a new
    /// leader when the current one dies (see submit_reattach.rs).
    #[arg(long, env = "RBK_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    coordinator: String,
    /// The tenant token.
    #[arg(long, env = "RBK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust for an https:// coordinator,
    /// besides the system roots (a private or self-signed certificate).
    #[arg(long, env = "RBK_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// NAME=DIR[:REF]: `FROM NAME` loads this OCI layout instead of pulling.
    #[arg(long = "base-image")]
    base_images: Vec<String>,
    /// Registries reached over plain HTTP (loopback always is).
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// Client scratch space: pulled base images (kept between submits),
    /// the staged context and the assembled image.
    #[arg(long, env = "RBK_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
    /// The build context directory.
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

/// What a step did, as the event stream told it.
#[derive(Default)]
struct StepState {
    started: Option<Instant>,
    worker: String,
    tail: Vec<String>,
}

/// How long to look for a leader (an election takes about a second).
const LEADER_PATIENCE: Duration = Duration::from_secs(30);

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let mode: ProgressMode = args.progress.parse().map_err(anyhow::Error::msg)?;
    let platform = rbk_worker::payload::current_platform();
    if let Some(p) = &args.platform
        && p != &platform
    {
        bail!("--platform {p}: the farm builds only for this machine's platform ({platform}) so far");
    }
    let ssh = crate::ssh_agents::SshAgents::parse(&args.ssh)?;
    let mut outputs = Vec::new();
    for o in &args.outputs {
        outputs.push(FarmOutput::parse(o)?);
    }
    if args.push {
        outputs.push(FarmOutput::Registry { names: vec![] });
    }
    if args.load {
        outputs.push(FarmOutput::Load);
    }
    let secrets = planner::load_secrets(&args.secrets)?;

    let work_dir = client_dir(&args);
    let mut req = crate::build_cmd::plan_request(
        &args.context,
        &work_dir,
        crate::build_cmd::PlanFlags { file: &args.file, target: &args.target, build_args: &args.build_args, insecure: &args.insecure, base_images: &args.base_images },
        &secrets,
    )?;
    req.ssh_ids = ssh.ids();
    // The clock starts here, as BuildKit's does: planning (pulling bases,
    // uploading the context) is part of the build.
    let mut progress = Progress::stderr(mode);
    // Before any connection: a Dockerfile error is the user's to fix first.
    let parsed = planner::parse(&req)?;

    let token = args.token.clone().filter(|t| !t.is_empty()).context("no token: pass --token or set RBK_TOKEN")?;
    rbk_coordinator::client_tls::trust_ca(args.tls_ca.as_deref())?;
    // Any node of a Raft group will do: a follower names the leader, and
    // the build goes there (the same blob store is behind every node).
    let (channel, _leader) = crate::submit_reattach::connect_any(&args.coordinator, &token, LEADER_PATIENCE)
        .await
        .with_context(|| format!("connecting to the coordinator at {}", args.coordinator))?;
    let store: Arc<dyn Store> = Arc::new(rbk_coordinator::RemoteStore::new(channel.clone(), &args.coordinator, &token)?);

    let t0 = Instant::now();
    let plan = parsed.plan(&req, store.clone()).await?;
    let u = plan.uploads;
    progress.note(&format!(
        " => [internal] bases and context: {} base layers ({} sent, {}), {} context files ({} sent)  {:.1}s",
        u.base_layers,
        u.base_layers_sent,
        human(u.base_bytes_sent),
        u.context_files,
        human(u.context_bytes_sent),
        t0.elapsed().as_secs_f64()
    ));
    progress.set_total(plan.steps.len());
    progress.bases(plan.steps.len(), &plan.from_lines, plan.resolve_took);

    let result = if plan.steps.is_empty() {
        // Nothing to run: the target is a base image with a new config.
        None
    } else {
        let options = BuildOptions {
            dockerfile: plan.file_name.clone(),
            target: args.target.clone().unwrap_or_default(),
            build_args: req.build_args.clone().into_iter().collect(),
            secret_ids: secrets.keys().cloned().collect(),
            no_cache: args.no_cache,
            platform: platform.clone(),
            outputs: args.outputs.iter().map(|o| Output { r#type: o.clone(), attrs: Default::default() }).collect(),
        };
        let submit = SubmitRequest {
            options: Some(options),
            context_digest: plan.context_digest.clone(),
            steps: plan.steps.clone(),
            secrets: secrets.into_iter().collect(),
        };
        run_build(channel, &args.coordinator, &token, &plan, submit, &progress, true, &ssh).await?
    };

    let layout_dir = work_dir.join("out");
    // The node the build started on may be gone (a leader change): the
    // image's blobs are read through whichever node leads now.
    let store = match crate::submit_reattach::connect_any(&args.coordinator, &token, LEADER_PATIENCE).await {
        Ok((channel, _)) => Arc::new(rbk_coordinator::RemoteStore::new(channel, &args.coordinator, &token)?),
        Err(_) => store,
    };
    let image = assemble::assemble(&*store, &plan.final_image, result.as_ref(), &args.tags, &layout_dir).await?;
    let notes = assemble::write_outputs(&image, &outputs, &args.tags, &args.insecure).await?;
    progress.summary(plan.steps.len(), true);
    for n in notes {
        progress.note(&format!(" => {n}"));
    }
    progress.note(&format!(" => writing image {}", image.manifest.digest));
    println!("{}", image.manifest.digest);
    Ok(())
}

pub(crate) fn authorized<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().context("the token has characters a header cannot carry")?);
    Ok(r)
}

pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let (mut v, mut u) = (bytes as f64, 0);
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

/// Submits and follows the build; returns the target node's result.
/// `name_workers`: say which worker ran or failed a step (`rbk build` has
/// only one). `ssh`: agents served to the build's steps while it runs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_build(
    channel: Channel,
    url: &str,
    token: &str,
    plan: &Plan,
    submit: SubmitRequest,
    progress: &Progress,
    name_workers: bool,
    ssh: &crate::ssh_agents::SshAgents,
) -> anyhow::Result<Option<FarmResult>> {
    let mut client = BuildClient::new(channel.clone());
    let mut _agents = None;
    // Re-supplied to a new leader if this one dies mid-build.
    let secrets: BTreeMap<String, Vec<u8>> = submit.secrets.clone().into_iter().collect();
    let mut seen = rbk_coordinator::build_events::Replayer::default();
    let mut stream = client
        .submit(authorized(submit, token)?)
        .await
        .map_err(|s| anyhow::anyhow!("{url}: the build was refused: {}", s.message()))?
        .into_inner();
    let index: HashMap<&str, (usize, &str)> =
        plan.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), (i + 1, s.name.as_str()))).collect();
    let lookup = |id: &str| index.get(id).copied().unwrap_or((0, "?"));
    let mut steps: BTreeMap<String, StepState> = BTreeMap::new();
    let mut results: HashMap<String, FarmResult> = HashMap::new();
    let mut build_id = String::new();
    let mut done = 0;
    let mut failure: Option<String> = None;
    let mut cancelled = false;
    let parse_result = |id: &str, config: &[u8]| -> anyhow::Result<FarmResult> {
        serde_json::from_slice(config).with_context(|| format!("step {id}: the result the worker reported is not a farm result"))
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let ev = tokio::select! {
            ev = stream.message() => match ev {
                Ok(ev) => ev,
                // The leader died (or stepped down): follow the build to
                // the new one.
                Err(s) if !build_id.is_empty() && s.code() != tonic::Code::Unauthenticated => {
                    progress.note(&format!(" => the coordinator's event stream broke ({}); following build {build_id} to the new leader", s.message()));
                    let channel;
                    (channel, client, stream) = tokio::select! {
                        found = crate::submit_reattach::watch_again(url, token, &build_id, &secrets, s.message()) => found?,
                        // No leader to ask for a cancel: say so and leave.
                        _ = &mut ctrl_c => bail!("interrupted while following build {build_id} to a new leader; it was not cancelled"),
                    };
                    // The agents are relayed through the leader: serve
                    // them to the new one (the old relay died with its
                    // leader).
                    if !ssh.is_empty() {
                        _agents = Some(ssh.serve(channel, token, &build_id)?);
                    }
                    continue;
                }
                Err(s) => bail!("{url}: the build's event stream broke: {}", s.message()),
            },
            _ = &mut ctrl_c, if !build_id.is_empty() => {
                if cancelled {
                    // A second Ctrl-C: stop waiting for the coordinator.
                    bail!("interrupted; build {build_id} was asked to cancel");
                }
                cancelled = true;
                ctrl_c.set(tokio::signal::ctrl_c());
                progress.note(&format!(" => cancelling build {build_id}"));
                client
                    .cancel(authorized(CancelRequest { build_id: build_id.clone() }, token)?)
                    .await
                    .map_err(|s| anyhow::anyhow!("{url}: cancel: {}", s.message()))?;
                continue;
            }
        };
        let Some(ev) = ev.and_then(|e| e.event) else {
            bail!("{url}: the event stream ended before the build finished");
        };
        // Events a re-attached stream replays were printed already.
        if !seen.admit(&rbk_proto::build::BuildEvent { event: Some(ev.clone()) }) {
            continue;
        }
        match ev {
            Event::Accepted(a) => {
                build_id = a.build_id;
                if !ssh.is_empty() {
                    _agents = Some(ssh.serve(channel.clone(), token, &build_id)?);
                }
            }
            Event::Started(s) => {
                let (n, label) = lookup(&s.step_id);
                let st = steps.entry(s.step_id.clone()).or_default();
                st.started = Some(Instant::now());
                st.worker = s.worker_id.clone();
                let retry = if s.attempt > 1 { format!(" (attempt {})", s.attempt) } else { String::new() };
                let on = if name_workers { format!(" on {}", s.worker_id) } else { String::new() };
                progress.started(n, &format!("{label}{on}{retry}"));
            }
            Event::Log(l) => {
                let (n, _) = lookup(&l.step_id);
                progress.log(n, &l.line);
                let st = steps.entry(l.step_id).or_default();
                st.tail.push(l.line);
                if st.tail.len() > TAIL_LINES {
                    st.tail.remove(0);
                }
            }
            Event::Cached(c) => {
                let (n, label) = lookup(&c.step_id);
                progress.cached(n, label);
                done += 1;
                results.insert(c.step_id.clone(), parse_result(&c.step_id, &c.config)?);
            }
            Event::Finished(f) => {
                let (n, label) = lookup(&f.step_id);
                let mut note = if name_workers { format!(" on {}", f.worker_id) } else { String::new() };
                if f.bytes_restored > 0 {
                    note.push_str(&format!(" (cache: {} restored)", human(f.bytes_restored)));
                }
                progress.done(n, label, Duration::from_millis(f.duration_ms), &note);
                done += 1;
                results.insert(f.step_id.clone(), parse_result(&f.step_id, &f.config)?);
            }
            Event::Failed(f) => {
                let (n, label) = lookup(&f.step_id);
                let tail = steps.get(&f.step_id).map(|s| s.tail.clone()).unwrap_or_default();
                progress.failed(n, label, &tail);
                let node = plan.steps.iter().find(|s| s.id == f.step_id);
                let place = node
                    .and_then(|n| planner::payload_of(n).ok())
                    .map(|p| format!(" ({}:{})", p.file, p.line))
                    .unwrap_or_default();
                let worker = if f.worker_id.is_empty() || !name_workers { String::new() } else { format!(" on {}", f.worker_id) };
                let why = if f.exit_code != 0 { format!("exit code {}", f.exit_code) } else { f.message.clone() };
                failure.get_or_insert(format!("{label}{place} failed{worker}: {why}"));
            }
            Event::BuildFinished(b) => {
                if b.state == "succeeded" {
                    break;
                }
                progress.summary(done, false);
                let why = failure.unwrap_or_else(|| format!("build {}: {}", b.state, b.message));
                bail!("{why}");
            }
        }
    }
    match &plan.final_image.source {
        ImageSource::Step { step_id } => Ok(Some(
            results.remove(step_id).with_context(|| format!("the build finished without a result for the target's step {step_id}"))?,
        )),
        _ => Ok(None),
    }
}
