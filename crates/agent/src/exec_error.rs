use std::path::PathBuf;

/// Why a worker could not run an assigned step (the step's own command
/// failing is not an error: it is a `StepResult` with an exit code). Each
/// variant names the step, layer, digest or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A layer whose digest (`field`: digest, diff_id or blake3) does not
    /// parse; `layer` is how the caller knows it.
    #[error("{layer}: {field} {value}: {message}")]
    LayerDigest {
        layer: String,
        field: &'static str,
        value: String,
        message: String,
    },
    #[error("layer {layer}: the store's blob {blob} is not this layer: {source}")]
    LayerMismatch { layer: String, blob: String, source: rbk_image::ImageError },
    #[error("cache {cache_id} head: {source}")]
    CacheHead { cache_id: String, source: rbk_store::DigestParseError },
    #[error("context snapshot: {value}: {source}")]
    ContextDigest { value: String, source: rbk_store::DigestParseError },
    #[error("step {step_id}: it reads step {input}, whose result the coordinator did not send")]
    MissingInput { step_id: String, input: String },
    #[error("step {step_id}: the result of step {input} is not a farm result: {source}")]
    BadInput { step_id: String, input: String, source: serde_json::Error },
    #[error("{step}: {source}")]
    EncodeResult { step: String, source: serde_json::Error },
    /// A blocking task (making a layer) panicked or was cancelled.
    #[error("{what}: {source}")]
    Task { what: String, source: tokio::task::JoinError },
    #[error(transparent)]
    Image(#[from] rbk_image::ImageError),
    #[error(transparent)]
    Worker(#[from] rbk_worker::WorkerError),
    #[error(transparent)]
    Store(#[from] rbk_store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] rbk_snapshot::SnapshotError),
}

pub type Result<T, E = ExecError> = std::result::Result<T, E>;

impl ExecError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        ExecError::Io { path: path.into(), message: e.to_string() }
    }
}
