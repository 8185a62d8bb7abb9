//! The flag groups several commands share, declared once and flattened
//! into each command's arguments (`#[command(flatten)]`), so a flag means
//! the same thing, with the same help, everywhere.
//!
//! - [`DockerBuildFlags`]: the `docker build` flags `rbk build` and
//!   `rbk submit` read the same way (Dockerfile, build args, target,
//!   secrets, cache, progress, base images, registries). `-t`, `-o` and
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

use anyhow::Context as _;
use rbk_plan::assemble::FarmOutput;
use rbk_plan::planner::{Plan, PlanRequest};
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
}

impl DockerBuildFlags {
    /// What to plan: one place for both commands, so they read a
    /// Dockerfile the same way.
    pub fn plan_request<V>(&self, context: &Path, work_dir: &Path, secrets: &BTreeMap<String, V>) -> anyhow::Result<PlanRequest> {
        let mut req = PlanRequest::new(context, work_dir);
        req.dockerfile = self.file.clone();
        req.target = self.target.clone();
        req.build_args = parse_build_args(&self.build_args);
        req.insecure_registries = self.insecure.clone();
        req.secret_ids = secrets.keys().cloned().collect();
        req.allow = self.entitlements()?.into_iter().collect();
        for b in &self.base_images {
            let (name, dir) = b.split_once('=').with_context(|| format!("--base-image {b}: expected NAME=DIR[:REF]"))?;
            req.base_images.insert(name.to_owned(), dir.to_owned());
        }
        Ok(req)
    }

    /// `--allow`, parsed.
    pub fn entitlements(&self) -> anyhow::Result<Vec<rbk_worker::Entitlement>> {
        self.allow.iter().map(|a| a.trim().parse().with_context(|| format!("--allow {a}"))).collect()
    }
}

impl DockerBuildFlags {
    /// The request that submits `plan`: the flags' options (target,
    /// `--no-cache`), `req`'s build args and the secrets' values, for
    /// `platform`, writing `outputs` (the coordinator's exporters).
    pub fn submit_request(
        &self,
        plan: &Plan,
        req: &PlanRequest,
        secrets: BTreeMap<String, Vec<u8>>,
        platform: String,
        outputs: Vec<Output>,
    ) -> SubmitRequest {
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

