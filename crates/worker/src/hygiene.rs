//! Worker host hygiene: everything under the worker's state directory
//! (layers, step scratch, restored contexts, cache mounts, runtime state)
//! holds tenants' files as they were built, setuid bits included (Docker
//! keeps them in images). The directories leading to them are made 0700,
//! so no other local user of the worker host can list or reach them, and
//! a tenant's setuid program cannot be run from the host by anyone but
//! root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Makes `dir` (which must exist) 0700.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ctx(|| format!("making {} private (0700)", dir.display()))
}

/// Marks every descriptor above stderr close-on-exec, so none this process
/// inherited (a build lock, a CI runner's pipe, a parent's socket) reaches
/// a RUN step or a helper the worker starts (pasta outlives a killed
/// worker and would hold it open). Idempotent; a kernel without
/// `close_range` (before 5.11) leaves them as they are.
pub fn close_inherited_fds() {
    // SAFETY: close_range only changes descriptor flags.
    unsafe {
        libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
    }
}
