//! The flag groups several commands share, declared once and flattened
//! into each command's arguments (`#[command(flatten)]`), so a flag means
//! the same thing, with the same help, everywhere.
//!
//! - [`DockerBuildFlags`]: the `docker build` flags `rbk build` and
//!   `rbk submit` read the same way (Dockerfile, build args, target,
//!   secrets, cache, progress, base images, registries, and buildx's
//!   `--label`, `--iidfile`, `--metadata-file`, `--network`, `--add-host`,
//!   `--shm-size`, `--ulimit`, `--build-context`; `--cache-from/-to` and
//!   attestations accepted with a warning). `-t`, `-o` and
//!   `--ssh` stay with each command: what they accept differs.
//! - [`OutputFlags`]: `-o`/`--output`, `--push` and `--load`, where the
//!   image goes, for `rbk build` and `rbk submit` alike.
//! - [`CoordinatorConn`]: `--coordinator`, `--token` and `--tls-ca`, how
//!   a client (`rbk submit`, `rbk cache`) reaches a coordinator as a tenant.
//! - [`TlsCaFlag`]: `--tls-ca`, for every command that connects to a
//!   coordinator (the client commands above and `rbk worker`, whose
//!   `--coordinator` and `--token` are its own: one URL and a worker-pool
//!   token, `RBK_WORKER_TOKEN`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rbk_client::ProgressMode;
use rbk_plan::assemble::FarmOutput;
use rbk_plan::planner::{Plan, PlanRequest};
use rbk_plan::run_defaults::RunDefaults;

use crate::context_source::BuildSource;
use crate::named_contexts::NamedContexts;
use rbk_proto::build::{BuildOptions, Output, SubmitRequest};

#[derive(clap::Args)]
pub struct DockerBuildFlags {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// os/arch[/variant] to build for, comma-separated or repeated
    /// (`linux/amd64,linux/arm64`): several make one image index. Default:
    /// this machine's. Other platforms run on workers of that platform, or
    /// through QEMU emulation (docs/user-guide.md).
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// id=ID,src=FILE or id=ID,env=VAR: made available to
    /// `RUN --mount=type=secret,id=ID`; never stored or logged.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Run every step; cache mounts keep their contents.
    #[arg(long)]
    pub no_cache: bool,
    /// auto, plain (full logs), tty (same as auto) or quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// NAME=DIR[:REF]: `FROM NAME` loads this OCI layout instead of pulling.
    #[arg(long = "base-image")]
    pub base_images: Vec<String>,
    /// Registries reached over plain HTTP (loopback always is).
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// Extra privileged entitlement: network.host or security.insecure
    /// (repeat or comma-separate, as `docker buildx build --allow`). A
    /// worker pool must allow it too; `rbk build` allows what you pass.
    #[arg(long = "allow", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// KEY=VALUE: a label on the image's config, over the Dockerfile's
    /// LABELs (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Write the image ID (its config's digest, as docker names images) to
    /// FILE.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build's result to FILE as JSON, with BuildKit's keys
    /// (`containerimage.digest`, `containerimage.config.digest`,
    /// `containerimage.descriptor`, `image.name`).
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// default|none|host: the network of RUN steps that do not name one
    /// (`host` needs the network.host entitlement; it implies --allow
    /// network.host, and the worker pool must allow it).
    #[arg(long, default_value = "default")]
    pub network: String,
    /// HOST:IP: a line of every RUN step's /etc/hosts (repeatable or
    /// comma-separated).
    #[arg(long = "add-host", value_delimiter = ',', value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Size of /dev/shm in RUN steps (e.g. 128m; default 64m).
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// NAME=SOFT[:HARD]: an rlimit of RUN steps, e.g. nofile=1024:2048
    /// (repeatable; capped by the worker's own hard limits).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Accepted for docker buildx compatibility: provenance attestations
    /// are not supported yet (a note says so unless false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "VALUE")]
    pub provenance: Option<String>,
    /// Accepted for docker buildx compatibility: SBOM attestations are not
    /// supported yet (a note says so unless false).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "VALUE")]
    pub sbom: Option<String>,
    /// Accepted for docker buildx compatibility: attestations are not
    /// supported yet (a note says so).
    #[arg(long = "attest", value_name = "type=TYPE,...")]
    pub attest: Vec<String>,
    /// Accepted and ignored, with a warning: rbk's cache is the farm's,
    /// shared by every build.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Accepted and ignored, with a warning (see --cache-from).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Print nothing but the image digest (stdout) and errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Accepted: every build already resolves its base images' tags again.
    #[arg(long)]
    pub pull: bool,
    /// NAME=DIR | NAME=docker-image://REF | NAME=oci-layout://DIR[:TAG] |
    /// NAME=GIT_URL: a named context, usable as `FROM NAME` (repeatable).
    #[arg(long = "build-context", value_name = "NAME=SOURCE")]
    pub build_contexts: Vec<String>,
}

