use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while executing a step. Every variant names
/// the path, mount, layer or program involved, so a failure on a remote
/// worker can be understood from the message alone.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{path}: {reason}")]
    Path { path: PathBuf, reason: String },
    #[error("step {field}: {reason}")]
    InvalidStep { field: String, reason: String },
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("mount at {target}: {reason}")]
    Mount { target: String, reason: String },
    #[error("runtime {program}: {reason}")]
    Runtime { program: String, reason: String },
    #[error("COPY/ADD source {source_path}: {reason}")]
    CopySource { source_path: String, reason: String },
    #[error("ADD {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// A step needs an entitlement it was not granted; nothing of it ran.
    #[error("{reason}")]
    Entitlement { entitlement: crate::entitlements::Entitlement, reason: String },
    #[error("OCI runtime spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Image(#[from] rbk_image::ImageError),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        WorkerError::Io { context: context.into(), source }
    }
    pub(crate) fn path(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        WorkerError::Path { path: path.as_ref().to_path_buf(), reason: reason.into() }
    }
    pub(crate) fn step(field: impl Into<String>, reason: impl Into<String>) -> Self {
        WorkerError::InvalidStep { field: field.into(), reason: reason.into() }
    }
    pub(crate) fn mount(target: impl Into<String>, reason: impl Into<String>) -> Self {
        WorkerError::Mount { target: target.into(), reason: reason.into() }
    }
}

/// `io::Result` → [`WorkerError::Io`] with a lazily built context.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| WorkerError::io(what(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| WorkerError::io(what(), io::Error::from(e)))
    }
}
