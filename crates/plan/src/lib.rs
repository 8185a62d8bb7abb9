//! The client's half of a farm build: plan, then assemble.
//!
//! `rbk-dockerfile` turns a Dockerfile into a graph of steps with cache
//! keys; this crate plans that graph for the farm (each step a payload in
//! the worker's step contract, `rbk_worker::payload`) and, once the
//! coordinator has run it, assembles the image from the target's result.
//! `rbk submit` and `rbk build` (the farm in one process) both use it:
//!
//! - [`planner`]: Dockerfile → the step graph, base layers and the context
//!   put into the store;
//! - [`mapping`]: graph steps → `rbk_worker::Step` descriptions;
//! - [`remote_sources`]: `ADD <url>` re-validated each build, keyed by
//!   content; `ADD <git url>` by the commit its ref names now
//!   (`git_sources`);
//! - `image_sources`: images read by `--from=<image>`, resolved like `FROM`;
//! - [`assemble`]: the final image and outputs from the target's result;
//! - [`farm_bases`]: `FROM` images the farm resolves and pulls (`rbk submit`).
//! - [`run_defaults`]: the build's `--network`, `--add-host`, `--shm-size`
//!   and `--ulimit`, applied to every RUN.
//! - [`platforms`]: multi-platform builds (`--platform` lists, one graph
//!   out of one per platform); the image index is `assemble`'s.
//!
//! Sending the plan and following the build is `rbk-client`'s.

// Errors carry step names, paths and output tails by value so messages can
// name them; they are rare, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod assemble;
mod error;
pub mod farm_bases;
mod frontend;
mod git_sources;
mod image_sources;
pub mod mapping;
pub mod planner;
pub mod registry_access;
pub mod remote_sources;
pub mod run_defaults;
pub mod platforms;

pub use error::{BuildError, Result};
pub use frontend::IMAGE_ALIAS;
