//! Capture: a directory into a snapshot, uploading only what is new.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rbk_store::{Digest, Store};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::chunk::{ChunkParams, RawChunk, chunk_reader, stream_chunks};
use crate::error::{SnapshotError, SnapshotResult};
use crate::filter::{IncludeAll, PathFilter};
use crate::fsutil::{self, Kind, Meta};
use crate::manifest::{ChunkRef, Codec, Entry, EntryKind, FileContent, Manifest, now_unix_ns};
use crate::pack::{PackBuilder, encode_chunk};
use crate::statcache::{StatCache, StatKey, is_racy};
use crate::{FIND_MISSING_BATCH, Snapshot};

/// How to capture. `CaptureOptions::new(namespace)` gives the defaults.
#[derive(Clone)]
pub struct CaptureOptions {
    pub namespace: String,
    /// The snapshot this directory was restored from or last captured as:
    /// unchanged files (by the stat cache) reuse its content without being
    /// read, and its content is never uploaded again.
    pub base: Option<Snapshot>,
    /// Other snapshots of the same namespace whose content may be reused
    /// (dedupe scope; see the crate docs for why it is not the whole store).
    pub dedupe_from: Vec<Arc<Manifest>>,
    pub filter: Arc<dyn PathFilter>,
    /// Where the local stat cache for this directory lives (outside it).
    pub stat_cache: Option<PathBuf>,
    /// Packs are closed once they reach this many bytes.
    pub pack_target: usize,
    pub chunking: ChunkParams,
    pub zstd_level: i32,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
}

impl CaptureOptions {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            base: None,
            dedupe_from: Vec::new(),
            filter: Arc::new(IncludeAll),
            stat_cache: None,
            pack_target: 16 << 20,
            chunking: ChunkParams::default(),
            zstd_level: 3,
            upload_concurrency: 8,
        }
    }
}

/// What a capture did, for progress lines and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct CaptureStats {
    pub entries: usize,
    pub files: usize,
    /// Files whose content was read (the rest were known unchanged).
    pub files_read: usize,
    pub bytes_read: u64,
    /// Uncompressed bytes of chunks that were not stored before.
    pub bytes_new: u64,
    pub packs_uploaded: usize,
    /// Packs plus manifest, as sent to the store.
    pub bytes_uploaded: u64,
    pub manifest_uploaded: bool,
}

/// One path found by the walk.
pub(crate) struct Found {
    pub path: Vec<u8>,
    pub meta: Meta,
    pub link: Option<Vec<u8>>,
}

