//! Prometheus metrics for every rbk node (coordinator and worker) and the
//! HTTP endpoint that serves them.
//!
//! - [`Metrics`]: the registry and one recording method per event
//!   ("a build ended", "a step was cached", ...), so call sites stay one
//!   line and metric names live in one place ([`registry`]);
//! - [`global`]: the process's metrics. Metrics are observations nothing
//!   reads back to make decisions, so one per process is fine; it spares
//!   threading a handle through constructors other code owns. Tests that
//!   assert values make their own [`Metrics::new`];
//! - [`process`]: the standard `process_*` series (CPU, memory, file
//!   descriptors, start time), read from `/proc` at each scrape;
//! - [`MetricsStore`]: a `rbk_store::Store` wrapper timing every operation;
//! - [`MetricsServer`] / [`serve`]: `GET /metrics` on its own address;
//! - [`exposition`]: reading samples back from the text (tests, scripts).
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client): no
//! hidden global registry or macros, typed label sets, and both the
//! Prometheus 0.0.4 text format and OpenMetrics from one registry.

pub mod endpoint;
pub mod exposition;
pub mod labels;
pub mod process;
pub mod registry;
pub mod store;

use std::sync::OnceLock;

pub use endpoint::{EndpointError, MetricsServer, serve};
pub use labels::{BuildResult, CacheKind, Readopted, StepResult, StoreOp};
pub use registry::{Metrics, Role, RunningStep};
pub use store::MetricsStore;

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// This process's metrics, created on first use (every role's series
/// unless [`init_global`] chose one first). What `GET /metrics` serves in
/// `rbk coordinator` and `rbk worker`.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

/// Makes [`global`] expose only `role`'s series, and `rbk_build_info`
/// say `version` and `commit`. Call it first thing in a process's main;
/// if the metrics were already created, they are kept (with every role's
/// series) and only the build info is set.
pub fn init_global(role: Role, version: &str, commit: &str) -> &'static Metrics {
    let m = GLOBAL.get_or_init(|| Metrics::for_role(role));
    m.set_build_info(version, commit);
    m
}
