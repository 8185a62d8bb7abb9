//! The coordinator: the farm's brain.
//!
//! - [`state`]: all durable state behind one interface, changed only by
//!   deterministic commands (what the Raft issue replicates);
//! - [`scheduler`]: runs build graphs on workers (cache hits, dedupe,
//!   affinity, retries, cancel);
//! - [`cache_heads`]: the commit protocol and leases for cache mounts;
//! - [`auth`]: token → tenant namespace, checked on every call;
//! - [`server`]: the gRPC services.
//!
//! Clients (the remote store, TLS, leader following) are in `rbk-client`.

pub mod auth;
pub mod build_events;
pub mod cache_heads;
pub mod config;
pub mod raft_config;
pub mod redis_fanout;
mod observe;
pub mod scheduler;
pub mod server;
pub mod snapshot_merger;
pub mod ssh_relay;
pub mod state;
pub mod watch_route;

pub use auth::{Auth, TokenFile};
pub use cache_heads::{CacheHeads, MergedSnapshot, Merger};
pub use config::CoordinatorConfig;
pub use scheduler::{BuildEvent, BuildRequest, CacheMountSpec, Scheduler, SchedulerConfig, StepNode};
pub use server::{Coordinator, Planner};
pub use snapshot_merger::SnapshotMerger;
pub use state::{CoordinatorState, MemoryState, Sharing};
