use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::{ImageError, OciDigest, Result, Sha256Reader};

/// Limits and permissions for [`unpack_layer`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Allow character and block device entries (privileged builds only:
    /// a device node in a layer is a way out of the container).
    pub privileged: bool,
    /// Refuse layers that inflate beyond this many bytes — of tar stream,
    /// and separately of file contents written (sparse entries inflate on
    /// disk) — to stop decompression bombs. Default 64 GiB.
    pub max_uncompressed_bytes: u64,
    /// Refuse layers with more entries than this. Default 10 million.
    pub max_entries: u64,
    /// Apply the uid/gid recorded in the tar (needs root); otherwise files
    /// belong to the unpacking user.
    pub preserve_ownership: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { privileged: false, max_uncompressed_bytes: 64 << 30, max_entries: 10_000_000, preserve_ownership: true }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of uncompressed tar read.
    pub tar_bytes: u64,
    /// sha256 of the uncompressed tar: compare with the config's diff_id.
    pub diff_id: OciDigest,
}

/// Unpacks a layer (gzip, zstd or plain tar, detected from its first bytes)
/// into `dest`, which must exist, turning OCI whiteouts into overlayfs ones
/// (`.wh.x` → character device 0:0 named `x`; `.wh..wh..opq` →
/// `trusted.overlay.opaque=y` on the directory) so `dest` can serve as an
/// overlayfs lower directory.
///
/// Hostile input is refused with [`ImageError::HostileEntry`] naming the
/// entry: absolute paths, `..`, paths through symlinks, hard links whose
/// target is outside the layer, device nodes unless `privileged`; and
/// [`ImageError::TooLarge`] past `max_uncompressed_bytes`. Every file is
/// created relative to a directory file descriptor, never following a
/// symlink, so nothing can be written outside `dest`. On error `dest` holds
/// a partial tree: callers unpack into a scratch directory and rename it
/// into place on success.
pub fn unpack_layer(reader: impl Read, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let root = rustix::fs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ImageError::io(format!("opening layer directory {}", dest.display()), e.into()))?;
    let decompressed = crate::decompress(reader).map_err(|e| ImageError::io("reading the layer's first bytes", e))?;
    let exceeded = Rc::new(Cell::new(false));
    let limited = Limit { inner: decompressed, left: opts.max_uncompressed_bytes, exceeded: exceeded.clone() };
    let mut archive = tar::Archive::new(Sha256Reader::new(limited));
    let mut u = Unpacker { root, opts, last_entry: String::from("(start of layer)"), entries: 0, written: 0, dirs: Vec::new(), buf: vec![0; 256 * 1024], parent_cache: RefCell::new(None) };
    let too_large = |entry: &str| ImageError::TooLarge { entry: entry.to_owned(), limit: opts.max_uncompressed_bytes };
    {
        let entries = archive.entries().map_err(|e| ImageError::io("reading the layer tar", e))?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(_) if exceeded.get() => return Err(too_large(&u.last_entry)),
                Err(e) => return Err(ImageError::io(format!("reading the layer tar after entry {:?}", u.last_entry), e)),
            };
            match u.entry(entry) {
                Err(ImageError::Io { .. }) if exceeded.get() => return Err(too_large(&u.last_entry)),
                r => r?,
            }
        }
    }
    u.finish_dirs()?;
    // Read the tar's trailing blocks so the digest covers the whole stream.
    let mut hashing = archive.into_inner();
    match io::copy(&mut hashing, &mut io::sink()) {
        Err(_) if exceeded.get() => return Err(too_large(&u.last_entry)),
        r => r.map_err(|e| ImageError::io("reading the end of the layer tar", e))?,
    };
    let (diff_id, tar_bytes) = hashing.finish();
    Ok(UnpackStats { entries: u.entries, tar_bytes, diff_id })
}

/// [`unpack_layer`] from a blob file.
pub fn unpack_layer_file(blob: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let f = File::open(blob).map_err(|e| ImageError::io(format!("opening layer {}", blob.display()), e))?;
    unpack_layer(f, dest, opts).map_err(|e| match e {
        ImageError::Io { context, source } => ImageError::Io { context: format!("unpacking {}: {context}", blob.display()), source },
        e => e,
    })
}

