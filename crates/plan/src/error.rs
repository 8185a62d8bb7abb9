use std::path::PathBuf;

/// Why a build failed. `StepFailed` is the user's command failing; the
/// others are rbk (or its inputs) failing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] rbk_dockerfile::Error),
    #[error("{step} ({file}:{line}) failed: {why}")]
    StepFailed {
        step: String,
        file: String,
        line: usize,
        why: String,
        tail: Vec<String>,
    },
    #[error("{step} ({file}:{line}): {message}")]
    Unsupported {
        step: String,
        file: String,
        line: usize,
        message: String,
    },
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

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        BuildError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
    pub(crate) fn other(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        BuildError::Other {
            what: what.into(),
            message: message.to_string(),
        }
    }
}
