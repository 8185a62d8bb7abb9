use std::io;

/// Everything that can go wrong with images. Each variant names what it was
/// working on (a file, a tar entry, a digest, a registry URL) so the message
/// alone tells an operator where to look.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    DigestFormat(String),
    #[error("{what}: content hashes to {actual}, expected {expected}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what}: {actual} bytes, expected {expected}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Json { context: String, source: serde_json::Error },
    #[error("registry {url}: HTTP {status}: {body}")]
    Registry { url: String, status: u16, body: String },
    #[error("registry {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("registry {registry}: authentication failed: {reason}")]
    Auth { registry: String, reason: String },
    /// A layer tar entry that would write outside the layer directory, or
    /// that a build must not create.
    #[error("layer entry {entry:?}: {reason}")]
    HostileEntry { entry: String, reason: String },
    #[error("layer: more than {limit} bytes after decompression (at entry {entry:?}); refusing a possible decompression bomb")]
    TooLarge { entry: String, limit: u64 },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("no manifest for platform {wanted} in {what}; it offers: {available}")]
    NoPlatform { what: String, wanted: String, available: String },
    #[error(transparent)]
    Store(#[from] rbk_store::StoreError),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io { context: context.into(), source }
    }
    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        ImageError::Json { context: context.into(), source }
    }
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::Invalid { what: what.into(), reason: reason.into() }
    }
    pub(crate) fn hostile(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::HostileEntry { entry: entry.into(), reason: reason.into() }
    }
}

/// Adds a description of what was being done to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ImageError::io(context(), e))
    }
}
