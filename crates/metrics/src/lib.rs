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
pub mod registry;
pub mod store;

use std::sync::OnceLock;

pub use endpoint::{EndpointError, MetricsServer, serve};
pub use labels::{BuildResult, CacheKind, Readopted, StepResult, StoreOp};
pub use registry::{Metrics, RunningStep};
pub use store::MetricsStore;

/// This process's metrics, created on first use. What `GET /metrics`
/// serves in `rbk coordinator` and `rbk worker`.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}