/// Captures `dir` into a snapshot in `store`.
///
/// Packs are uploaded (and awaited) before the manifest, so an interrupted
/// capture leaves at most unreferenced packs (garbage for [`crate::gc`]),
/// never a manifest naming missing content. When nothing changed since
/// `opts.base`, the base itself is returned and nothing is uploaded.
pub async fn capture(store: Arc<dyn Store>, dir: &Path, opts: &CaptureOptions) -> SnapshotResult<(Snapshot, CaptureStats)> {
    let started = now_unix_ns();
    let root = Arc::new(fsutil::open_root(dir, false)?);
    let found = {
        let (root, filter) = (root.clone(), opts.filter.clone());
        blocking(move || walk(&root, &*filter)).await??
    };

    let index = ContentIndex::build(&*store, opts.base.iter().map(|b| &*b.manifest).chain(opts.dedupe_from.iter().map(|m| &**m))).await?;
    let cache = opts.stat_cache.as_deref().map(StatCache::load).unwrap_or_default();

    // Hard links: the first path of an inode (in path order) carries the
    // content, the others link to it.
    let mut leaders: HashMap<(u64, u64), usize> = HashMap::new();
    let mut link_to: HashMap<usize, usize> = HashMap::new();
    let mut contents: Vec<Option<FileContent>> = vec![None; found.len()];
    let mut to_read = Vec::new();
    for (i, f) in found.iter().enumerate() {
        if f.meta.kind != Kind::File {
            continue;
        }
        if f.meta.nlink > 1 {
            if let Some(&l) = leaders.get(&(f.meta.dev, f.meta.ino)) {
                link_to.insert(i, l);
                continue;
            }
            leaders.insert((f.meta.dev, f.meta.ino), i);
        }
        let reused = opts.base.as_ref().and_then(|b| {
            if !cache.unchanged(&b.digest, &f.path, &f.meta) {
                return None;
            }
            match b.manifest.get(&f.path).map(|e| &e.kind) {
                Some(EntryKind::File(c)) if index.all_present(c) => Some(c.clone()),
                _ => None,
            }
        });
        match reused {
            Some(c) => contents[i] = Some(c),
            None => to_read.push(i),
        }
    }

    let mut stats = CaptureStats::default();
    let found = Arc::new(found);
    let index = Arc::new(index);
    let mut packer = Packer::new(store.clone(), opts);
    let mut vanished = HashSet::new();
    // Files above the chunking threshold are streamed one at a time, a
    // window of chunks at once; the rest are read whole, many in parallel.
    let (large, small): (Vec<usize>, Vec<usize>) = to_read.iter().partition(|&&i| found[i].meta.size > opts.chunking.threshold);
    for batch in batches(&found, &small) {
        let (root, found, index, params, level) = (root.clone(), found.clone(), index.clone(), opts.chunking, opts.zstd_level);
        let read: Vec<SnapshotResult<Option<ReadFile>>> =
            blocking(move || batch.par_iter().map(|&i| read_file(&root, &found[i], i, &index, &params, level)).collect()).await?;
        for r in read {
            let Some(rf) = r? else { continue };
            stats.files_read += 1;
            stats.bytes_read += rf.digest.size();
            if rf.vanished {
                vanished.insert(rf.idx);
                continue;
            }
            let mut chunks = Vec::with_capacity(rf.chunks.len());
            for (digest, how) in rf.chunks {
                chunks.push(match how {
                    ReadChunk::Known(c) => Loc::Known(c),
                    ReadChunk::New(codec, bytes) => packer.add(digest, codec, bytes, &mut stats).await?,
                });
            }
            packer.pending_files.push((rf.idx, rf.digest, chunks));
        }
    }
    for i in large {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let (root, all, index, params, level) = (root.clone(), found.clone(), index.clone(), opts.chunking, opts.zstd_level);
        let reader = tokio::task::spawn_blocking(move || {
            if let Err(e) = stream_file(&root, &all[i], &index, &params, level, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut locs = Vec::new();
        let mut end = None;
        while let Some(msg) = rx.recv().await {
            match msg? {
                Streamed::Chunks(window) => {
                    for (digest, how) in window {
                        locs.push(match how {
                            ReadChunk::Known(c) => Loc::Known(c),
                            ReadChunk::New(codec, bytes) => packer.add(digest, codec, bytes, &mut stats).await?,
                        });
                    }
                }
                Streamed::Done(d) => end = Some(Some(d)),
                Streamed::Vanished => end = Some(None),
            }
        }
        reader.await.map_err(|e| SnapshotError::Task(e.to_string()))?;
        stats.files_read += 1;
        match end {
            Some(Some(digest)) => {
                stats.bytes_read += digest.size();
                packer.pending_files.push((i, digest, locs));
            }
            Some(None) => {
                vanished.insert(i);
            }
            None => return Err(SnapshotError::Task(format!("reading {} ended without a result", crate::error::show(&found[i].path)))),
        }
    }
    let (mut packed, pack_bytes) = packer.finish().await?;
    stats.packs_uploaded = packed.packs.len();
    stats.bytes_uploaded += pack_bytes;
    for (idx, digest, locs) in std::mem::take(&mut packed.files) {
        let chunks = locs.into_iter().map(|l| packed.resolve(l)).collect();
        contents[idx] = Some(FileContent { digest, chunks });
    }

    let mut manifest = Manifest::new(opts.namespace.clone());
    for (i, f) in found.iter().enumerate() {
        let kind = match f.meta.kind {
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink(f.link.clone().unwrap_or_default()),
            Kind::File => match link_to.get(&i) {
                Some(l) if vanished.contains(l) => continue,
                Some(&l) => EntryKind::Hardlink(found[l].path.clone()),
                None if vanished.contains(&i) => continue,
                None => EntryKind::File(contents[i].take().expect("every captured file has content")),
            },
            Kind::Special => continue,
        };
        manifest.entries.push(Entry { path: f.path.clone(), kind, mode: f.meta.mode, uid: f.meta.uid, gid: f.meta.gid, mtime: f.meta.mtime });
    }
    stats.entries = manifest.entries.len();
    stats.files = manifest.entries.iter().filter(|e| matches!(e.kind, EntryKind::File(_))).count();

    let snapshot = match &opts.base {
        Some(b) if b.manifest.entries == manifest.entries && b.manifest.namespace == manifest.namespace => b.clone(),
        _ => {
            let (snap, uploaded) = Snapshot::commit(&*store, manifest).await?;
            stats.bytes_uploaded += uploaded;
            stats.manifest_uploaded = uploaded > 0;
            snap
        }
    };

    if let Some(path) = &opts.stat_cache {
        let mut cache = StatCache { snapshot: Some(snapshot.digest), files: HashMap::new() };
        for (i, f) in found.iter().enumerate() {
            if f.meta.kind == Kind::File && !link_to.contains_key(&i) && !vanished.contains(&i) && !is_racy(&f.meta, started) {
                cache.files.insert(f.path.clone(), StatKey::from(&f.meta));
            }
        }
        if let Err(e) = cache.save(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the stat cache; the next capture re-reads every file");
        }
    }
    Ok((snapshot, stats))
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> SnapshotResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SnapshotError::Task(e.to_string()))
}

/// Walks `root` in parallel, without following symlinks; paths sorted.
pub(crate) fn walk(root: &OwnedFd, filter: &dyn PathFilter) -> SnapshotResult<Vec<Found>> {
    let out = Mutex::new(Vec::new());
    walk_dir(root, &[], filter, &out)?;
    let mut v = out.into_inner().expect("walk mutex");
    v.sort_unstable_by(|a: &Found, b| a.path.cmp(&b.path));
    Ok(v)
}

fn walk_dir(dir: &OwnedFd, prefix: &[u8], filter: &dyn PathFilter, out: &Mutex<Vec<Found>>) -> SnapshotResult<()> {
    let shown = if prefix.is_empty() { &b"."[..] } else { prefix };
    let names = fsutil::list_dir(dir).map_err(|e| SnapshotError::io("listing", shown, e))?;
    let mut local = Vec::with_capacity(names.len());
    let mut subdirs = Vec::new();
    for name in names {
        let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
        if !prefix.is_empty() {
            path.extend_from_slice(prefix);
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let meta = match fsutil::lstat_at(dir, &name) {
            Ok(m) => m,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(SnapshotError::io("stat", &path, e)),
        };
        if !filter.include(&path, meta.kind == Kind::Dir) {
            continue;
        }
        let link = match meta.kind {
            Kind::Special => {
                tracing::warn!(path = %crate::error::show(&path), "skipping a device node, FIFO or socket");
                continue;
            }
            Kind::Symlink => match rustix::fs::readlinkat(dir, fsutil::os(&name), Vec::new()) {
                Ok(t) => Some(t.into_bytes()),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(SnapshotError::io("reading link", &path, e)),
            },
            Kind::Dir => {
                subdirs.push((name, path.clone()));
                None
            }
            Kind::File => None,
        };
        local.push(Found { path, meta, link });
    }
    out.lock().expect("walk mutex").extend(local);
    subdirs.into_par_iter().try_for_each(|(name, path)| {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, fsutil::os(&name), flags, Mode::empty()) {
            Ok(fd) => walk_dir(&fd, &path, filter, out),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(SnapshotError::io("opening directory", &path, e)),
        }
    })
}

/// Content already stored, from the manifests in the dedupe scope, limited
/// to packs that still exist.
#[derive(Default)]
pub(crate) struct ContentIndex {
    chunks: HashMap<Digest, ChunkRef>,
    present: HashSet<Digest>,
}

impl ContentIndex {
    async fn build<'a>(store: &dyn Store, manifests: impl Iterator<Item = &'a Manifest>) -> SnapshotResult<Self> {
        let mut chunks = HashMap::new();
        for m in manifests {
            for c in m.chunks() {
                chunks.entry(c.digest).or_insert(*c);
            }
        }
        let packs: Vec<Digest> = chunks.values().map(|c| c.pack).collect::<HashSet<_>>().into_iter().collect();
        let mut present: HashSet<Digest> = packs.iter().copied().collect();
        for batch in packs.chunks(FIND_MISSING_BATCH) {
            for gone in store.find_missing(batch).await? {
                present.remove(&gone);
            }
        }
        chunks.retain(|_, c| present.contains(&c.pack));
        Ok(Self { chunks, present })
    }

    fn all_present(&self, c: &FileContent) -> bool {
        c.chunks.iter().all(|ch| self.present.contains(&ch.pack))
    }
}

enum ReadChunk {
    Known(ChunkRef),
    New(Codec, Vec<u8>),
}

struct ReadFile {
    idx: usize,
    digest: Digest,
    chunks: Vec<(Digest, ReadChunk)>,
    vanished: bool,
}

fn read_file(root: &OwnedFd, f: &Found, idx: usize, index: &ContentIndex, params: &ChunkParams, level: i32) -> SnapshotResult<Option<ReadFile>> {
    let fd = match fsutil::openat2(root, &f.path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Some(ReadFile { idx, digest: Digest::of(b""), chunks: Vec::new(), vanished: true })),
        Err(e) => return Err(SnapshotError::io("opening", &f.path, e)),
    };
    let file = std::fs::File::from(fd);
    let (digest, raw) = chunk_reader(std::io::BufReader::with_capacity(1 << 20, file), f.meta.size, params)
        .map_err(|e| SnapshotError::io("reading", &f.path, e))?;
    let chunks = raw.into_iter().map(|c| encode_new(c, index, level)).collect();
    Ok(Some(ReadFile { idx, digest, chunks, vanished: false }))
}

