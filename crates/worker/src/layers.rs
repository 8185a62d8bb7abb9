//! The worker's local layer store: every base layer unpacked once into
//! `ROOT/<diff_id hex>` (like containerd's overlayfs snapshotter) and
//! shared read-only, as an overlay lower dir, by every step that uses it.
//!
//! An unpack goes into a temporary directory that is renamed into place
//! when complete, so a crash never leaves a half-unpacked layer that looks
//! whole. A size limit is kept by evicting the least recently used layers
//! that no running step holds a [`LayerLease`] on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rbk_image::{OciDigest, UnpackOptions, unpack_layer};

use crate::error::{IoContext, Result, WorkerError};
use crate::step::LayerRef;

const TMP_PREFIX: &str = ".tmp-";
const SIZE_SUFFIX: &str = ".size";

#[derive(Debug)]
struct Entry {
    bytes: u64,
    last_used: u64,
    /// Wall-clock time of the last lease (or of the directory's mtime when
    /// the store was opened), so the worker's disk budget can order layers
    /// against its other state (contexts, blobs, cache dirs) by last use.
    used_at: SystemTime,
    leases: usize,
}

/// An unpacked layer no running step holds: what the worker's disk budget
/// may evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedLayer {
    /// The diff_id's hex (the directory's name).
    pub key: String,
    pub bytes: u64,
    pub used_at: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    limit_bytes: u64,
    state: Mutex<State>,
}

/// Unpacked layers on local disk, with LRU eviction.
#[derive(Debug, Clone)]
pub struct LayerStore {
    shared: Arc<Shared>,
}

/// A layer that must not be evicted while this lives (a running step's
/// rootfs uses it).
#[derive(Debug)]
pub struct LayerLease {
    shared: Arc<Shared>,
    key: String,
    path: PathBuf,
}

impl LayerLease {
    /// The unpacked layer directory (an overlayfs lower dir).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LayerLease {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().expect("layer store lock");
        st.clock += 1;
        let now = st.clock;
        if let Some(e) = st.entries.get_mut(&self.key) {
            e.leases -= 1;
            e.last_used = now;
            e.used_at = SystemTime::now();
        }
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            }
            total += md.len();
        }
    }
    total
}

