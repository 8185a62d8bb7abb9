//! The solver: build graph → execution (BuildKit's frontend/solver split).
//!
//! `rbk-dockerfile` turns a Dockerfile into a graph of steps with cache
//! keys; this crate runs that graph on this machine, the embedded default
//! behind `rbk build`:
//!
//! - [`state`]: the embedded coordinator's durable state (action cache:
//!   step key → layer; cache-mount heads: id → newest snapshot), one JSON
//!   file, so a second identical build runs nothing;
//! - [`cache_mounts`]: a worker-local directory per cache id, restored from
//!   the head when missing or stale (a fresh worker starts warm) and
//!   captured into the content store after each step;
//! - [`mapping`]: graph steps → `rbk_worker::Step` descriptions;
//! - [`progress`]: BuildKit-style progress lines;
//! - [`farm`]: the payload and result formats of farm builds (planned by
//!   `rbk submit`, executed by `rbk worker`);
//! - [`farm_assemble`]: `rbk submit`'s final image and outputs from the
//!   target's result;
//! - [`farm_plan`]: `rbk submit`'s planner (Dockerfile → farm graph, base
//!   layers and the context put into the store);
//! - [`farm_exec`]: one farm assignment run on this machine (`rbk worker`);
//! - [`layer_io`]: layer blobs from the store, WORKDIR layers (shared);
//! - [`solve`]: the driver, sequential in dependency order (the farm's
//!   scheduler in `rbk-coordinator` is what runs steps in parallel).

// Errors carry step names, paths and output tails by value so messages can
// name them; they are rare, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod cache_mounts;
mod error;
pub mod farm;
pub mod farm_exec;
pub mod farm_assemble;
pub mod farm_plan;
mod frontend;
pub mod layer_io;
pub mod mapping;
pub mod progress;
pub mod solve;
pub mod state;

pub use error::{BuildError, Result};
pub use progress::{Progress, ProgressMode};
pub use solve::{BuildOutput, BuildRequest, BuildResult, OutputKind, build};
