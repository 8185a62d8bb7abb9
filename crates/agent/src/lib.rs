//! `rbk worker`: the farm's worker process.
//!
//! A worker connects *out* to the coordinator (CI runners have no inbound
//! port) and keeps one bidirectional `Worker.Session` stream open:
//! registration (platform, labels, resources, the layers and cache-mount
//! snapshots it holds, so the scheduler can prefer it), heartbeats at the
//! interval the coordinator asks for, assignments down, logs and results
//! up, and runs the steps:
//!
//! - [`agent`]: the session loop, concurrency, cancel, drain, idle exit;
//! - [`exec`]: one assignment run on this machine (the step payload,
//!   `rbk_worker::payload`, run by `rbk_worker`'s executor);
//! - [`cache_mounts`]: a worker-local directory per cache id, restored from
//!   the granted head when missing or stale (a fresh worker starts warm)
//!   and captured into the content store after each step;
//! - [`background_commit`]: a step's cache mounts captured after its
//!   result was sent (the commits follow it);
//! - [`layer_io`]: layer blobs from the store, WORKDIR layers;
//! - [`blob_budget`]: the local layer blobs kept under a byte budget;
//! - [`disk_budget`]: all local state (contexts, blobs, unpacked layers,
//!   cache dirs) kept under the disk limit, least recently used first;
//! - [`disk_keeper`]: that sweep, in the background after each step
//!   (coalesced: one task, never a queue);
//! - [`step_locks`]: what running steps hold and background work respects;
//! - [`backoff`]: reconnect delays (exponential, capped, jittered);
//! - [`ssh_forward`]: agent sockets for `RUN --mount=type=ssh`, relayed
//!   to the client through the coordinator.

// Errors carry paths and messages by value so they can name them; they are
// rare, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod backoff;
pub mod background_commit;
pub mod blob_budget;
pub mod cache_mounts;
pub mod disk_budget;
pub mod disk_keeper;
pub mod exec;
mod exec_error;
pub mod layer_io;
pub mod ssh_forward;
pub mod step_locks;

pub use agent::{Agent, AgentConfig, AgentError, platform};
pub use backoff::Backoff;
pub use exec::FarmExecutor;
pub use exec_error::ExecError;
