//! Resolving a path inside a root directory the way the kernel would if the
//! root were `/` (Docker's `FollowSymlinkInScope`): symlinks are followed,
//! but an absolute target or a `..` can never climb above the root. Every
//! path taken from a step, a context or a rootfs goes through here before
//! the worker touches the host filesystem.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, WorkerError};

const MAX_SYMLINKS: u32 = 255;

/// The host path that `path` (absolute or relative, read as if `root` were
/// `/`) refers to, with every symlink on the way resolved inside `root`.
/// Components that do not exist are kept literally. The result always lies
/// under `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components(Path::new(path)).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(WorkerError::path(root.join(path.trim_start_matches('/')), "too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&candidate).map_err(|e| WorkerError::io(format!("reading symlink {}", candidate.display()), e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).enumerate() {
                    queue.insert(i, c);
                }
            }
            _ => resolved.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// The normal components of `path` plus `..`, with `/` and `.` dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    })
}

/// `path` made absolute and lexically clean (`/a/../b` → `/b`), relative
/// paths taken from `base`; for paths shown in the container.
pub fn clean_abs(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') { path.to_owned() } else { format!("{}/{}", base, path) };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlink_stays_in_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        symlink("/etc/passwd", d.path().join("etc/link")).unwrap();
        assert_eq!(resolve_in_root(d.path(), "/etc/link").unwrap(), d.path().join("etc/passwd"));
    }

    #[test]
    fn dotdot_symlink_cannot_climb_out() {
        let d = tempfile::tempdir().unwrap();
        symlink("../../../../../tmp", d.path().join("out")).unwrap();
        assert_eq!(resolve_in_root(d.path(), "out/x").unwrap(), d.path().join("tmp/x"));
        assert_eq!(resolve_in_root(d.path(), "/../../x").unwrap(), d.path().join("x"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        symlink("b", d.path().join("a")).unwrap();
        symlink("a", d.path().join("b")).unwrap();
        let err = resolve_in_root(d.path(), "a").unwrap_err().to_string();
        assert!(err.contains("too many levels"), "{err}");
    }

    #[test]
    fn clean_abs_joins_relative_paths_to_the_base() {
        assert_eq!(clean_abs("/app", "src/../bin"), "/app/bin");
        assert_eq!(clean_abs("/app", "/x/./y/"), "/x/y");
        assert_eq!(clean_abs("/", "../.."), "/");
    }
}
