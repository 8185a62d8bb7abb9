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

pub mod archive;
mod cache_subdir;
pub mod chmod;
pub mod container_options;
pub mod copy;
pub mod emulation;
pub mod entitlements;
mod error;
pub mod execute;
pub mod git_source;
pub mod hygiene;
pub mod layers;
pub mod limits;
pub mod logs;
pub mod mounts;
pub mod network;
pub mod payload;
pub mod policy;
pub mod rootfs;
pub mod runtime;
pub mod scope;
pub mod seccomp;
pub mod spec;
pub mod step;
pub mod users;

pub use entitlements::Entitlement;
pub use error::{Result, WorkerError};
pub use execute::{DEFAULT_PATH, DEFAULT_POOL_LIMITS, Executor, ReadonlyRootfs, StepOutput, Timings, WorkerConfig};
pub use limits::LimitHit;
pub use logs::{DEFAULT_LOG_LIMIT_BYTES, LogLine, LogSink, MAX_LINE_BYTES, Redactor, Stream};
pub use mounts::{SecretValue, StepInputs};
pub use policy::WorkerPolicy;
pub use runtime::{RunOptions, RuntimeKind, TAIL_LINES};
pub use step::{
    CacheSeed, Chmod, Command, ContainerOptions, CopySource, CopyStep, HostEntry, LayerRef, Limits, Mount, MountKind, Network, RunStep, Security, Source,
    Step, StepKind, Ulimit,
};
