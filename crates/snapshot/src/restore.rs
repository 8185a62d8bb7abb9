//! Restore: a snapshot into a directory, writing only what differs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
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
use crate::pack::decode_chunk_into;
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
/// already in `dir` can make restore touch anything outside it. Every chunk
/// is verified against its digest before it is written. Into an empty
/// directory, files are created (`O_EXCL`) and written under their real
/// names; into a directory with content, under a temporary name renamed
/// into place once complete. Either way an interrupted restore leaves
/// partial files and temporaries that the next restore, which trusts only
/// size plus content (or a stat cache written by a *completed* restore),
/// rewrites or removes.
pub async fn restore(store: Arc<dyn Store>, snapshot: &Snapshot, dir: &Path, opts: &RestoreOptions) -> SnapshotResult<RestoreStats> {
    let manifest = snapshot.manifest.clone();
    let phases = Phases::start();
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

    // A cold restore (nothing in the target) writes every file straight
    // under its real name: no temporary, no rename. Until it completes, the
    // tree is not what the stat cache describes, so the cache goes first;
    // an interrupted cold restore then leaves files the next restore checks
    // by size and content, never by name (see `a_cold_restore_interrupted_
    // half_way_is_repaired_by_the_next`).
    let in_place = existing.is_empty();
    if in_place && let Some(path) = &opts.stat_cache {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SnapshotError::io("removing the stale stat cache", path.as_os_str().as_bytes(), e)),
        }
    }

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
    phases.done("compare with what is there");
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
    phases.done("remove");

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
    phases.done("directories");

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
    let (fetched, gets, written_stats) = write_files(store, manifest.clone(), dirs.clone(), writes, in_place, opts).await?;
    stats.bytes_fetched = fetched;
    stats.gets = gets;
    phases.done("fetch and write files");

    // Links, metadata of kept files, directory metadata deepest first.
    {
        let (dirs, m, owner) = (dirs.clone(), manifest.clone(), opts.owner);
        let existing = Arc::new(existing);
        blocking(move || finish_tree(&dirs, &m, &existing, &keep_file, owner)).await??;
    }
    phases.done("links and metadata");

    if let Some(path) = &opts.stat_cache {
        let (dirs, m) = (dirs.clone(), manifest.clone());
        // Files written in place had their stat taken when finished,
        // except those a hard link was made to since (that changed their
        // ctime); the rest are looked up now.
        let link_targets: HashSet<&[u8]> = manifest
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Hardlink(t) => Some(t.as_slice()),
                _ => None,
            })
            .collect();
        let taken: HashMap<usize, StatKey> = written_stats.into_iter().filter(|(i, _)| !link_targets.contains(manifest.entries[*i].path.as_slice())).collect();
        let files: HashMap<Vec<u8>, StatKey> = blocking(move || {
            m.entries
                .par_iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.kind, EntryKind::File(_)))
                .filter_map(|(i, e)| {
                    if let Some(k) = taken.get(&i) {
                        return Some((e.path.clone(), *k));
                    }
                    let (parent, name) = split_parent(&e.path);
                    let pfd = dirs.get(parent).ok()?;
                    let meta = fsutil::lstat_at(&*pfd, name).ok()?;
                    Some((e.path.clone(), StatKey::from(&meta)))
                })
                .collect()
        })
        .await?;
        let cache = StatCache { snapshot: Some(snapshot.digest), files };
        if let Err(e) = cache.save(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the stat cache");
        }
        phases.done("stat cache");
    }
    Ok(stats)
}

/// Time spent per restore phase, logged at debug level
/// (`RBK_LOG=rbk_snapshot=debug`): where a slow restore goes.
struct Phases(Mutex<std::time::Instant>);

impl Phases {
    fn start() -> Phases {
        Phases(Mutex::new(std::time::Instant::now()))
    }

    fn done(&self, phase: &str) {
        let mut t = self.0.lock().expect("phase clock");
        tracing::debug!(phase, ms = format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "restore phase");
        *t = std::time::Instant::now();
    }
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
        let fd = match fsutil::open_dir_beneath(&self.root, rel) {
            // A tree with more directories than the descriptor limit:
            // forget the cached ones (those in use stay open) and retry.
            Err(Errno::MFILE) => {
                self.fds.lock().expect("dir cache").clear();
                fsutil::open_dir_beneath(&self.root, rel)
            }
            r => r,
        };
        let fd = Arc::new(fd.map_err(|e| SnapshotError::io("opening directory", rel, e))?);
        self.fds.lock().expect("dir cache").insert(rel.to_vec(), fd.clone());
        Ok(fd)
    }
}

