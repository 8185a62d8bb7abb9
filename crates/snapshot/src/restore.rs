//! Restore: a snapshot into a directory, writing only what differs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::StreamExt;
use rayon::prelude::*;
use rbk_store::{ByteRange, Digest, Hasher, Store};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::capture::{Found, blocking, walk};
use crate::error::{SnapshotError, SnapshotResult};
use crate::filter::IncludeAll;
use crate::fsutil::{self, Kind, os, split_parent};
use crate::manifest::{Codec, Entry, EntryKind, FileContent};
use crate::pack::decode_chunk;
use crate::statcache::{StatCache, StatKey};
use crate::{Manifest, Snapshot};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target's stat cache (outside the target): lets an incremental
    /// restore skip files it can prove unchanged without reading them, and
    /// lets the next capture skip reading what restore wrote.
    pub stat_cache: Option<PathBuf>,
    /// Ranged GETs in flight at once.
    pub concurrency: usize,
    /// Restore uid/gid (needs root); by default when running as root.
    pub owner: bool,
    /// Neighbouring chunk ranges closer than this are fetched in one GET.
    pub coalesce_gap: u64,
    /// Largest single ranged GET.
    pub max_get: u64,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self { stat_cache: None, concurrency: 16, owner: fsutil::can_chown(), coalesce_gap: 256 << 10, max_get: 8 << 20 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    pub files_written: usize,
    /// Content bytes of the files written.
    pub bytes_written: u64,
    /// Bytes read from the store (compressed, including coalesced gaps).
    pub bytes_fetched: u64,
    pub gets: usize,
    pub unchanged: usize,
    pub removed: usize,
}

