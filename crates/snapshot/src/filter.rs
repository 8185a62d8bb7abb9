//! Which paths a capture takes. Build contexts are captured through a
//! `.dockerignore` matcher (it lives in the Dockerfile crate); cache mounts
//! take everything. This crate only needs the question answered.

/// Decides whether a path (relative, `/`-separated bytes) is captured.
/// Returning `false` for a directory skips everything beneath it, so a
/// matcher with re-inclusion rules (`!dir/keep`) must answer `true` for the
/// directories that hold re-included paths.
pub trait PathFilter: Send + Sync {
    fn include(&self, path: &[u8], is_dir: bool) -> bool;
}

/// Takes every path.
#[derive(Debug, Clone, Copy, Default)]
pub struct IncludeAll;

impl PathFilter for IncludeAll {
    fn include(&self, _: &[u8], _: bool) -> bool {
        true
    }
}

impl<F: Fn(&[u8], bool) -> bool + Send + Sync> PathFilter for F {
    fn include(&self, path: &[u8], is_dir: bool) -> bool {
        self(path, is_dir)
    }
}
