//! The web dashboard a coordinator serves (`[dashboard] listen = ...`):
//! server-rendered HTML (askama templates in `templates/`) and a little
//! JavaScript (`static/app.js`, embedded), no CDN and no bundler.
//!
//! - [`session`]: a tenant or operator token exchanged once at `POST
//!   /login` for an HttpOnly, SameSite=Strict cookie (Secure over TLS);
//!   every request re-checks the token behind the session against the
//!   replicated token table, as the gRPC interceptor does;
//! - [`views`]: what the pages show, shaped from the coordinator's state
//!   and the build history this node kept (pure functions);
//! - [`pages`]: the HTML pages and fragments;
//! - [`live`]: a build's steps and log lines as Server-Sent Events;
//! - [`caches`]: the Caches page and its prune action (CSRF-checked),
//!   through the same code as `rbk cache ls|prune` (`cache_prune.rs`);
//!   [`charts`]: its SVG charts; [`cache_stats`]: hit/miss over time;
//! - [`cluster`]: the operators' Cluster page; [`cluster_view`]: what the
//!   binary tells it about replication;
//! - [`app`]: what every handler shares; [`html`]: text into HTML;
//! - [`server`]: the router and the listener; [`tls`]: HTTPS with the
//!   coordinator's `[tls]` certificate.

pub mod app;
pub mod cache_stats;
pub mod caches;
pub mod charts;
pub mod cluster;
pub mod cluster_view;
pub mod error;
pub mod html;
pub mod live;
pub mod pages;
pub mod server;
pub mod session;
pub mod tls;
pub mod views;

pub use app::DashboardOptions;
pub use cluster_view::{ClusterStatus, ClusterView, MemberStatus};
pub use error::DashboardError;
pub use server::Dashboard;