/// Makes `dir` hold exactly `snapshot`: missing entries are created, entries
/// not in the snapshot removed, differing files rewritten, metadata fixed.
///
/// Everything is opened relative to `dir`'s descriptor with symlinks
/// refused (`openat2` `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `*at` calls
/// with `AT_SYMLINK_NOFOLLOW`), so neither a hostile manifest nor a symlink
/// already in `dir` can make restore touch anything outside it. Files are
/// written to a temporary name and renamed into place once complete and
/// verified; an interrupted restore leaves temporaries and stale files that
/// the next restore removes or rewrites.
pub async fn restore(store: Arc<dyn Store>, snapshot: &Snapshot, dir: &Path, opts: &RestoreOptions) -> SnapshotResult<RestoreStats> {
    let manifest = snapshot.manifest.clone();
    manifest.validate()?;
    let root = Arc::new(fsutil::open_root(dir, true)?);
    let existing: HashMap<Vec<u8>, Found> = {
        let root = root.clone();
        blocking(move || walk(&root, &IncludeAll)).await??.into_iter().map(|f| (f.path.clone(), f)).collect()
    };

    // What the stat cache proves about files already there.
    let cache = opts.stat_cache.as_deref().map(StatCache::load).unwrap_or_default();
    let cached_manifest: Option<Arc<Manifest>> = match cache.snapshot {
        Some(d) if d == snapshot.digest => Some(manifest.clone()),
        Some(d) => Snapshot::load(&*store, d).await.ok().map(|s| s.manifest),
        None => None,
    };

    let mut stats = RestoreStats::default();
    let mut remove: Vec<Vec<u8>> = Vec::new();
    let mut keep_file: HashSet<usize> = HashSet::new();
    let mut to_hash: Vec<usize> = Vec::new();
    for (i, e) in manifest.entries.iter().enumerate() {
        let Some(have) = existing.get(&e.path) else { continue };
        let same_kind = match (&e.kind, have.meta.kind) {
            (EntryKind::Dir, Kind::Dir) => true,
            (EntryKind::Symlink(t), Kind::Symlink) => have.link.as_deref() == Some(t.as_slice()),
            (EntryKind::File(c), Kind::File) => {
                if have.meta.size == c.digest.size() {
                    let proven = cached_manifest.as_ref().is_some_and(|m| {
                        matches!(m.get(&e.path).map(|x| &x.kind), Some(EntryKind::File(old)) if old.digest == c.digest)
                            && cache.unchanged(&cache.snapshot.expect("cached manifest implies a snapshot"), &e.path, &have.meta)
                    });
                    if proven { keep_file.insert(i); } else { to_hash.push(i); }
                }
                true
            }
            (EntryKind::Hardlink(_), Kind::File) => true,
            _ => false,
        };
        if !same_kind {
            remove.push(e.path.clone());
        }
    }
    // Files of the right size but unknown content: hash them locally, which
    // is far cheaper than fetching them.
    {
        let (root, m, hash) = (root.clone(), manifest.clone(), to_hash);
        let equal: Vec<usize> = blocking(move || {
            hash.into_par_iter()
                .filter(|&i| match &m.entries[i].kind {
                    EntryKind::File(c) => local_digest(&root, &m.entries[i].path).is_some_and(|d| d == c.digest),
                    _ => false,
                })
                .collect()
        })
        .await?;
        keep_file.extend(equal);
    }
    for (path, _) in existing.iter() {
        if manifest.get(path).is_none() {
            remove.push(path.clone());
        }
    }
    remove.sort();
    let removed_count = {
        let root = root.clone();
        blocking(move || -> SnapshotResult<usize> {
            let mut last: Option<Vec<u8>> = None;
            let mut n = 0;
            for p in remove {
                if last.as_ref().is_some_and(|l| p.starts_with(l) && p.get(l.len()) == Some(&b'/')) {
                    continue; // already gone with its parent
                }
                let (parent, name) = split_parent(&p);
                let pfd = match fsutil::open_dir_beneath(&root, parent) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(SnapshotError::io("opening parent of", &p, e)),
                };
                fsutil::remove_at(&pfd, name).map_err(|e| SnapshotError::io("removing", &p, e))?;
                n += 1;
                last = Some(p);
            }
            Ok(n)
        })
        .await??
    };
    stats.removed = removed_count;

    let dirs = Arc::new(DirCache { root: root.clone(), fds: Mutex::new(HashMap::new()) });
    // Directories, parents first (a prefix sorts before its extensions).
    {
        let (dirs, m, existing_dirs) = (dirs.clone(), manifest.clone(), existing_dirs(&existing));
        blocking(move || -> SnapshotResult<()> {
            for e in m.entries.iter().filter(|e| e.is_dir()) {
                if existing_dirs.contains(&e.path) {
                    continue;
                }
                let (parent, name) = split_parent(&e.path);
                let pfd = dirs.get(parent)?;
                match rustix::fs::mkdirat(&*pfd, os(name), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e2) => return Err(SnapshotError::io("creating directory", &e.path, e2)),
                }
            }
            Ok(())
        })
        .await??;
    }

    // Files: fetch what is not already there.
    let writes: Vec<usize> = manifest
        .entries
        .iter()
        .enumerate()
        .filter(|(i, e)| matches!(e.kind, EntryKind::File(_)) && !keep_file.contains(i))
        .map(|(i, _)| i)
        .collect();
    stats.unchanged = keep_file.len();
    stats.files_written = writes.len();
    stats.bytes_written = writes.iter().map(|&i| manifest.entries[i].size()).sum();
    let (fetched, gets) = write_files(store, manifest.clone(), dirs.clone(), writes, opts).await?;
    stats.bytes_fetched = fetched;
    stats.gets = gets;

    // Links, metadata of kept files, directory metadata deepest first.
    {
        let (dirs, m, owner) = (dirs.clone(), manifest.clone(), opts.owner);
        let existing = Arc::new(existing);
        blocking(move || finish_tree(&dirs, &m, &existing, &keep_file, owner)).await??;
    }

    if let Some(path) = &opts.stat_cache {
        let (root, m) = (root.clone(), manifest.clone());
        let files: HashMap<Vec<u8>, StatKey> = blocking(move || {
            m.entries
                .par_iter()
                .filter(|e| matches!(e.kind, EntryKind::File(_)))
                .filter_map(|e| {
                    let (parent, name) = split_parent(&e.path);
                    let pfd = fsutil::open_dir_beneath(&root, parent).ok()?;
                    let meta = fsutil::lstat_at(&pfd, name).ok()?;
                    Some((e.path.clone(), StatKey::from(&meta)))
                })
                .collect()
        })
        .await?;
        let cache = StatCache { snapshot: Some(snapshot.digest), files };
        if let Err(e) = cache.save(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the stat cache");
        }
    }
    Ok(stats)
}

fn existing_dirs(existing: &HashMap<Vec<u8>, Found>) -> HashSet<Vec<u8>> {
    existing.values().filter(|f| f.meta.kind == Kind::Dir).map(|f| f.path.clone()).collect()
}