impl LayerStore {
    /// Opens (creating) the store at `root`, which keeps at most
    /// `limit_bytes` of unpacked layers that no step is using. Leftovers of
    /// interrupted unpacks are removed.
    pub fn open(root: impl Into<PathBuf>, limit_bytes: u64) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).ctx(|| format!("creating layer store {}", root.display()))?;
        let mut state = State::default();
        for e in std::fs::read_dir(&root).ctx(|| format!("listing layer store {}", root.display()))? {
            let e = e.ctx(|| format!("listing layer store {}", root.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            if name.ends_with(SIZE_SUFFIX) || !e.path().is_dir() {
                continue;
            }
            let bytes = std::fs::read_to_string(root.join(format!("{name}{SIZE_SUFFIX}")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| dir_bytes(&e.path()));
            let used_at = e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            state.entries.insert(name, Entry { bytes, last_used: 0, used_at, leases: 0 });
        }
        Ok(LayerStore { shared: Arc::new(Shared { root, limit_bytes, state: Mutex::new(state) }) })
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    fn key(diff_id: &OciDigest) -> String {
        diff_id.hex()
    }

    /// Whether the layer is unpacked here.
    pub fn contains(&self, diff_id: &OciDigest) -> bool {
        self.shared.state.lock().expect("layer store lock").entries.contains_key(&Self::key(diff_id))
    }

    /// Total bytes of unpacked layers held.
    pub fn bytes(&self) -> u64 {
        self.shared.state.lock().expect("layer store lock").entries.values().map(|e| e.bytes).sum()
    }

    /// Leases `layer`, unpacking it from `blob` (its compressed tar) first
    /// if it is not here yet. The unpacked content must hash to the layer's
    /// diff_id. Blocking: call under `spawn_blocking`.
    pub fn lease(&self, layer: &LayerRef, blob: &Path) -> Result<LayerLease> {
        let key = Self::key(&layer.diff_id);
        let path = self.shared.root.join(&key);
        if let Some(lease) = self.try_lease(&key, &path) {
            return Ok(lease);
        }
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&self.shared.root)
            .ctx(|| format!("creating a scratch dir in {}", self.shared.root.display()))?;
        let t0 = std::time::Instant::now();
        let stats = unpack_pipelined(blob, tmp.path())?;
        tracing::debug!(layer = %layer.digest, bytes = stats.tar_bytes, entries = stats.entries, elapsed_ms = t0.elapsed().as_millis() as u64, "unpacked layer");
        if stats.diff_id != layer.diff_id {
            return Err(WorkerError::path(
                blob,
                format!("layer {} unpacks to content {} but the image says its diff_id is {}", layer.digest, stats.diff_id, layer.diff_id),
            ));
        }
        let tmp = tmp.keep();
        let bytes = self.record_size(&key, &tmp).ctx(|| format!("recording the size of layer {}", layer.diff_id))?;
        {
            let mut st = self.shared.state.lock().expect("layer store lock");
            if let Err(e) = std::fs::rename(&tmp, &path) {
                // Another step unpacked it meanwhile: keep theirs.
                let _ = std::fs::remove_dir_all(&tmp);
                if !path.is_dir() {
                    return Err(WorkerError::io(format!("moving unpacked layer into {}", path.display()), e));
                }
            }
            st.entries.entry(key.clone()).or_insert(Entry { bytes, last_used: 0, used_at: SystemTime::now(), leases: 0 });
        }
        let lease = self.try_lease(&key, &path).ok_or_else(|| WorkerError::path(&path, "layer vanished right after unpacking"))?;
        self.evict()?;
        Ok(lease)
    }

    /// Takes `dir` — a tree whose content is exactly the layer `diff_id`,
    /// in the layout an unpack gives (overlay whiteouts and opaque marks),
    /// such as the upper dir a step's layer was just made from — as that
    /// layer's unpacked directory, by renaming it (same filesystem only).
    /// Saves the next step unpacking the layer it was just handed. Returns
    /// false, leaving `dir` alone, when the layer is already here or the
    /// rename is impossible; the layer is then unpacked from its blob when
    /// needed, as before.
    pub fn adopt(&self, diff_id: &OciDigest, dir: &Path) -> Result<bool> {
        let key = Self::key(diff_id);
        let path = self.shared.root.join(&key);
        {
            let mut st = self.shared.state.lock().expect("layer store lock");
            if st.entries.contains_key(&key) || path.exists() {
                return Ok(false);
            }
            if std::fs::rename(dir, &path).is_err() {
                return Ok(false);
            }
            let bytes = self.record_size(&key, &path).ctx(|| format!("recording the size of layer {diff_id}"))?;
            st.entries.insert(key.clone(), Entry { bytes, last_used: 0, used_at: SystemTime::now(), leases: 0 });
        }
        self.evict()?;
        Ok(true)
    }

    /// Measures the unpacked tree at `dir` as the disk holds it (files and
    /// directories, apparent sizes, plus the `.size` file itself, so the
    /// worker's disk budget adds up to what `du` sees) and records it in
    /// `<key>.size`; returns the bytes.
    fn record_size(&self, key: &str, dir: &Path) -> std::io::Result<u64> {
        let tree = std::fs::symlink_metadata(dir)?.len() + dir_bytes(dir);
        let total = tree + tree.to_string().len() as u64;
        std::fs::write(self.shared.root.join(format!("{key}{SIZE_SUFFIX}")), total.to_string())?;
        Ok(total)
    }

    fn try_lease(&self, key: &str, path: &Path) -> Option<LayerLease> {
        let mut st = self.shared.state.lock().expect("layer store lock");
        st.clock += 1;
        let now = st.clock;
        let e = st.entries.get_mut(key)?;
        e.leases += 1;
        e.last_used = now;
        e.used_at = SystemTime::now();
        Some(LayerLease { shared: self.shared.clone(), key: key.to_owned(), path: path.to_path_buf() })
    }

    /// Removes least recently used, unleased layers until the store is
    /// within its limit; returns the evicted diff_id hexes.
    pub fn evict(&self) -> Result<Vec<String>> {
        let mut evicted = Vec::new();
        loop {
            let victim = {
                let mut st = self.shared.state.lock().expect("layer store lock");
                let total: u64 = st.entries.values().map(|e| e.bytes).sum();
                if total <= self.shared.limit_bytes {
                    break;
                }
                let Some(key) = st.entries.iter().filter(|(_, e)| e.leases == 0).min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone()) else {
                    break;
                };
                let doomed = self.unlink(&mut st, &key)?;
                (key, doomed)
            };
            let _ = std::fs::remove_dir_all(&victim.1);
            evicted.push(victim.0);
        }
        Ok(evicted)
    }

    /// Takes `key` out of the store under the state lock: renamed out of
    /// the way, so no new lease finds a half-deleted directory. The caller
    /// deletes the returned directory after releasing the lock.
    fn unlink(&self, st: &mut State, key: &str) -> Result<PathBuf> {
        st.entries.remove(key);
        let doomed = self.shared.root.join(format!("{TMP_PREFIX}evict-{key}"));
        std::fs::rename(self.shared.root.join(key), &doomed).ctx(|| format!("evicting layer {key}"))?;
        let _ = std::fs::remove_file(self.shared.root.join(format!("{key}{SIZE_SUFFIX}")));
        Ok(doomed)
    }

    /// The layers no running step holds, with their size and last use.
    pub fn unused(&self) -> Vec<UnusedLayer> {
        let st = self.shared.state.lock().expect("layer store lock");
        let mut out: Vec<UnusedLayer> = st
            .entries
            .iter()
            .filter(|(_, e)| e.leases == 0)
            .map(|(k, e)| UnusedLayer { key: k.clone(), bytes: e.bytes, used_at: e.used_at })
            .collect();
        out.sort_by(|a, b| (a.used_at, &a.key).cmp(&(b.used_at, &b.key)));
        out
    }

    /// Evicts the layer `key` (a diff_id hex from [`Self::unused`]) unless
    /// a step leased it meanwhile; returns whether it was removed.
    pub fn remove_unused(&self, key: &str) -> Result<bool> {
        let doomed = {
            let mut st = self.shared.state.lock().expect("layer store lock");
            match st.entries.get(key) {
                Some(e) if e.leases == 0 => self.unlink(&mut st, key)?,
                _ => return Ok(false),
            }
        };
        let _ = std::fs::remove_dir_all(&doomed);
        Ok(true)
    }
}

