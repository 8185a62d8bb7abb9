//! The error of the durable log and snapshot files, shared by the segment
//! files (`segments.rs`) and the storage built on them (`storage.rs`).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft storage {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("raft storage {path} at byte {offset}: {message}")]
    Corrupt { path: String, offset: u64, message: String },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.display().to_string(), source }
}
