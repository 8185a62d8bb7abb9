//! The platform a stage builds for, and what follows from it for cache
//! mounts.
//!
//! A stage runs for its `FROM --platform=` (e.g. `$BUILDPLATFORM` for a
//! cross-compiling stage), else for the stage it builds on, else for the
//! target platform (`TARGETPLATFORM`). A cache mount that names no `id` is
//! per platform: an arm64 toolchain's cache is no use to an amd64 one. One
//! that names an `id` is shared by every platform that names it.

use super::{Base, Builder, StageState};

/// The platform whose cache mounts keep their bare target as id.
const UNSUFFIXED: &str = "linux/amd64";

impl Builder<'_> {
    /// The platform `st`'s steps run for.
    pub(super) fn stage_platform(&self, st: &StageState, earlier: &[StageState]) -> String {
        let mut base = &st.base;
        // Stages only build on earlier ones, so this ends.
        loop {
            match base {
                Base::Image { platform: Some(p), .. } => return p.clone(),
                Base::Stage(b) if *b < earlier.len() => base = &earlier[*b].base,
                _ => return self.opts.target_platform.clone(),
            }
        }
    }
}

/// The id of a cache mount that names none: its `target`, on linux/amd64;
/// `target#platform` on any other platform (`/root/.cache#linux/arm64`).
pub(super) fn implicit_cache_id(target: &str, platform: &str) -> String {
    if platform == UNSUFFIXED { target.to_owned() } else { format!("{target}#{platform}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_mount_without_id_is_per_platform() {
        assert_eq!(implicit_cache_id("/root/.cache", "linux/amd64"), "/root/.cache");
        assert_eq!(implicit_cache_id("/root/.cache", "linux/arm64"), "/root/.cache#linux/arm64");
    }
}