/// A chunk the dedupe scope already holds is referenced; a new one is
/// compressed for a pack.
fn encode_new(c: RawChunk, index: &ContentIndex, level: i32) -> (Digest, ReadChunk) {
    match index.chunks.get(&c.digest) {
        Some(known) => (c.digest, ReadChunk::Known(*known)),
        None => {
            let (codec, bytes) = encode_chunk(&c.data, level);
            (c.digest, ReadChunk::New(codec, bytes))
        }
    }
}

/// A large file's progress, from the blocking reader to the packer.
enum Streamed {
    Chunks(Vec<(Digest, ReadChunk)>),
    Done(Digest),
    Vanished,
}

/// Raw bytes of a large file's chunks encoded together (in parallel)
/// before they are handed to the packer: with the channel's two windows in
/// flight, what a capture holds of one file is bounded by a few windows,
/// whatever the file's size.
const STREAM_WINDOW: usize = 8 << 20;

fn stream_file(
    root: &OwnedFd,
    f: &Found,
    index: &ContentIndex,
    params: &ChunkParams,
    level: i32,
    tx: &tokio::sync::mpsc::Sender<SnapshotResult<Streamed>>,
) -> SnapshotResult<()> {
    let stopped = || SnapshotError::Task("capture stopped while reading a file".into());
    let fd = match fsutil::openat2(root, &f.path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return tx.blocking_send(Ok(Streamed::Vanished)).map_err(|_| stopped()),
        Err(e) => return Err(SnapshotError::io("opening", &f.path, e)),
    };
    let send = |window: Vec<RawChunk>| -> std::io::Result<()> {
        let encoded: Vec<_> = window.into_par_iter().map(|c| encode_new(c, index, level)).collect();
        tx.blocking_send(Ok(Streamed::Chunks(encoded))).map_err(|_| std::io::Error::other("capture stopped"))
    };
    let mut window = Vec::new();
    let mut bytes = 0;
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::from(fd));
    let digest = stream_chunks(reader, params, |c| {
        bytes += c.data.len();
        window.push(c);
        if bytes >= STREAM_WINDOW {
            bytes = 0;
            send(std::mem::take(&mut window))?;
        }
        Ok(())
    })
    .and_then(|d| send(std::mem::take(&mut window)).map(|()| d))
    .map_err(|e| SnapshotError::io("reading", &f.path, e))?;
    tx.blocking_send(Ok(Streamed::Done(digest))).map_err(|_| stopped())
}

