//! File-system calls made relative to a root directory descriptor, never
//! following symlinks, so neither capture nor restore can be steered outside
//! the directory it was given (by a hostile manifest, or by a symlink a build
//! step left behind).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::error::{SnapshotError, SnapshotResult};
use crate::manifest::Timestamp;

/// What capture and restore need to know about a path, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Devices, FIFOs, sockets: never captured, never restored.
    Special,
}

impl From<&Stat> for Meta {
    // `struct stat` field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn from(st: &Stat) -> Self {
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        };
        Meta {
            kind,
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: Timestamp { secs: st.st_mtime as i64, nanos: st.st_mtime_nsec as u32 },
            ctime: Timestamp { secs: st.st_ctime as i64, nanos: st.st_ctime_nsec as u32 },
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
        }
    }
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has an empty parent.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Opens the root directory of a capture or restore, creating it if asked.
pub fn open_root(dir: &Path, create: bool) -> SnapshotResult<OwnedFd> {
    let shown = dir.as_os_str().as_bytes();
    if create {
        std::fs::create_dir_all(dir).map_err(|e| SnapshotError::io("creating", shown, e))?;
    }
    rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| SnapshotError::io("opening directory", shown, e))
}

/// Opens directory `rel` beneath `root`. The kernel refuses any symlink on
/// the way and any escape from `root` (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`), so what was checked is what is opened.
pub fn open_dir_beneath(root: &OwnedFd, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    openat2(root, rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
}

/// Opens a file beneath `root` (see [`open_dir_beneath`]).
pub fn openat2(root: &impl AsFd, rel: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(root, os(rel), flags | OFlags::CLOEXEC, mode, ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS)
}

pub fn lstat_at(dir: &impl AsFd, name: &[u8]) -> Result<Meta, Errno> {
    rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW).map(|s| Meta::from(&s))
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(dir: &impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`, recursively if it is a directory, without
/// following symlinks anywhere.
pub fn remove_at(dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, os(name), AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let sub = rustix::fs::openat(dir, os(name), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
            // A directory without write permission cannot be emptied.
            let _ = rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700));
            for child in list_dir(&sub)? {
                remove_at(&sub, &child)?;
            }
            rustix::fs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)
        }
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn timespec(t: Timestamp) -> rustix::fs::Timespec {
    rustix::fs::Timespec { tv_sec: t.secs as _, tv_nsec: t.nanos as _ }
}

/// Sets owner, mode and mtime of `name` in `dir` without following it.
/// Mode is skipped for symlinks (Linux has no symlink permissions).
pub fn set_meta_at(dir: &OwnedFd, name: &[u8], is_symlink: bool, mode: u32, owner: Option<(u32, u32)>, mtime: Timestamp) -> Result<(), Errno> {
    if let Some((uid, gid)) = owner {
        rustix::fs::chownat(dir, os(name), Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    if !is_symlink {
        // chmod after chown: chown clears set-uid/set-gid bits.
        rustix::fs::chmodat(dir, os(name), Mode::from_raw_mode(mode as _), AtFlags::empty())?;
    }
    let ts = rustix::fs::Timestamps { last_access: timespec(mtime), last_modification: timespec(mtime) };
    rustix::fs::utimensat(dir, os(name), &ts, AtFlags::SYMLINK_NOFOLLOW)
}

/// Whether this process may set arbitrary owners (restoring uid/gid
/// exactly needs root or CAP_CHOWN).
pub fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}