fn local_digest(root: &OwnedFd, path: &[u8]) -> Option<Digest> {
    let fd = fsutil::openat2(root, path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).ok()?;
    let mut file = std::fs::File::from(fd);
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut file, &mut buf) {
            Ok(0) => return Some(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Open directory descriptors by relative path, opened beneath the root
/// with symlinks refused.
struct DirCache {
    root: Arc<OwnedFd>,
    fds: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
}

impl DirCache {
    fn get(&self, rel: &[u8]) -> SnapshotResult<Arc<OwnedFd>> {
        if let Some(fd) = self.fds.lock().expect("dir cache").get(rel) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(fsutil::open_dir_beneath(&self.root, rel).map_err(|e| SnapshotError::io("opening directory", rel, e))?);
        self.fds.lock().expect("dir cache").insert(rel.to_vec(), fd.clone());
        Ok(fd)
    }
}

/// A file being written under a temporary name.
struct Slot {
    entry: usize,
    tmp: Vec<u8>,
    remaining: AtomicUsize,
}

/// One chunk to cut out of a fetched range, and where its bytes go.
struct Piece {
    offset: u64,
    stored_len: u64,
    codec: Codec,
    digest: Digest,
    /// (slot, offset in file)
    targets: Vec<(usize, u64)>,
}

struct Segment {
    pack: Digest,
    start: u64,
    end: u64,
    pieces: Vec<Piece>,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Completed chunk bytes handed to the blocking pool at once.
const READY_BATCH: u64 = 2 << 20;

async fn write_files(
    store: Arc<dyn Store>,
    m: Arc<Manifest>,
    dirs: Arc<DirCache>,
    writes: Vec<usize>,
    opts: &RestoreOptions,
) -> SnapshotResult<(u64, usize)> {
    let nonce = rand_nonce();
    let slots: Arc<Vec<Slot>> = Arc::new(
        writes
            .iter()
            .map(|&i| {
                let n = match &m.entries[i].kind {
                    EntryKind::File(c) => c.chunks.len(),
                    _ => 0,
                };
                let tmp = format!(".rbk-tmp-{nonce:x}-{}", TMP_SEQ.fetch_add(1, Ordering::Relaxed)).into_bytes();
                Slot { entry: i, tmp, remaining: AtomicUsize::new(n) }
            })
            .collect(),
    );
    // Create every temporary file (empty files are complete at once).
    {
        let (slots, dirs, m, owner) = (slots.clone(), dirs.clone(), m.clone(), opts.owner);
        blocking(move || -> SnapshotResult<()> {
            slots.par_iter().try_for_each(|s| {
                let e = &m.entries[s.entry];
                let pfd = dirs.get(split_parent(&e.path).0)?;
                let fd = rustix::fs::openat(&*pfd, os(&s.tmp), OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
                    .map_err(|err| SnapshotError::io("creating", &e.path, err))?;
                drop(fd);
                if s.remaining.load(Ordering::Relaxed) == 0 {
                    finish_file(&dirs, &m, s, owner)?;
                }
                Ok(())
            })
        })
        .await??;
    }

    // Plan ranged reads: per pack, the needed chunks by offset, neighbours
    // coalesced into one GET.
    let mut by_pack: BTreeMap<Digest, BTreeMap<u64, Piece>> = BTreeMap::new();
    for (si, s) in slots.iter().enumerate() {
        let EntryKind::File(FileContent { chunks, .. }) = &m.entries[s.entry].kind else { continue };
        let mut file_off = 0;
        for c in chunks {
            let p = by_pack.entry(c.pack).or_default().entry(c.offset).or_insert_with(|| Piece {
                offset: c.offset,
                stored_len: c.stored_len,
                codec: c.codec,
                digest: c.digest,
                targets: Vec::new(),
            });
            if p.stored_len != c.stored_len || p.codec != c.codec || p.digest != c.digest {
                return Err(SnapshotError::bad(Some(&m.entries[s.entry].path), format!("chunk at {}+{} of pack {} is described two ways", c.offset, c.stored_len, c.pack)));
            }
            p.targets.push((si, file_off));
            file_off += c.digest.size();
        }
    }
    let mut segments = Vec::new();
    for (pack, pieces) in by_pack {
        let mut cur: Option<Segment> = None;
        for (_, p) in pieces {
            let end = p.offset + p.stored_len;
            match &mut cur {
                Some(s) if p.offset <= s.end + opts.coalesce_gap && end.max(s.end) - s.start <= opts.max_get => {
                    s.end = s.end.max(end);
                    s.pieces.push(p);
                }
                _ => {
                    if let Some(s) = cur.take() {
                        segments.push(s);
                    }
                    cur = Some(Segment { pack, start: p.offset, end, pieces: vec![p] });
                }
            }
        }
        segments.extend(cur);
    }
    let gets = segments.len();
    let fetched: u64 = segments.iter().map(|s| s.end - s.start).sum();

    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for seg in segments {
        let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| SnapshotError::Task(e.to_string()))??;
        }
        let (store, m, dirs, slots, owner) = (store.clone(), m.clone(), dirs.clone(), slots.clone(), opts.owner);
        tasks.spawn(async move {
            let _permit = permit;
            fetch_segment(&*store, seg, m, dirs, slots, owner).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| SnapshotError::Task(e.to_string()))??;
    }
    Ok((fetched, gets))
}

fn rand_nonce() -> u64 {
    let t = crate::manifest::now_unix_ns() as u64;
    t ^ (std::process::id() as u64).rotate_left(32)
}

/// Fetches one range of a pack and writes each chunk as soon as its bytes
/// have all arrived, verified against its digest.
async fn fetch_segment(store: &dyn Store, seg: Segment, m: Arc<Manifest>, dirs: Arc<DirCache>, slots: Arc<Vec<Slot>>, owner: bool) -> SnapshotResult<()> {
    let mut stream = store.get(seg.pack, ByteRange::new(seg.start, seg.end - seg.start)).await?;
    let mut buf = BytesMut::with_capacity((seg.end - seg.start) as usize);
    let mut pieces = seg.pieces.into_iter().peekable();
    let mut ready = Vec::new();
    let mut ready_bytes = 0u64;
    loop {
        let item = stream.next().await;
        let done = item.is_none();
        if let Some(bytes) = item {
            buf.extend_from_slice(&bytes?);
        }
        let have = seg.start + buf.len() as u64;
        while let Some(p) = pieces.peek() {
            if p.offset + p.stored_len > have {
                break;
            }
            let p = pieces.next().expect("peeked");
            let rel = (p.offset - seg.start) as usize;
            ready_bytes += p.stored_len;
            ready.push((bytes::Bytes::copy_from_slice(&buf[rel..rel + p.stored_len as usize]), p));
        }
        // Hand completed chunks to the blocking pool in batches: one round
        // trip per small file costs more than writing it.
        if !ready.is_empty() && (done || ready_bytes >= READY_BATCH) {
            ready_bytes = 0;
            let batch = std::mem::take(&mut ready);
            let (m, dirs, slots, pack) = (m.clone(), dirs.clone(), slots.clone(), seg.pack);
            blocking(move || -> SnapshotResult<()> {
                for (stored, p) in batch {
                    let path = &m.entries[slots[p.targets[0].0].entry].path;
                    let data = decode_chunk(p.codec, &stored, &p.digest).map_err(|what| SnapshotError::CorruptContent {
                        path: crate::error::show(path),
                        expected: p.digest,
                        pack,
                        what,
                    })?;
                    for &(si, off) in &p.targets {
                        let s = &slots[si];
                        let e = &m.entries[s.entry];
                        let pfd = dirs.get(split_parent(&e.path).0)?;
                        let fd = rustix::fs::openat(&*pfd, os(&s.tmp), OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                            .map_err(|err| SnapshotError::io("opening", &e.path, err))?;
                        std::fs::File::from(fd).write_all_at(&data, off).map_err(|err| SnapshotError::io("writing", &e.path, err))?;
                        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                            finish_file(&dirs, &m, s, owner)?;
                        }
                    }
                }
                Ok(())
            })
            .await??;
        }
        if done {
            break;
        }
    }
    if let Some(p) = pieces.next() {
        return Err(SnapshotError::CorruptContent {
            path: crate::error::show(&m.entries[slots[p.targets[0].0].entry].path),
            expected: p.digest,
            pack: seg.pack,
            what: format!("pack ended before byte {}", p.offset + p.stored_len),
        });
    }
    Ok(())
}

/// A file's last chunk has landed: check the whole (for multi-chunk files),
/// set its metadata and move it into place.
fn finish_file(dirs: &DirCache, m: &Manifest, s: &Slot, owner: bool) -> SnapshotResult<()> {
    let e = &m.entries[s.entry];
    let EntryKind::File(c) = &e.kind else { return Ok(()) };
    let pfd = dirs.get(split_parent(&e.path).0)?;
    let name = split_parent(&e.path).1;
    let fd = rustix::fs::openat(&*pfd, os(&s.tmp), OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(|err| SnapshotError::io("opening", &e.path, err))?;
    if c.chunks.len() > 1 {
        let file = std::fs::File::from(fd.try_clone().map_err(|err| SnapshotError::io("opening", &e.path, err))?);
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = file.read_at(&mut buf, off).map_err(|err| SnapshotError::io("reading back", &e.path, err))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        if h.finish() != c.digest {
            return Err(SnapshotError::CorruptContent {
                path: crate::error::show(&e.path),
                expected: c.digest,
                pack: c.chunks[0].pack,
                what: format!("the file's chunks hash to {}, not to the file digest", h.finish()),
            });
        }
    }
    set_fd_meta(&fd, e, owner).map_err(|err| SnapshotError::io("setting metadata of", &e.path, err))?;
    drop(fd);
    rustix::fs::renameat(&*pfd, os(&s.tmp), &*pfd, os(name)).map_err(|err| SnapshotError::io("moving into place", &e.path, err))
}

fn set_fd_meta(fd: &OwnedFd, e: &Entry, owner: bool) -> Result<(), Errno> {
    if owner {
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(e.uid)), Some(rustix::fs::Gid::from_raw(e.gid)))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode as _))?;
    let t = fsutil::timespec(e.mtime);
    rustix::fs::futimens(fd, &rustix::fs::Timestamps { last_access: t, last_modification: t })
}

/// Symlinks, hard links, metadata of entries kept as they were, and
/// directory metadata last (deepest first, so a read-only directory is
/// made read-only only after everything inside it is written).
fn finish_tree(dirs: &DirCache, m: &Manifest, existing: &HashMap<Vec<u8>, Found>, kept_files: &HashSet<usize>, owner: bool) -> SnapshotResult<()> {
    let owner_of = |e: &Entry| owner.then_some((e.uid, e.gid));
    for (i, e) in m.entries.iter().enumerate() {
        let (parent, name) = split_parent(&e.path);
        match &e.kind {
            EntryKind::Symlink(target) => {
                let pfd = dirs.get(parent)?;
                let had = existing.get(&e.path).is_some_and(|f| f.meta.kind == Kind::Symlink && f.link.as_deref() == Some(target.as_slice()));
                if !had {
                    rustix::fs::symlinkat(os(target), &*pfd, os(name)).map_err(|err| SnapshotError::io("creating symlink", &e.path, err))?;
                }
                let meta = fsutil::lstat_at(&*pfd, name).map_err(|err| SnapshotError::io("stat", &e.path, err))?;
                if !had || meta.mtime != e.mtime || (owner && (meta.uid, meta.gid) != (e.uid, e.gid)) {
                    fsutil::set_meta_at(&pfd, name, true, e.mode, owner_of(e), e.mtime).map_err(|err| SnapshotError::io("setting metadata of", &e.path, err))?;
                }
            }
            EntryKind::Hardlink(target) => {
                let pfd = dirs.get(parent)?;
                let (tparent, tname) = split_parent(target);
                let tfd = dirs.get(tparent)?;
                let want = fsutil::lstat_at(&*tfd, tname).map_err(|err| SnapshotError::io("stat", target, err))?;
                match fsutil::lstat_at(&*pfd, name) {
                    Ok(have) if have.ino == want.ino && have.dev == want.dev => continue,
                    Ok(_) => fsutil::remove_at(&pfd, name).map_err(|err| SnapshotError::io("removing", &e.path, err))?,
                    Err(Errno::NOENT) => {}
                    Err(err) => return Err(SnapshotError::io("stat", &e.path, err)),
                }
                rustix::fs::linkat(&*tfd, os(tname), &*pfd, os(name), AtFlags::empty()).map_err(|err| SnapshotError::io("creating hard link", &e.path, err))?;
            }
            EntryKind::File(_) if kept_files.contains(&i) => {
                let have = &existing[&e.path].meta;
                if have.mode != e.mode || have.mtime != e.mtime || (owner && (have.uid, have.gid) != (e.uid, e.gid)) {
                    let pfd = dirs.get(parent)?;
                    fsutil::set_meta_at(&pfd, name, false, e.mode, owner_of(e), e.mtime).map_err(|err| SnapshotError::io("setting metadata of", &e.path, err))?;
                }
            }
            _ => {}
        }
    }
    for e in m.entries.iter().rev().filter(|e| e.is_dir()) {
        let (parent, name) = split_parent(&e.path);
        let pfd = dirs.get(parent)?;
        fsutil::set_meta_at(&pfd, name, false, e.mode, owner_of(e), e.mtime).map_err(|err| SnapshotError::io("setting metadata of", &e.path, err))?;
    }
    Ok(())
}
