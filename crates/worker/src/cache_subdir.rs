//! A cache mount's `source=` subdirectory (`RUN --mount=type=cache,
//! source=sub`): opened beneath the cache directory one component at a
//! time, created when missing, with no symlink followed. The cache's
//! content was written by earlier steps, so a `sub -> /` planted there must
//! not put the host's root in the container.
//!
//! The container gets the directory that was opened, not a path looked up
//! again: the worker bind-mounts the open descriptor (`/proc/self/fd/<n>`)
//! on a directory of the step's scratch space and the runtime mounts that,
//! so renaming or replacing `sub` after the check (another step sharing the
//! cache) changes nothing. (The runtime cannot take the descriptor's link
//! itself: its mount namespace is not the worker's.)

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use crate::error::{Result, WorkerError};

/// An opened cache subdirectory, bind-mounted on a scratch directory for
/// the runtime; unmounted on drop.
#[derive(Debug)]
pub struct CacheSubdir {
    mounted: PathBuf,
}

impl CacheSubdir {
    /// The path the runtime bind-mounts.
    pub fn mount_source(&self) -> &Path {
        &self.mounted
    }
}

impl Drop for CacheSubdir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mounted, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mounted);
    }
}

/// Opens `subdir` beneath `cache`, creating missing directories with
/// `mode`, `uid` and `gid` (as a new cache's root gets them), and
/// bind-mounts it on `at` (created; in the step's scratch space). `target`
/// names the mount in errors.
pub fn open(cache: &Path, subdir: &str, at: &Path, target: &str, mode: u32, uid: u32, gid: u32) -> Result<CacheSubdir> {
    let fd = open_beneath(cache, subdir, target, mode, uid, gid)?;
    std::fs::create_dir_all(at).map_err(|e| WorkerError::mount(target, format!("creating {}: {e}", at.display())))?;
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    nix::mount::mount(Some(&link), at, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| WorkerError::mount(target, format!("cache source {subdir:?}: bind mount on {}: {e}", at.display())))?;
    Ok(CacheSubdir { mounted: at.to_path_buf() })
}

/// The directory `subdir` beneath `cache`, opened (and created) without
/// following any symlink.
fn open_beneath(cache: &Path, subdir: &str, target: &str, mode: u32, uid: u32, gid: u32) -> Result<OwnedFd> {
    let refuse = |why: String| WorkerError::mount(target, format!("cache source {subdir:?}: {why}"));
    if subdir.starts_with('/') || subdir.split('/').any(|c| c == "..") {
        return Err(refuse("must be a path inside the cache (relative, without '..')".into()));
    }
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
    };
    let mut dir = nix::fcntl::open(cache, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| refuse(format!("opening the cache directory {}: {e}", cache.display())))?;
    for comp in subdir.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let next = match openat2(dir.as_fd(), comp, how()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(dir.as_fd(), comp, Mode::from_bits_truncate(mode & 0o7777)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(refuse(format!("creating {comp:?}: {e}"))),
                }
                let fd = openat2(dir.as_fd(), comp, how()).map_err(|e| refuse(not_a_dir(dir.as_fd(), comp, e)))?;
                // mkdir's mode went through the umask; set it exactly.
                fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(|e| refuse(format!("chmod of {comp:?}: {e}")))?;
                fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| refuse(format!("chown of {comp:?}: {e}")))?;
                fd
            }
            Err(e) => return Err(refuse(not_a_dir(dir.as_fd(), comp, e))),
        };
        dir = next;
    }
    Ok(dir)
}

/// Why `comp` in `dir` could not be opened as a directory (`O_NOFOLLOW`
/// with `O_DIRECTORY` reports a symlink as ENOTDIR: look again).
fn not_a_dir(dir: impl AsFd, comp: &str, e: Errno) -> String {
    let symlink = matches!(e, Errno::ELOOP | Errno::EXDEV)
        || nix::sys::stat::fstatat(dir, comp, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
    match e {
        _ if symlink => format!("{comp:?} is a symlink; a cache subdirectory is opened without following symlinks"),
        Errno::ENOTDIR => format!("{comp:?} is not a directory"),
        e => format!("opening {comp:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_subdirectory_is_created_beneath_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        open_beneath(cache.path(), "a/b", "/c", 0o750, nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()).unwrap();
        let md = std::fs::metadata(cache.path().join("a/b")).unwrap();
        assert!(md.is_dir());
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777, 0o750);
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_even_one_pointing_inside() {
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/", cache.path().join("out")).unwrap();
        std::os::unix::fs::symlink("real", cache.path().join("in")).unwrap();
        for sub in ["out", "out/etc", "in"] {
            let e = open_beneath(cache.path(), sub, "/c", 0o755, 0, 0).unwrap_err().to_string();
            assert!(e.contains("is a symlink"), "{sub}: {e}");
        }
    }

    #[test]
    fn parent_and_absolute_paths_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        for sub in ["../x", "/etc", "a/../../x"] {
            let e = open_beneath(cache.path(), sub, "/c", 0o755, 0, 0).unwrap_err().to_string();
            assert!(e.contains("inside the cache"), "{sub}: {e}");
        }
    }
}
