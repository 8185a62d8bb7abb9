use std::path::PathBuf;

/// Why planning or assembling a build failed. Each variant names what it
/// is about (the flag value, the Dockerfile step and line, the layer or
/// step) so the message points at the thing to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] rbk_dockerfile::Error),
    /// A step the farm cannot run (yet).
    #[error("{step} ({file}:{line}): {message}")]
    Unsupported {
        step: String,
        file: String,
        line: usize,
        message: String,
    },
    /// The planner walked the graph out of order (a bug, not bad input).
    #[error("{step} ({file}:{line}): {missing} was not planned yet (graph order)")]
    PlanOrder {
        step: String,
        file: String,
        line: usize,
        missing: String,
    },
    /// `# check=error=true` (or `BUILDKIT_DOCKERFILE_CHECK=error=true`)
    /// and build checks warned: refused before any step runs.
    #[error("{file}: {message}")]
    CheckViolation {
        file: String,
        /// BuildKit's `lint violation found for rules: A, B`.
        message: String,
        checks: Vec<rbk_dockerfile::Check>,
    },
    #[error("target stage: has no steps")]
    EmptyTarget,
    /// A `--platform` list that does not parse.
    #[error("--platform {spec}: {problem}")]
    PlatformSpec { spec: String, problem: String },
    #[error("--platform: no platform to build for")]
    NoPlatform,
    /// An output whose format holds one image only, for a multi-platform
    /// build.
    #[error(
        "{output}: docker's image format holds one platform's image, not an index of {platforms}; use --output type=oci,dest=FILE or --push for a multi-platform image, or build one --platform"
    )]
    IndexNotInDockerFormat { output: String, platforms: String },
    #[error("{step}: encoding the payload: {source}")]
    EncodePayload { step: String, source: serde_json::Error },
    #[error("step {step_id}: payload: {source}")]
    BadPayload { step_id: String, source: serde_json::Error },
    /// A `--secret` value that is not `id=ID,src=FILE` / `id=ID,env=VAR`.
    #[error("--secret {spec}: {problem}")]
    SecretSpec { spec: String, problem: String },
    #[error("--secret id={id}: environment variable {var} is not set")]
    SecretEnv { id: String, var: String },
    #[error("--secret id={id}: {}: {source}", path.display())]
    SecretFile { id: String, path: PathBuf, source: std::io::Error },
    #[error("--secret id={id}: given twice")]
    SecretTwice { id: String },
    /// An `--output` value that is not `type=...,dest=...`.
    #[error("--output {spec}: {problem}")]
    OutputSpec { spec: String, problem: String },
    #[error("--push: needs a name: give -t REGISTRY/REPO:TAG (or --output type=registry,name=...)")]
    PushWithoutName,
    #[error("FROM {reference}: the farm could not resolve it: {message}")]
    FarmResolve { reference: String, message: String },
    #[error("{flag} {reference}: {source}")]
    ImageRef {
        /// `FROM` or `push`: where the reference came from.
        flag: &'static str,
        reference: String,
        source: rbk_image::ImageError,
    },
    #[error(
        "--load: docker is not installed (no `docker` on PATH); use --output type=docker,dest=FILE and load it where docker runs"
    )]
    NoDocker,
    #[error("--load: docker load failed ({status}): {stderr} (without a docker daemon, use --output type=docker,dest=FILE and load it where docker runs)")]
    DockerLoad { status: std::process::ExitStatus, stderr: String },
    #[error("final image: step {step_id} reported no result to assemble the image from")]
    NoResult { step_id: String },
    /// A layer whose digest (`field`: digest, diff_id or blake3) does not parse.
    #[error("layer {layer}: {field} {value}: {message}")]
    LayerDigest {
        layer: String,
        field: &'static str,
        value: String,
        message: String,
    },
    /// A remote source (`ADD <url>`) that could not be resolved.
    #[error("{file}:{line}: ADD {url}: {message}")]
    RemoteSource { file: String, line: usize, url: String, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A blocking task (unpacking, exporting) panicked or was cancelled.
    #[error("{what}: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
    #[error(transparent)]
    Image(#[from] rbk_image::ImageError),
    #[error(transparent)]
    Worker(#[from] rbk_worker::WorkerError),
    #[error(transparent)]
    Store(#[from] rbk_store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] rbk_snapshot::SnapshotError),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl BuildError {
    /// The build checks behind a [`BuildError::CheckViolation`], for the
    /// caller to print as it prints them after a build.
    pub fn checks(&self) -> Option<&[rbk_dockerfile::Check]> {
        match self {
            BuildError::CheckViolation { checks, .. } => Some(checks),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        BuildError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