/// A file to write, and how far it has got.
struct Slot {
    entry: usize,
    /// The name the bytes are written under, in the file's directory: its
    /// own name in a cold restore, else a temporary renamed over it once
    /// the file is complete.
    name: Vec<u8>,
    in_place: bool,
    chunks: usize,
    remaining: AtomicUsize,
    /// Multi-chunk files: the whole-file hash, fed while chunks land in
    /// order (they almost always do: a file's chunks sit in one pack in
    /// order), so the file need not be read back to be checked.
    whole: Option<Mutex<WholeHash>>,
    /// The file's final stat, taken through its descriptor once written
    /// in place (a rename would change its ctime): the stat cache then
    /// needs no second pass over 20,000 paths.
    stat: std::sync::OnceLock<StatKey>,
}

struct WholeHash {
    hasher: Hasher,
    next: usize,
    in_order: bool,
}

/// One chunk to cut out of a fetched range, and where its bytes go.
struct Piece {
    offset: u64,
    stored_len: u64,
    codec: Codec,
    digest: Digest,
    /// (slot, offset in file, chunk index in file)
    targets: Vec<(usize, u64, usize)>,
}

struct Segment {
    pack: Digest,
    start: u64,
    end: u64,
    pieces: Vec<Piece>,
}

/// What the blocking writers share.
struct Writer {
    m: Arc<Manifest>,
    dirs: Arc<DirCache>,
    slots: Vec<Slot>,
    owner: bool,
    birth: Birth,
    /// Whether a stat cache is kept (then each file's stat is taken as
    /// it is finished).
    record_stats: bool,
    /// Set on the first failure: segments still fetching stop early.
    cancelled: std::sync::atomic::AtomicBool,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Inflated chunk bytes, reused by each writer thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Completed chunk bytes handed to the blocking pool at once.
const READY_BATCH: u64 = 2 << 20;

/// The ranged reads that fetch `writes` (entry indices of files), in
/// order: per pack, the needed chunks by offset, neighbours closer than
/// `coalesce_gap` merged into one GET of at most `max_get` bytes.
fn plan_segments(m: &Manifest, writes: &[usize], coalesce_gap: u64, max_get: u64) -> SnapshotResult<Vec<Segment>> {
    let mut by_pack: BTreeMap<Digest, BTreeMap<u64, Piece>> = BTreeMap::new();
    for (si, &i) in writes.iter().enumerate() {
        let EntryKind::File(FileContent { chunks, .. }) = &m.entries[i].kind else { continue };
        let mut file_off = 0;
        for (ci, c) in chunks.iter().enumerate() {
            let p = by_pack.entry(c.pack).or_default().entry(c.offset).or_insert_with(|| Piece {
                offset: c.offset,
                stored_len: c.stored_len,
                codec: c.codec,
                digest: c.digest,
                targets: Vec::new(),
            });
            if p.stored_len != c.stored_len || p.codec != c.codec || p.digest != c.digest {
                return Err(SnapshotError::bad(Some(&m.entries[i].path), format!("chunk at {}+{} of pack {} is described two ways", c.offset, c.stored_len, c.pack)));
            }
            p.targets.push((si, file_off, ci));
            file_off += c.digest.size();
        }
    }
    let mut segments = Vec::new();
    for (pack, pieces) in by_pack {
        let mut cur: Option<Segment> = None;
        for (_, p) in pieces {
            let end = p.offset + p.stored_len;
            match &mut cur {
                // Pieces of one segment never overlap (capture never makes
                // overlapping chunks; a hostile manifest may), so each can be
                // cut off the front of the buffer without a copy.
                Some(s) if p.offset >= s.end && p.offset <= s.end + coalesce_gap && end - s.start <= max_get => {
                    s.end = end;
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
    Ok(segments)
}

/// The ranged GETs (pack, range) a restore of `snapshot` into an empty
/// directory makes, in order. For benchmarks: the raw-GET baseline must
/// move the same bytes in the same requests to be comparable.
pub fn cold_restore_gets(snapshot: &Snapshot, opts: &RestoreOptions) -> SnapshotResult<Vec<(Digest, ByteRange)>> {
    let m = &snapshot.manifest;
    m.validate()?;
    let files: Vec<usize> = m.entries.iter().enumerate().filter(|(_, e)| matches!(e.kind, EntryKind::File(_))).map(|(i, _)| i).collect();
    Ok(plan_segments(m, &files, opts.coalesce_gap, opts.max_get)?.into_iter().map(|s| (s.pack, ByteRange::new(s.start, s.end - s.start))).collect())
}

async fn write_files(
    store: Arc<dyn Store>,
    m: Arc<Manifest>,
    dirs: Arc<DirCache>,
    writes: Vec<usize>,
    in_place: bool,
    opts: &RestoreOptions,
) -> SnapshotResult<(u64, usize, Vec<(usize, StatKey)>)> {
    let segments = plan_segments(&m, &writes, opts.coalesce_gap, opts.max_get)?;
    let nonce = rand_nonce();
    let slots: Vec<Slot> = writes
        .iter()
        .map(|&i| {
            let chunks = match &m.entries[i].kind {
                EntryKind::File(c) => c.chunks.len(),
                _ => 0,
            };
            let name = if in_place {
                split_parent(&m.entries[i].path).1.to_vec()
            } else {
                format!(".rbk-tmp-{nonce:x}-{}", TMP_SEQ.fetch_add(1, Ordering::Relaxed)).into_bytes()
            };
            let whole = (chunks > 1).then(|| Mutex::new(WholeHash { hasher: Hasher::new(), next: 0, in_order: true }));
            Slot { entry: i, name, in_place, chunks, remaining: AtomicUsize::new(chunks), whole, stat: Default::default() }
        })
        .collect();
    let birth = Birth::probe(&dirs.root, in_place);
    let w = Arc::new(Writer { m, dirs, slots, owner: opts.owner, birth, record_stats: opts.stat_cache.is_some(), cancelled: Default::default() });
    // Empty files are complete at once; multi-chunk files are created now
    // so that their chunks can land in any order. A one-chunk file (most
    // of them) is created when its chunk arrives: one open per file.
    {
        let w = w.clone();
        blocking(move || -> SnapshotResult<()> {
            w.slots.par_iter().filter(|s| s.chunks != 1).try_for_each(|s| {
                let fd = w.create(s)?;
                if s.chunks == 0 { w.finish(s, fd) } else { Ok(()) }
            })
        })
        .await??;
    }

    let gets = segments.len();
    let fetched: u64 = segments.iter().map(|s| s.end - s.start).sum();
    // On the first failure, stop fetching and wait for every task (and the
    // blocking writes they started) to end: when restore returns, nothing
    // it started still writes into the directory the next restore repairs.
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut failed: Option<SnapshotError> = None;
    let note = |r: Result<SnapshotResult<()>, tokio::task::JoinError>, failed: &mut Option<SnapshotError>, w: &Writer| {
        if let Err(e) = r.map_err(|e| SnapshotError::Task(e.to_string())).and_then(|r| r) {
            w.cancelled.store(true, Ordering::Relaxed);
            failed.get_or_insert(e);
        }
    };
    for seg in segments {
        let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
        while let Some(done) = tasks.try_join_next() {
            note(done, &mut failed, &w);
        }
        if failed.is_some() {
            break;
        }
        let (store, w) = (store.clone(), w.clone());
        tasks.spawn(async move {
            let _permit = permit;
            fetch_segment(&*store, seg, w).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        note(done, &mut failed, &w);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((fetched, gets, w.slots.iter().filter_map(|s| s.stat.get().map(|k| (s.entry, *k))).collect())),
    }
}

fn rand_nonce() -> u64 {
    let t = crate::manifest::now_unix_ns() as u64;
    t ^ (std::process::id() as u64).rotate_left(32)
}

/// Fetches one range of a pack and writes each chunk as soon as its bytes
/// have all arrived, verified against its digest. Completed chunks go to
/// the blocking pool in batches, one batch in flight per segment, so the
/// next bytes arrive while the previous ones are written.
///
/// A chunk that lies within one piece of the response body (most do: the
/// HTTP client hands over tens to hundreds of KiB at a time, a small
/// file's chunk is a few KiB) is passed on as a slice of that piece, with
/// no copy and no segment-sized buffer: an 8 MiB buffer per GET in flight
/// was fresh memory for most GETs, and faulting its pages in cost more
/// than copying into it. Only a chunk split across pieces is assembled.
async fn fetch_segment(store: &dyn Store, seg: Segment, w: Arc<Writer>) -> SnapshotResult<()> {
    let mut stream = store.get(seg.pack, ByteRange::new(seg.start, seg.end - seg.start)).await?;
    // Offset in the pack of the next byte the stream yields.
    let mut pos = seg.start;
    let mut pieces = seg.pieces.into_iter().peekable();
    // The first bytes of the next piece, when it spans body pieces.
    let mut partial = BytesMut::new();
    let mut ready = Vec::new();
    let mut ready_bytes = 0u64;
    let mut in_flight: Option<tokio::task::JoinHandle<SnapshotResult<()>>> = None;
    let mut result = Ok(());
    loop {
        let item = stream.next().await;
        let done = item.is_none();
        let mut bytes = match item {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => {
                result = Err(e.into());
                break;
            }
            None => bytes::Bytes::new(),
        };
        if w.cancelled.load(Ordering::Relaxed) {
            break;
        }
        while let Some(p) = pieces.peek() {
            if partial.is_empty() && pos < p.offset {
                // A coalesced gap between two needed chunks.
                if bytes.is_empty() {
                    break;
                }
                let skip = (p.offset - pos).min(bytes.len() as u64);
                bytes.advance(skip as usize);
                pos += skip;
                continue;
            }
            let want = (p.stored_len - partial.len() as u64) as usize;
            let chunk = if partial.is_empty() && bytes.len() >= want {
                pos += want as u64;
                bytes.split_to(want)
            } else {
                if bytes.is_empty() {
                    break;
                }
                let take = want.min(bytes.len());
                if partial.is_empty() {
                    partial.reserve(p.stored_len as usize);
                }
                partial.extend_from_slice(&bytes[..take]);
                bytes.advance(take);
                pos += take as u64;
                if take < want {
                    break;
                }
                partial.split().freeze()
            };
            let p = pieces.next().expect("peeked");
            ready_bytes += p.stored_len;
            ready.push((chunk, p));
        }
        if !ready.is_empty() && (done || ready_bytes >= READY_BATCH) {
            ready_bytes = 0;
            if let Some(prev) = in_flight.take() {
                result = prev.await.map_err(|e| SnapshotError::Task(e.to_string())).and_then(|r| r);
                if result.is_err() {
                    break;
                }
            }
            let (batch, w, pack) = (std::mem::take(&mut ready), w.clone(), seg.pack);
            in_flight = Some(tokio::task::spawn_blocking(move || w.write_batch(pack, batch)));
        }
        if done {
            break;
        }
    }
    if let Some(prev) = in_flight.take() {
        let r = prev.await.map_err(|e| SnapshotError::Task(e.to_string())).and_then(|r| r);
        result = result.and(r);
    }
    result?;
    if w.cancelled.load(Ordering::Relaxed) {
        return Ok(()); // another segment failed; its error is the one reported
    }
    if let Some(p) = pieces.next() {
        return Err(SnapshotError::CorruptContent {
            path: crate::error::show(&w.m.entries[w.slots[p.targets[0].0].entry].path),
            expected: p.digest,
            pack: seg.pack,
            what: format!("pack ended before byte {}", p.offset + p.stored_len),
        });
    }
    Ok(())
}

impl Writer {
    fn path(&self, s: &Slot) -> &[u8] {
        &self.m.entries[s.entry].path
    }

    /// Creates a slot's file, refusing to reuse anything already there
    /// (`O_EXCL`, no symlink followed), in its directory opened beneath
    /// the root.
    fn create(&self, s: &Slot) -> SnapshotResult<OwnedFd> {
        let path = self.path(s);
        let pfd = self.dirs.get(split_parent(path).0)?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Birth::create_mode(&self.m.entries[s.entry], s.chunks);
        rustix::fs::openat(&*pfd, os(&s.name), flags, Mode::from_raw_mode(mode)).map_err(|err| SnapshotError::io("creating", path, err))
    }

    /// Decodes, verifies and writes a batch of chunks.
    fn write_batch(&self, pack: Digest, batch: Vec<(bytes::Bytes, Piece)>) -> SnapshotResult<()> {
        SCRATCH.with_borrow_mut(|scratch| {
            for (stored, p) in batch {
                let data = decode_chunk_into(p.codec, &stored, &p.digest, scratch).map_err(|what| SnapshotError::CorruptContent {
                    path: crate::error::show(self.path(&self.slots[p.targets[0].0])),
                    expected: p.digest,
                    pack,
                    what,
                })?;
                for &(si, off, ci) in &p.targets {
                    self.write_chunk(&self.slots[si], off, ci, data)?;
                }
            }
            Ok(())
        })
    }

    fn write_chunk(&self, s: &Slot, off: u64, ci: usize, data: &[u8]) -> SnapshotResult<()> {
        let path = self.path(s);
        let Some(whole) = &s.whole else {
            // The file's only chunk: create, write, set metadata, close.
            let file = std::fs::File::from(self.create(s)?);
            file.write_all_at(data, 0).map_err(|err| SnapshotError::io("writing", path, err))?;
            return self.finish(s, file.into());
        };
        let pfd = self.dirs.get(split_parent(path).0)?;
        let fd = rustix::fs::openat(&*pfd, os(&s.name), OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|err| SnapshotError::io("opening", path, err))?;
        let file = std::fs::File::from(fd);
        file.write_all_at(data, off).map_err(|err| SnapshotError::io("writing", path, err))?;
        {
            let mut h = whole.lock().expect("whole-file hash");
            if h.in_order && h.next == ci {
                h.hasher.update(data);
                h.next += 1;
            } else {
                h.in_order = false;
            }
        }
        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.check_whole(s, &file)?;
            return self.finish(s, file.into());
        }
        Ok(())
    }

    /// A multi-chunk file's last chunk has landed: each chunk was verified,
    /// now check that together they are the file the manifest names
    /// (re-reading it only if its chunks landed out of order).
    fn check_whole(&self, s: &Slot, file: &std::fs::File) -> SnapshotResult<()> {
        let e = &self.m.entries[s.entry];
        let EntryKind::File(c) = &e.kind else { return Ok(()) };
        let h = s.whole.as_ref().expect("multi-chunk slot").lock().expect("whole-file hash");
        let actual = if h.in_order && h.next == s.chunks {
            h.hasher.finish()
        } else {
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
            h.finish()
        };
        if actual != c.digest {
            // In a cold restore the file is under its real name: remove it,
            // so that wrong bytes are never left where they count.
            if let Ok(pfd) = self.dirs.get(split_parent(&e.path).0) {
                let _ = rustix::fs::unlinkat(&*pfd, os(&s.name), AtFlags::empty());
            }
            return Err(SnapshotError::CorruptContent {
                path: crate::error::show(&e.path),
                expected: c.digest,
                pack: c.chunks[0].pack,
                what: format!("the file's chunks hash to {actual}, not to the file digest"),
            });
        }
        Ok(())
    }

    /// Sets a complete file's metadata through its descriptor and, unless
    /// it was written in place, moves it over its real name.
    fn finish(&self, s: &Slot, fd: OwnedFd) -> SnapshotResult<()> {
        let e = &self.m.entries[s.entry];
        set_fd_meta(&fd, e, s.chunks, self.owner, self.birth).map_err(|err| SnapshotError::io("setting metadata of", &e.path, err))?;
        if s.in_place {
            if self.record_stats
                && let Ok(st) = rustix::fs::fstat(&fd)
            {
                let _ = s.stat.set(StatKey::from(&fsutil::Meta::from(&st)));
            }
            return Ok(());
        }
        drop(fd);
        let (parent, name) = split_parent(&e.path);
        let pfd = self.dirs.get(parent)?;
        rustix::fs::renameat(&*pfd, os(&s.name), &*pfd, os(name)).map_err(|err| SnapshotError::io("moving into place", &e.path, err))
    }
}

/// What a file this restore creates has right from birth, so that only
/// what differs is set afterwards: each metadata call dirties the inode
/// again, and for 20,000 small files those calls cost as much as the
/// writes.
#[derive(Clone, Copy)]
struct Birth {
    /// The owner a new file gets: this process's, when no directory on the
    /// way can impose another group (cold restore; the root is not
    /// set-group-ID and has this process's group).
    owner: Option<(u32, u32)>,
    /// The process umask, from `/proc/self/status`; unknown means always
    /// `fchmod`.
    umask: Option<u32>,
}

impl Birth {
    fn probe(root: &OwnedFd, in_place: bool) -> Birth {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned())))
            .and_then(|v| u32::from_str_radix(&v, 8).ok());
        let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        // With `grpid` mounts a new file takes its directory's group, and
        // the directories a cold restore creates take the root's.
        let plain_root = fsutil::lstat_at(root, b".").is_ok_and(|m| m.mode & 0o2000 == 0 && m.gid == gid);
        let owner = (in_place && plain_root).then_some((uid, gid));
        Birth { owner, umask }
    }

    /// The permission bits to create a file with: its own for a file written
    /// in one go, owner read/write for one reopened chunk by chunk.
    fn create_mode(e: &Entry, chunks: usize) -> u32 {
        if chunks <= 1 { e.mode & 0o777 } else { 0o600 }
    }
}

fn set_fd_meta(fd: &OwnedFd, e: &Entry, chunks: usize, owner: bool, birth: Birth) -> Result<(), Errno> {
    let chown = owner && birth.owner != Some((e.uid, e.gid));
    if chown {
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(e.uid)), Some(rustix::fs::Gid::from_raw(e.gid)))?;
    }
    // chmod after chown: chown clears set-user-ID and set-group-ID bits.
    let born_mode = birth.umask.map(|u| Birth::create_mode(e, chunks) & !u);
    if chown || born_mode != Some(e.mode) {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode as _))?;
    }
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
