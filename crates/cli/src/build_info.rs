//! Which rbk this is: the crate version and the git commit `build.rs`
//! stamped, for `rbk --version` and `rbk_build_info{version,commit}`.

/// `0.1.0 (commit 1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("RBK_GIT_COMMIT"), ")");

/// The process' metrics for `role` (only its series exposed), stamped
/// with the build info. First thing a coordinator or worker does.
pub fn init_metrics(role: rbk_metrics::Role) {
    rbk_metrics::init_global(role, env!("CARGO_PKG_VERSION"), env!("RBK_GIT_COMMIT"));
}