/// What a build reads besides the plan request, kept in place until it
/// ends: a remote or stdin context, git checkouts of named contexts.
pub struct BuildInputs {
    _source: BuildSource,
    _named: NamedContexts,
}

impl DockerBuildFlags {
    /// The plan request for `context` (a directory, a git or http(s) URL,
    /// or `-`) with `-f` (maybe `-`) and the named contexts resolved;
    /// prints the notes of flags accepted but not acted on.
    pub async fn prepare<V>(
        &self,
        context: &Path,
        work_dir: &Path,
        secrets: &BTreeMap<String, V>,
        progress: &rbk_client::Progress,
    ) -> anyhow::Result<(PlanRequest, BuildInputs)> {
        for n in self.notes() {
            progress.note(&n);
        }
        let source = crate::context_source::resolve(context, self.file.as_deref(), work_dir).await?;
        let mut req = self.plan_request(&source.context, work_dir, secrets)?;
        req.dockerfile = source.dockerfile.clone();
        let named = crate::named_contexts::resolve(&self.build_contexts, work_dir, &mut req.base_images)?;
        Ok((req, BuildInputs { _source: source, _named: named }))
    }

    /// What to plan: one place for both commands, so they read a
    /// Dockerfile the same way.
    pub fn plan_request<V>(&self, context: &Path, work_dir: &Path, secrets: &BTreeMap<String, V>) -> anyhow::Result<PlanRequest> {
        let mut req = PlanRequest::new(context, work_dir);
        req.dockerfile = self.file.clone();
        req.target = self.target.clone();
        req.platforms = rbk_plan::platforms::parse_platforms(&self.platforms)?;
        req.build_args = parse_build_args(&self.build_args);
        req.insecure_registries = self.insecure.clone();
        req.secret_ids = secrets.keys().cloned().collect();
        req.allow = self.entitlements()?.into_iter().collect();
        req.run_defaults = self.run_defaults()?;
        req.labels = parse_labels(&self.labels)?;
        for b in &self.base_images {
            let (name, dir) = b.split_once('=').with_context(|| format!("--base-image {b}: expected NAME=DIR[:REF]"))?;
            req.base_images.insert(name.to_owned(), dir.to_owned());
        }
        Ok(req)
    }

    /// `--allow`, parsed; `--network=host` adds network.host (as buildx
    /// does: the worker pool must still allow it).
    pub fn entitlements(&self) -> anyhow::Result<Vec<rbk_worker::Entitlement>> {
        let mut out: Vec<rbk_worker::Entitlement> =
            self.allow.iter().map(|a| a.trim().parse().with_context(|| format!("--allow {a}"))).collect::<anyhow::Result<_>>()?;
        if self.network_mode()? == Some(rbk_worker::Network::Host) && !out.contains(&rbk_worker::Entitlement::NetworkHost) {
            out.push(rbk_worker::Entitlement::NetworkHost);
        }
        Ok(out)
    }

    /// `--network`: `None` for default.
    fn network_mode(&self) -> anyhow::Result<Option<rbk_worker::Network>> {
        match self.network.as_str() {
            "default" | "" => Ok(None),
            "none" => Ok(Some(rbk_worker::Network::None)),
            "host" => Ok(Some(rbk_worker::Network::Host)),
            n => bail!("--network {n}: expected default, none or host"),
        }
    }

    /// `--network`, `--add-host`, `--shm-size`, `--ulimit`, parsed.
    pub fn run_defaults(&self) -> anyhow::Result<RunDefaults> {
        let mut container = rbk_worker::ContainerOptions::default();
        for h in &self.add_hosts {
            container.extra_hosts.push(rbk_worker::HostEntry::parse(h).map_err(anyhow::Error::msg)?);
        }
        if container.extra_hosts.len() > rbk_worker::container_options::MAX_EXTRA_HOSTS {
            bail!("--add-host: {} entries; at most {}", container.extra_hosts.len(), rbk_worker::container_options::MAX_EXTRA_HOSTS);
        }
        if let Some(s) = &self.shm_size {
            let bytes = rbk_plan::mapping::parse_size(s).with_context(|| format!("--shm-size {s}: expected a size such as 128m"))?;
            if bytes == 0 {
                bail!("--shm-size {s}: must be more than 0");
            }
            container.shm_size_bytes = Some(bytes);
        }
        for u in &self.ulimits {
            container.ulimits.push(rbk_worker::Ulimit::parse(u).map_err(anyhow::Error::msg)?);
        }
        Ok(RunDefaults { network: self.network_mode()?, container })
    }

    /// The progress mode: `--quiet` wins over `--progress`.
    pub fn progress_mode(&self) -> anyhow::Result<ProgressMode> {
        if self.quiet {
            return Ok(ProgressMode::Quiet);
        }
        self.progress.parse().map_err(anyhow::Error::msg)
    }