/// Stops reading after `left` bytes, remembering that it did so the caller
/// can tell a bomb from a broken stream.
struct Limit<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::other("layer exceeds the size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A parent directory's path components and its open descriptor.
type CachedParent = (Vec<Vec<u8>>, Rc<OwnedFd>);

struct Unpacker<'a> {
    root: OwnedFd,
    opts: &'a UnpackOptions,
    last_entry: String,
    entries: u64,
    written: u64,
    /// Directories whose mtime is set at the end (creating entries inside a
    /// directory changes its mtime).
    dirs: Vec<(Vec<Vec<u8>>, i64)>,
    buf: Vec<u8>,
    /// The last parent directory opened (its components and descriptor):
    /// tar entries come grouped by directory, so most entries reuse it
    /// instead of opening every component from the root again (that walk
    /// was half of a base layer's system calls). Dropped whenever an entry
    /// removes anything, since a removal can take a directory on its path.
    parent_cache: RefCell<Option<CachedParent>>,
}

fn errno(context: impl FnOnce() -> String) -> impl FnOnce(Errno) -> ImageError {
    move |e| ImageError::io(context(), e.into())
}

/// Splits a tar path into components, refusing absolute paths and `..`.
fn components(raw: &[u8], entry: &str, what: &str) -> Result<Vec<Vec<u8>>> {
    if raw.first() == Some(&b'/') {
        return Err(ImageError::hostile(entry, format!("{what} is an absolute path")));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ImageError::hostile(entry, format!("{what} contains '..'"))),
            c if c.contains(&0) => return Err(ImageError::hostile(entry, format!("{what} contains a NUL byte"))),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        self.last_entry = name.clone();
        self.entries += 1;
        if self.entries > self.opts.max_entries {
            return Err(ImageError::hostile(&name, format!("layer has more than {} entries", self.opts.max_entries)));
        }
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink) {
            return Ok(());
        }
        let comps = components(&raw_path, &name, "path")?;
        let Some((base, parents)) = comps.split_last() else {
            // The root itself ("./"): only its metadata could change; a layer
            // may not change the root's, so it is skipped like docker does.
            return Ok(());
        };
        let header = entry.header();
        let mode = header.mode().map_err(|e| ImageError::io(format!("layer entry {name:?}: mode"), e))? & 0o7777;
        // An empty owner field means root, as GNU tar reads it.
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0) as i64;
        let parent = self.open_parent(parents, &name)?;

        // Whiteouts.
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            if base == b".wh..wh..opq" {
                rustix::fs::fsetxattr(&parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                    .map_err(errno(|| format!("layer entry {name:?}: marking the directory opaque")))?;
            } else if !hidden.starts_with(b".wh.") {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(ImageError::hostile(&name, "whiteout must name an entry, not '', '.' or '..'"));
                }
                self.remove_existing(&parent, hidden, false, &name)?;
                rustix::fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
                    .map_err(errno(|| format!("layer entry {name:?}: creating the overlay whiteout")))?;
            }
            // Other `.wh..wh.*` names are aufs bookkeeping: nothing to do.
            return Ok(());
        }

        let xattrs = pax_xattrs(&mut entry, &name)?;
        match kind {
            tar::EntryType::Directory => {
                let existed = self.remove_existing(&parent, base, true, &name)?;
                if !existed {
                    rustix::fs::mkdirat(&parent, base.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(errno(|| format!("layer entry {name:?}: mkdir")))?;
                }
                let dir = rustix::fs::openat(&parent, base.as_slice(), OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(errno(|| format!("layer entry {name:?}: opening the directory")))?;
                self.set_meta_fd(&dir, uid, gid, mode, &xattrs, None, &name)?;
                self.dirs.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove_existing(&parent, base, false, &name)?;
                let fd = rustix::fs::openat(
                    &parent,
                    base.as_slice(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(errno(|| format!("layer entry {name:?}: creating the file")))?;
                let mut file = File::from(fd);
                self.copy_contents(&mut entry, &mut file, &name)?;
                self.set_meta_fd(&file, uid, gid, mode, &xattrs, Some(mtime), &name)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| ImageError::hostile(&name, "symlink without a target"))?.into_owned();
                self.remove_existing(&parent, base, false, &name)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, base.as_slice()).map_err(errno(|| format!("layer entry {name:?}: symlink")))?;
                if self.opts.preserve_ownership {
                    rustix::fs::chownat(&parent, base.as_slice(), Some(uid_of(uid)), Some(gid_of(gid)), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(errno(|| format!("layer entry {name:?}: chown")))?;
                }
                let ts = timestamps(mtime);
                rustix::fs::utimensat(&parent, base.as_slice(), &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno(|| format!("layer entry {name:?}: setting mtime")))?;
            }
            tar::EntryType::Link => {
                let raw_target = entry.link_name_bytes().ok_or_else(|| ImageError::hostile(&name, "hard link without a target"))?.into_owned();
                let tcomps = components(&raw_target, &name, "hard link target")
                    .map_err(|_| ImageError::hostile(&name, format!("hard link target {:?} is outside the layer", String::from_utf8_lossy(&raw_target))))?;
                let Some((tbase, tparents)) = tcomps.split_last() else {
                    return Err(ImageError::hostile(&name, "hard link to the layer root"));
                };
                let tparent = self.open_existing_dir(tparents, &name)?;
                match rustix::fs::statat(&tparent, tbase.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        return Err(ImageError::hostile(&name, "hard link to a directory"));
                    }
                    Ok(_) => {}
                    Err(Errno::NOENT) => {
                        return Err(ImageError::hostile(&name, format!("hard link target {:?} is not in this layer", String::from_utf8_lossy(&raw_target))));
                    }
                    Err(e) => return Err(errno(|| format!("layer entry {name:?}: stat of the hard link target"))(e)),
                }
                if tcomps == comps {
                    return Ok(());
                }
                self.remove_existing(&parent, base, false, &name)?;
                rustix::fs::linkat(&tparent, tbase.as_slice(), &parent, base.as_slice(), AtFlags::empty())
                    .map_err(errno(|| format!("layer entry {name:?}: hard link")))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.opts.privileged {
                    let what = if ft == FileType::CharacterDevice { "character" } else { "block" };
                    return Err(ImageError::hostile(
                        &name,
                        format!("{what} device node {major}:{minor} refused (device nodes are allowed only for privileged builds)"),
                    ));
                }
                self.remove_existing(&parent, base, false, &name)?;
                rustix::fs::mknodat(&parent, base.as_slice(), ft, Mode::from_raw_mode(mode), rustix::fs::makedev(major, minor))
                    .map_err(errno(|| format!("layer entry {name:?}: mknod")))?;
                if self.opts.preserve_ownership {
                    rustix::fs::chownat(&parent, base.as_slice(), Some(uid_of(uid)), Some(gid_of(gid)), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(errno(|| format!("layer entry {name:?}: chown")))?;
                }
                rustix::fs::chmodat(&parent, base.as_slice(), Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(errno(|| format!("layer entry {name:?}: chmod")))?;
                rustix::fs::utimensat(&parent, base.as_slice(), &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno(|| format!("layer entry {name:?}: setting mtime")))?;
            }
            other => {
                return Err(ImageError::hostile(&name, format!("unsupported tar entry type {other:?}")));
            }
        }
        Ok(())
    }

    fn copy_contents<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, file: &mut File, name: &str) -> Result<()> {
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io(format!("layer entry {name:?}: reading contents"), e)),
            };
            self.written += n as u64;
            if self.written > self.opts.max_uncompressed_bytes {
                return Err(ImageError::TooLarge { entry: name.to_owned(), limit: self.opts.max_uncompressed_bytes });
            }
            file.write_all(&self.buf[..n]).map_err(|e| ImageError::io(format!("layer entry {name:?}: writing contents"), e))?;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn set_meta_fd(&self, fd: impl AsFd, uid: u64, gid: u64, mode: u32, xattrs: &[(String, Vec<u8>)], mtime: Option<i64>, name: &str) -> Result<()> {
        let fd = fd.as_fd();
        if self.opts.preserve_ownership {
            rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid))).map_err(errno(|| format!("layer entry {name:?}: chown")))?;
        }
        // After chown, which clears setuid/setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(errno(|| format!("layer entry {name:?}: chmod")))?;
        for (k, v) in xattrs {
            match rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                // A filesystem without xattr support loses them, as with docker.
                Err(Errno::NOTSUP) => tracing::debug!(entry = name, xattr = k.as_str(), "filesystem does not support xattrs"),
                r => r.map_err(errno(|| format!("layer entry {name:?}: setting xattr {k}")))?,
            }
        }
        if let Some(m) = mtime {
            rustix::fs::futimens(fd, &timestamps(m)).map_err(errno(|| format!("layer entry {name:?}: setting mtime")))?;
        }
        Ok(())
    }

    /// Opens the directory `parents` below the root, creating missing ones
    /// (the parent may live in a lower layer) and refusing symlinks.
    fn open_parent(&self, parents: &[Vec<u8>], name: &str) -> Result<Rc<OwnedFd>> {
        if let Some((comps, fd)) = &*self.parent_cache.borrow()
            && comps.as_slice() == parents
        {
            return Ok(fd.clone());
        }
        let fd = Rc::new(self.walk(parents, name, true)?);
        *self.parent_cache.borrow_mut() = Some((parents.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn open_existing_dir(&self, parents: &[Vec<u8>], name: &str) -> Result<OwnedFd> {
        self.walk(parents, name, false)
    }

    fn walk(&self, parents: &[Vec<u8>], name: &str, create: bool) -> Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut cur = rustix::fs::openat(&self.root, ".", flags, Mode::empty()).map_err(errno(|| "reopening the layer directory".to_owned()))?;
        for (i, c) in parents.iter().enumerate() {
            let shown = || String::from_utf8_lossy(&parents[..=i].join(&b'/')).into_owned();
            let next = match rustix::fs::openat(&cur, c.as_slice(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(|| format!("layer entry {name:?}: creating parent {}", shown()))(e)),
                    }
                    rustix::fs::openat(&cur, c.as_slice(), flags, Mode::empty()).map_err(errno(|| format!("layer entry {name:?}: opening parent {}", shown())))?
                }
                Err(Errno::NOENT) => {
                    return Err(ImageError::hostile(name, format!("{} does not exist in this layer", shown())));
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(errno(|| format!("layer entry {name:?}: stat of {}", shown())))?;
                    let why = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                        format!("path goes through the symlink {}", shown())
                    } else {
                        format!("path goes through {}, which is not a directory", shown())
                    };
                    return Err(ImageError::hostile(name, why));
                }
                Err(e) => return Err(errno(|| format!("layer entry {name:?}: opening parent {}", shown()))(e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Makes room for a new entry `base` in `parent`. Returns whether an
    /// existing directory was kept (when `keep_dir` and one is there).
    fn remove_existing(&self, parent: &OwnedFd, base: &[u8], keep_dir: bool, name: &str) -> Result<bool> {
        match rustix::fs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno(|| format!("layer entry {name:?}: stat"))(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(true);
                }
                self.parent_cache.borrow_mut().take();
                remove_tree_at(parent.as_fd(), base).map_err(errno(|| format!("layer entry {name:?}: replacing a directory")))?;
                Ok(false)
            }
            Ok(_) => {
                self.parent_cache.borrow_mut().take();
                rustix::fs::unlinkat(parent, base, AtFlags::empty()).map_err(errno(|| format!("layer entry {name:?}: replacing")))?;
                Ok(false)
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so setting a child's mtime cannot disturb its parent.
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (comps, mtime) in std::mem::take(&mut self.dirs) {
            let name = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            let (base, parents) = comps.split_last().expect("directories have a name");
            // A later entry may have replaced the directory; then skip it.
            let Ok(parent) = self.open_existing_dir(parents, &name) else { continue };
            let Ok(dir) = rustix::fs::openat(&parent, base.as_slice(), OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            else {
                continue;
            };
            rustix::fs::futimens(&dir, &timestamps(mtime)).map_err(errno(|| format!("layer entry {name:?}: setting mtime")))?;
        }
        Ok(())
    }
}

/// Removes `name` in `dir` and everything below it without following
/// symlinks.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let fd = rustix::fs::openat(dir, name, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut children = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((n.to_vec(), e.file_type()));
        }
    }
    for (n, ft) in children {
        if ft == FileType::Directory {
            remove_tree_at(fd.as_fd(), &n)?;
        } else {
            rustix::fs::unlinkat(&fd, n.as_slice(), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Extended attributes recorded for the entry (PAX `SCHILY.xattr.*`).
/// overlayfs' own are dropped: a layer must not steer the overlay mount.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(|e| ImageError::io(format!("layer entry {name:?}: PAX header"), e))? {
        for ext in exts {
            let ext = ext.map_err(|e| ImageError::io(format!("layer entry {name:?}: PAX header"), e))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                if x.starts_with("trusted.overlay.") || x.starts_with("user.overlay.") {
                    continue;
                }
                out.push((x.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn uid_of(id: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id as u32)
}

fn gid_of(id: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id as u32)
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = rustix::fs::Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}
