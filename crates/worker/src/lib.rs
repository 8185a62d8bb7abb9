//! Step execution on a worker: overlay rootfs, OCI runtime, mounts, layer capture.

mod error;
pub mod scope;
pub mod spec;
pub mod step;
pub mod users;

pub use error::{Result, WorkerError};
