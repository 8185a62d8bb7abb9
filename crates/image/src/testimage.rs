//! Base images made by tests: no test depends on Docker Hub.

use std::path::Path;

use crate::{Image, ImageError, ImageRef, OciLayout, Result};

/// Applets linked to `/bin/busybox` in the test rootfs.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "echo", "ls", "cat", "rm", "vi", "mkdir", "cp", "mv", "touch", "chmod", "chown", "ln", "test", "[", "true", "false",
    "sleep", "env", "id", "pwd", "grep", "sed", "head", "tail", "wc", "stat", "find", "sort", "uname", "whoami", "date", "printf",
    "tar", "gzip", "readlink", "du", "df", "dd", "sha256sum", "md5sum", "seq", "tee", "xargs", "which", "hostname", "mount",
];

/// Writes a minimal rootfs into `dir`: `/bin/busybox` (copied from
/// `busybox`, a static build) with symlinks for [`BUSYBOX_APPLETS`], plus
/// `/etc/passwd`, `/etc/group`, `/tmp`, `/root`.
pub fn busybox_rootfs(dir: &Path, busybox: &Path) -> Result<()> {
    let _ = (dir, busybox);
    Err(ImageError::invalid("busybox_rootfs", "not implemented yet"))
}

/// Builds a one-layer busybox image into `layout` under `ref_name`
/// (`Cmd ["sh"]`, `PATH` set).
pub fn busybox_image(layout: &OciLayout, busybox: &Path, ref_name: &str) -> Result<Image> {
    let _ = (layout, busybox, ref_name);
    Err(ImageError::invalid("busybox_image", "not implemented yet"))
}

/// Builds the busybox image and pushes it to `registry` (`host:port`,
/// plain HTTP) as `<registry>/busybox:latest`; returns its reference,
/// pinned to the pushed manifest digest. Uses a scratch layout in a
/// temporary directory.
pub async fn push_busybox(registry: &str, busybox: &Path) -> Result<ImageRef> {
    let _ = (registry, busybox);
    Err(ImageError::invalid("push_busybox", "not implemented yet"))
}
