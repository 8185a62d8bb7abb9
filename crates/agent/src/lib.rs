//! `rbk worker`: the farm's worker process.
//!
//! A worker connects *out* to the coordinator (CI runners have no inbound
//! port) and keeps one bidirectional `Worker.Session` stream open:
//! registration (platform, labels, resources, the layers and cache-mount
//! snapshots it holds, so the scheduler can prefer it), heartbeats at the
//! interval the coordinator asks for, assignments down, logs and results
//! up. Steps themselves run in [`rbk_build::farm_exec`]; this crate is only
//! the loop around it:
//!
//! - [`agent`]: the session loop, concurrency, cancel, drain, idle exit;
//! - [`backoff`]: reconnect delays (exponential, capped, jittered);
//! - [`ssh_forward`]: agent sockets for `RUN --mount=type=ssh`, relayed
//!   to the client through the coordinator.

pub mod agent;
pub mod backoff;
pub mod ssh_forward;

pub use agent::{Agent, AgentConfig, AgentError, platform};
pub use backoff::Backoff;
