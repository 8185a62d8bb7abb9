//! The solver: build graph → execution (BuildKit's frontend/solver split).
//!
//! `rbk-dockerfile` turns a Dockerfile into a graph of steps with cache
//! keys; this crate plans that graph for the farm, runs its steps on a
//! worker and assembles the image. `rbk submit` and `rbk build` (the farm
//! in one process, `crates/cli/src/embedded_farm.rs`) both use it:
//!
//! - [`cache_mounts`]: a worker-local directory per cache id, restored from
//!   the granted head when missing or stale (a fresh worker starts warm)
//!   and captured into the content store after each step;
//! - [`mapping`]: graph steps → `rbk_worker::Step` descriptions;
//! - [`progress`]: BuildKit-style progress lines;
//! - [`farm`]: the payload and result formats of farm builds (planned by
//!   `rbk submit`, executed by `rbk worker`);
//! - [`farm_assemble`]: `rbk submit`'s final image and outputs from the
//!   target's result;
//! - [`farm_plan`]: `rbk submit`'s planner (Dockerfile → farm graph, base
//!   layers and the context put into the store);
//! - [`farm_exec`]: one farm assignment run on this machine (`rbk worker`);
//! - [`layer_io`]: layer blobs from the store, WORKDIR layers.

// Errors carry step names, paths and output tails by value so messages can
// name them; they are rare, so their size does not matter.
#![allow(clippy::result_large_err)]

mod error;
pub use rbk_worker::payload as farm;
pub mod farm_assemble;
pub mod farm_plan;
mod frontend;
pub mod mapping;
pub mod progress;

pub use error::{BuildError, Result};
pub use progress::{Progress, ProgressMode};