/// Unpacks `blob` with decompression on a thread of its own, feeding the
/// tar to the unpacker through a bounded channel: inflating gzip and
/// writing files each take about half of a big base layer's unpack, so on
/// two cores the unpack takes the longer of the two instead of their sum.
fn unpack_pipelined(blob: &Path, dest: &Path) -> Result<rbk_image::UnpackStats> {
    use std::io::Read;
    let file = std::fs::File::open(blob).ctx(|| format!("opening layer {}", blob.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
    let inflater = std::thread::Builder::new()
        .name("rbk-inflate".into())
        .spawn(move || {
            let mut r = match rbk_image::decompress(std::io::BufReader::with_capacity(1 << 20, file)) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut filled = 0;
                // Fill whole chunks: fewer, larger messages.
                while filled < buf.len() {
                    match r.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                // The unpacker stopped (it failed): stop too.
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
        })
        .ctx(|| "starting the decompression thread".to_owned())?;
    let reader = ChannelReader { rx, chunk: Vec::new(), pos: 0 };
    let out = unpack_layer(reader, dest, &UnpackOptions::default()).map_err(|e| match e {
        rbk_image::ImageError::Io { context, source } => {
            WorkerError::from(rbk_image::ImageError::Io { context: format!("unpacking {}: {context}", blob.display()), source })
        }
        e => WorkerError::from(e),
    });
    // On error the reader is gone, so the thread's next send fails and it ends.
    let _ = inflater.join();
    out
}

/// The receiving end of [`unpack_pipelined`]'s channel as a reader.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The sender finished: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