    /// What the build accepts but does not do, said once each before it
    /// starts: `--cache-from`/`--cache-to` and attestations.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.cache_from.is_empty() || !self.cache_to.is_empty() {
            out.push(
                "WARNING: --cache-from/--cache-to are ignored: rbk's cache is the farm's, shared by every build (layers and cache mounts), so there is nothing to import or export"
                    .to_owned(),
            );
        }
        let off = |v: &Option<String>| v.as_deref().is_none_or(|v| matches!(v.trim(), "false" | "0" | "disabled=true"));
        let mut attest: Vec<&str> = Vec::new();
        if !off(&self.provenance) {
            attest.push("--provenance");
        }
        if !off(&self.sbom) {
            attest.push("--sbom");
        }
        if !self.attest.is_empty() {
            attest.push("--attest");
        }
        if !attest.is_empty() {
            out.push(format!("WARNING: {}: attestations (SLSA provenance, SBOM) are not supported by rbk yet; the image is built without them", attest.join(", ")));
        }
        out
    }
}

/// `--label KEY=VALUE` (a bare KEY is an empty label, as docker).
fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("--label {l}: expected KEY=VALUE");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

impl DockerBuildFlags {
    /// The request that submits `plan`: the flags' options (target,
    /// `--no-cache`), `req`'s build args and the secrets' values, for the
    /// plan's platforms, writing `outputs` (the coordinator's exporters).
    pub fn submit_request(&self, plan: &Plan, req: &PlanRequest, secrets: BTreeMap<String, Vec<u8>>, outputs: Vec<Output>) -> SubmitRequest {
        let platform = plan.images.iter().map(|i| i.platform.as_str()).collect::<Vec<_>>().join(",");
        let options = BuildOptions {
            dockerfile: plan.file_name.clone(),
            target: self.target.clone().unwrap_or_default(),
            build_args: req.build_args.clone().into_iter().collect(),
            secret_ids: secrets.keys().cloned().collect(),
            no_cache: self.no_cache,
            platform,
            outputs,
        };
        SubmitRequest {
            options: Some(options),
            context_digest: plan.context_digest.clone(),
            steps: plan.steps.clone(),
            secrets: secrets.into_iter().collect(),
        }
    }
}

/// Where the image goes, as buildx reads it: the same flags in `rbk build`
/// and `rbk submit`.
#[derive(clap::Args)]
pub struct OutputFlags {
    /// type=oci|docker|tar,dest=FILE; type=local,dest=DIR (or just DIR);
    /// type=image,name=REF[,push=true]; type=registry[,name=REF];
    /// type=docker without dest loads into docker. Image outputs take
    /// compression=gzip|zstd|uncompressed[,compression-level=N]
    /// [,force-compression=true]. Repeatable.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Shorthand for --output=type=registry: push under every -t tag.
    #[arg(long)]
    pub push: bool,
    /// Shorthand for --output=type=docker: `docker load` the image.
    #[arg(long)]
    pub load: bool,
}

impl OutputFlags {
    /// Every output the flags ask for, in order (`--push`, `--load` last).
    pub fn parse(&self) -> anyhow::Result<Vec<FarmOutput>> {
        let mut outputs = Vec::new();
        for o in &self.outputs {
            outputs.push(FarmOutput::parse(o)?);
        }
        if self.push {
            outputs.push(FarmOutput::Registry { names: vec![] });
        }
        if self.load {
            outputs.push(FarmOutput::Load);
        }
        Ok(outputs)
    }
}

/// How a client reaches a coordinator as a tenant: the same flags, help
/// and environment variables in every command that does. Global, so
/// `rbk cache` takes them after a subcommand.
#[derive(clap::Args)]
pub struct CoordinatorConn {
    /// The coordinator, e.g. http://127.0.0.1:7070; for a replicated one,
    /// every node's URL, comma-separated (`rbk submit` follows the build
    /// to a new leader when the current one dies).
    #[arg(long, env = "RBK_COORDINATOR", global = true, default_value = "http://127.0.0.1:7070")]
    pub coordinator: String,
    /// The tenant token.
    #[arg(long, env = "RBK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsCaFlag,
}

impl CoordinatorConn {
    /// The tenant token, which every call needs.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.token.as_deref().filter(|t| !t.is_empty()).context("no token: pass --token or set RBK_TOKEN")
    }

    /// `msg` carrying the token as its bearer credential.
    pub fn request<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut req = tonic::Request::new(msg);
        let value = format!("Bearer {}", self.token()?).parse().context("token is not a valid header value")?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

/// `--tls-ca` (or `RBK_TLS_CA`): what a coordinator client trusts besides
/// the system roots. Global, so `rbk cache` takes it after a subcommand.
#[derive(clap::Args)]
pub struct TlsCaFlag {
    /// Extra CA certificate (PEM) to trust for an https:// coordinator,
    /// besides the system roots (a private or self-signed certificate).
    #[arg(long, env = "RBK_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsCaFlag {
    pub fn load(&self) -> anyhow::Result<rbk_client::ClientTls> {
        Ok(rbk_client::ClientTls::from_flag(self.tls_ca.as_deref())?)
    }
}

/// `--build-arg NAME=VALUE`, or `NAME` to take the value from the
/// environment (skipped when unset, as docker does).
fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
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