/// Groups files to read so that one batch holds at most ~64 MiB.
fn batches(found: &[Found], to_read: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0u64;
    for &i in to_read {
        bytes += found[i].meta.size;
        cur.push(i);
        if bytes >= 64 << 20 || cur.len() >= 4096 {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Where a chunk of a captured file lives before its pack is sealed.
#[derive(Clone, Copy)]
enum Loc {
    Known(ChunkRef),
    /// (pack sequence number, offset, stored length, codec, digest)
    New(usize, u64, u64, Codec, Digest),
}

/// Fills packs and uploads each one as it fills, a bounded number at once.
struct Packer {
    store: Arc<dyn Store>,
    target: usize,
    builder: PackBuilder,
    seq: usize,
    new_chunks: HashMap<Digest, Loc>,
    sealed: Vec<Digest>,
    uploads: JoinSet<SnapshotResult<()>>,
    permits: Arc<Semaphore>,
    uploaded: u64,
    pending_files: Vec<(usize, Digest, Vec<Loc>)>,
}

struct Packed {
    packs: Vec<Digest>,
    files: Vec<(usize, Digest, Vec<Loc>)>,
}

impl Packed {
    fn resolve(&self, l: Loc) -> ChunkRef {
        match l {
            Loc::Known(c) => c,
            Loc::New(seq, offset, stored_len, codec, digest) => ChunkRef { digest, pack: self.packs[seq], offset, stored_len, codec },
        }
    }
}

impl Packer {
    fn new(store: Arc<dyn Store>, opts: &CaptureOptions) -> Self {
        Self {
            store,
            target: opts.pack_target.max(1),
            builder: PackBuilder::default(),
            seq: 0,
            new_chunks: HashMap::new(),
            sealed: Vec::new(),
            uploads: JoinSet::new(),
            permits: Arc::new(Semaphore::new(opts.upload_concurrency.max(1))),
            uploaded: 0,
            pending_files: Vec::new(),
        }
    }

    async fn add(&mut self, digest: Digest, codec: Codec, bytes: Vec<u8>, stats: &mut CaptureStats) -> SnapshotResult<Loc> {
        if let Some(l) = self.new_chunks.get(&digest) {
            return Ok(*l);
        }
        stats.bytes_new += digest.size();
        let offset = self.builder.push(&bytes);
        let loc = Loc::New(self.seq, offset, bytes.len() as u64, codec, digest);
        self.new_chunks.insert(digest, loc);
        if self.builder.len() >= self.target {
            self.seal().await?;
        }
        Ok(loc)
    }

    async fn seal(&mut self) -> SnapshotResult<()> {
        let (digest, bytes) = self.builder.seal();
        self.sealed.push(digest);
        self.seq += 1;
        self.uploaded += bytes.len() as u64;
        // Surface a failed upload early rather than packing on.
        while let Some(done) = self.uploads.try_join_next() {
            done.map_err(|e| SnapshotError::Task(e.to_string()))??;
        }
        let permit = self.permits.clone().acquire_owned().await.expect("semaphore never closed");
        let store = self.store.clone();
        self.uploads.spawn(async move {
            let _permit = permit;
            if store.find_missing(&[digest]).await?.is_empty() {
                return Ok(());
            }
            store.put(digest, rbk_store::stream_from_bytes(bytes.into())).await?;
            Ok(())
        });
        Ok(())
    }

    async fn finish(mut self) -> SnapshotResult<(Packed, u64)> {
        if !self.builder.is_empty() {
            self.seal().await?;
        }
        while let Some(done) = self.uploads.join_next().await {
            done.map_err(|e| SnapshotError::Task(e.to_string()))??;
        }
        Ok((Packed { packs: self.sealed, files: self.pending_files }, self.uploaded))
    }
}
