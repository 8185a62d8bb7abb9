//! Step execution on a worker: given a step description and its base
//! layers, produce the layer `docker build` would produce.
//!
//! The pieces, one file each: [`step`] (what to do), [`layers`] (base
//! layers unpacked once, LRU-evicted), [`rootfs`] (overlay of the chain plus
//! a fresh upper dir), [`spec`] (the OCI runtime spec), [`runtime`] (runc or
//! crun), [`mounts`] (cache, bind, tmpfs, secret, ssh), [`copy`] (COPY/ADD
//! without a container) and [`execute`] (the [`Executor`] joining them).
//! The worker knows nothing about Dockerfiles: the client's planner maps
//! build graph nodes onto [`Step`]s and sends them in the step contract,
//! [`payload`].

pub mod copy;
mod error;
pub mod execute;
pub mod layers;
pub mod logs;
pub mod mounts;
pub mod payload;
pub mod rootfs;
pub mod runtime;
pub mod scope;
pub mod spec;
pub mod step;
pub mod users;

pub use error::{Result, WorkerError};
pub use execute::{DEFAULT_PATH, Executor, ReadonlyRootfs, StepOutput, Timings, WorkerConfig};
pub use logs::{LogLine, LogSink, Redactor, Stream};
pub use mounts::{SecretValue, StepInputs};
pub use runtime::{RuntimeKind, TAIL_LINES};
pub use step::{Command, CopySource, CopyStep, LayerRef, Limits, Mount, MountKind, Network, RunStep, Security, Source, Step, StepKind};
