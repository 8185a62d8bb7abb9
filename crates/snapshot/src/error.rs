use rbk_store::{Digest, StoreError};

/// What went wrong with a snapshot, always naming the path, field or digest
/// concerned so an operator can find it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A manifest that cannot be decoded or breaks a safety rule. Manifests
    /// are untrusted input: this is the error a hostile one gets.
    #[error("manifest{}: {what}", at.as_ref().map(|p| format!(" entry {p:?}")).unwrap_or_default())]
    BadManifest { at: Option<String>, what: String },
    /// Content read from the store that does not match what the manifest says.
    #[error("{path:?}: chunk {expected} from pack {pack} is corrupt: {what}")]
    CorruptContent { path: String, expected: Digest, pack: Digest, what: String },
    #[error("{op} {path:?}: {source}")]
    Io { op: &'static str, path: String, #[source] source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot task failed: {0}")]
    Task(String),
}

pub type SnapshotResult<T> = Result<T, SnapshotError>;

impl SnapshotError {
    pub(crate) fn bad(at: Option<&[u8]>, what: impl Into<String>) -> Self {
        SnapshotError::BadManifest { at: at.map(show), what: what.into() }
    }

    pub(crate) fn io(op: &'static str, path: &[u8], source: impl Into<std::io::Error>) -> Self {
        SnapshotError::Io { op, path: show(path), source: source.into() }
    }
}

/// A relative path as text for messages; bytes that are not UTF-8 are shown
/// escaped rather than dropped.
pub(crate) fn show(path: &[u8]) -> String {
    if path.is_empty() { ".".to_owned() } else { String::from_utf8_lossy(path).into_owned() }
}
