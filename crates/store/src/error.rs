use crate::Digest;

/// What went wrong in a store, always naming the blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The bytes read back do not hash to the name they were stored under.
    /// The corrupt bytes are never handed to the caller.
    #[error("blob {digest} is corrupt: content hashes to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    /// A writer offered bytes that do not match the digest it named.
    #[error("refusing to store {expected}: the data written hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: range {offset}+{length:?} lies outside its {size} bytes")]
    InvalidRange { digest: Digest, offset: u64, length: Option<u64>, size: u64 },
    #[error("{}{context}: {source}", digest.map(|d| format!("blob {d}: ")).unwrap_or_default())]
    Io { digest: Option<Digest>, context: String, #[source] source: std::io::Error },
    /// A remote backend could not be reached or refused; `retryable` says
    /// whether trying again later may succeed.
    #[error("{backend}: {message}")]
    Backend { backend: &'static str, message: String, retryable: bool },
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn io(digest: impl Into<Option<Digest>>, context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { digest: digest.into(), context: context.into(), source }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
