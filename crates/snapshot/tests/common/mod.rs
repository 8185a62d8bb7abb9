//! Building trees on disk and comparing them, for the snapshot tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rbk_snapshot::{CaptureOptions, ChunkParams, RestoreOptions};
use bytes::Bytes;
use futures::StreamExt;
use rbk_store::{ByteRange, ByteStream, Digest, FilesystemStore, Store, StoreExt, StoreResult};

pub async fn fs_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = FilesystemStore::open(dir.path().join("store")).await.unwrap();
    (dir, Arc::new(store))
}

/// Small chunks and packs so that small test trees exercise chunking and
/// many packs.
pub fn small_opts(ns: &str) -> CaptureOptions {
    let mut o = CaptureOptions::new(ns);
    o.chunking = ChunkParams { threshold: 4096, min: 1024, avg: 2048, max: 8192 };
    o.pack_target = 16 << 10;
    o
}

pub fn restore_opts() -> RestoreOptions {
    RestoreOptions { concurrency: 4, coalesce_gap: 512, max_get: 8 << 10, ..Default::default() }
}

/// One path's observable state: type, content or target, mode, owner,
/// mtime, and which other paths share its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub links: Vec<Vec<u8>>,
}

/// Everything under `root` (not `root` itself), without following symlinks.
pub fn observe(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Seen>, inodes: &mut BTreeMap<u64, Vec<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let (kind, data) = if md.file_type().is_symlink() {
                ("symlink", std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
            } else if md.is_dir() {
                ("dir", vec![])
            } else {
                if md.nlink() > 1 {
                    inodes.entry(md.ino()).or_default().push(rel.clone());
                }
                ("file", std::fs::read(&p).unwrap())
            };
            let mode = if kind == "symlink" { 0 } else { md.mode() & 0o7777 };
            out.insert(rel, Seen { kind, data, mode, uid: md.uid(), gid: md.gid(), mtime: (md.mtime(), md.mtime_nsec()), links: vec![] });
            if md.is_dir() {
                go(root, &p, out, inodes);
            }
        }
    }
    go(root, root, &mut out, &mut inodes);
    for group in inodes.values() {
        for p in group {
            let mut others: Vec<Vec<u8>> = group.iter().filter(|q| *q != p).cloned().collect();
            others.sort();
            out.get_mut(p).unwrap().links = others;
        }
    }
    out
}

pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = rustix::fs::Timespec { tv_sec: secs, tv_nsec: nanos as _ };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Deterministic incompressible-looking bytes: `n` of them from `seed`.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|j| (j.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8).collect()
}

/// A store whose reads come back as `reshape` makes them from the range
/// asked for and the bytes `inner` holds there: cut into pieces, or cut off
/// by an error, as a real response body can be. Everything else passes
/// through to `inner`.
pub struct ReshapedReads<F> {
    pub inner: Arc<dyn Store>,
    pub reshape: F,
}

impl<F> std::fmt::Debug for ReshapedReads<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReshapedReads").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F> Store for ReshapedReads<F>
where
    F: Fn(ByteRange, Bytes) -> Vec<StoreResult<Bytes>> + Send + Sync + 'static,
{
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        self.inner.find_missing(digests).await
    }
    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        self.inner.put(digest, data).await
    }
    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let bytes = self.inner.get_range_bytes(digest, range).await?;
        Ok(futures::stream::iter((self.reshape)(range, bytes)).boxed())
    }
    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        self.inner.delete(digest).await
    }
    async fn list(&self) -> StoreResult<Vec<Digest>> {
        self.inner.list().await
    }
}
