use std::path::PathBuf;

/// Why a worker could not run an assigned step (the step's own command
/// failing is not an error: it is a `StepResult` with an exit code).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Other { what: String, message: String },
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
    pub(crate) fn other(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ExecError::Other { what: what.into(), message: message.to_string() }
    }
}
