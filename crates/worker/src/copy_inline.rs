//! `COPY <<EOF /dest`: a heredoc written as a file, as BuildKit does it
//! (mode 0644 before `--chmod`, root-owned unless `--chown`), through the
//! same confinement as every other copied file.

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

use crate::copy::{Attrs, CopyStats, create_new_file, ensure_dir};
use crate::error::{IoContext, Result, WorkerError};
use crate::scope::resolve_in_root;

/// Writes `content` as the container file `target` under `root`.
pub(crate) fn write(root: &Path, target: &str, content: &str, attrs: &Attrs, stats: &mut CopyStats) -> Result<()> {
    let (parent, _) = target.rsplit_once('/').unwrap_or(("", target));
    ensure_dir(root, parent, &Attrs { chown: attrs.chown, chmod: None }, stats)?;
    let host = resolve_in_root(root, target)?;
    if let Ok(existing) = std::fs::symlink_metadata(&host) {
        if existing.is_dir() {
            return Err(WorkerError::path(&host, format!("cannot overwrite directory {target} with a heredoc")));
        }
        std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
    }
    let mut f = create_new_file(&host)?;
    f.write_all(content.as_bytes()).ctx(|| format!("writing {}", host.display()))?;
    drop(f);
    let (uid, gid) = attrs.chown.unwrap_or((0, 0));
    lchown(&host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(attrs.mode(0o644, false))).ctx(|| format!("chmod {}", host.display()))?;
    stats.files += 1;
    stats.bytes += content.len() as u64;
    Ok(())
}
