//! The coordinator: the farm's brain.
//!
//! - [`model`]: the types every part speaks (step graphs, events,
//!   assignments), below everything else;
//! - [`state`]: all durable state behind one interface, changed only by
//!   deterministic commands (what the Raft issue replicates);
//! - [`scheduler`]: runs build graphs on workers (cache hits, dedupe,
//!   affinity, retries, cancel);
//! - [`cache_heads`]: the commit protocol and leases for cache mounts;
//! - [`auth`]: token → tenant namespace, checked on every call;
//!   [`token_reload`]: the token file re-read (SIGHUP, periodically), so a
//!   removed token is revoked;
//! - [`farm_images`]: the farm pulls base images into the store and pushes
//!   results ([`registries`]: credentials, insecure registries);
//! - [`server`]: a running [`Coordinator`] and its gRPC server; the
//!   services themselves are in `service/` (one file each), protobuf
//!   conversion in `wire.rs`.
//!
//! Clients (the remote store, TLS, leader following) are in `rbk-client`.

pub mod action_key;
pub mod blob_owners;
pub mod auth;
pub mod build_events;
pub mod build_history;
pub mod cache_heads;
pub mod cache_prune;
pub mod collector;
pub mod config;
pub mod context_trees;
pub mod event_seal;
pub mod eviction;
pub mod farm_images;
pub mod gc_fence;
pub mod model;
pub mod raft_config;
pub mod redis_fanout;
pub mod references;
pub mod registries;
mod observe;
pub mod scheduler;
pub mod server;
pub mod server_limits;
mod service;
pub mod snapshot_merger;
pub mod ssh_relay;
pub mod state;
pub mod token_reload;
pub mod usage;
pub mod watch_route;
pub mod worker_uploads;
mod wire;

pub use auth::{Auth, TokenFile};
pub use cache_heads::{CacheHeads, MergeError, MergedSnapshot, Merger};
pub use config::CoordinatorConfig;
pub use model::{BuildEvent, BuildRequest, CacheMountSpec, StepNode};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use server::Coordinator;
/// Events kept for a submitting client that is not reading (`service/submit_stream.rs`).
pub use service::submit_stream::SUBMIT_BACKLOG;
pub use snapshot_merger::SnapshotMerger;
pub use state::{CoordinatorState, MemoryState, Sharing};
