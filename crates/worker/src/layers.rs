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

use rbk_image::{OciDigest, UnpackOptions, unpack_layer_file};

use crate::error::{IoContext, Result, WorkerError};
use crate::step::LayerRef;

const TMP_PREFIX: &str = ".tmp-";
const SIZE_SUFFIX: &str = ".size";

#[derive(Debug)]
struct Entry {
    bytes: u64,
    last_used: u64,
    leases: usize,
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
            state.entries.insert(name, Entry { bytes, last_used: 0, leases: 0 });
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
        let stats = unpack_layer_file(blob, tmp.path(), &UnpackOptions::default())?;
        if stats.diff_id != layer.diff_id {
            return Err(WorkerError::path(
                blob,
                format!("layer {} unpacks to content {} but the image says its diff_id is {}", layer.digest, stats.diff_id, layer.diff_id),
            ));
        }
        let tmp = tmp.keep();
        std::fs::write(self.shared.root.join(format!("{key}{SIZE_SUFFIX}")), stats.tar_bytes.to_string())
            .ctx(|| format!("recording the size of layer {}", layer.diff_id))?;
        {
            let mut st = self.shared.state.lock().expect("layer store lock");
            if let Err(e) = std::fs::rename(&tmp, &path) {
                // Another step unpacked it meanwhile: keep theirs.
                let _ = std::fs::remove_dir_all(&tmp);
                if !path.is_dir() {
                    return Err(WorkerError::io(format!("moving unpacked layer into {}", path.display()), e));
                }
            }
            st.entries.entry(key.clone()).or_insert(Entry { bytes: stats.tar_bytes, last_used: 0, leases: 0 });
        }
        let lease = self.try_lease(&key, &path).ok_or_else(|| WorkerError::path(&path, "layer vanished right after unpacking"))?;
        self.evict()?;
        Ok(lease)
    }

    fn try_lease(&self, key: &str, path: &Path) -> Option<LayerLease> {
        let mut st = self.shared.state.lock().expect("layer store lock");
        st.clock += 1;
        let now = st.clock;
        let e = st.entries.get_mut(key)?;
        e.leases += 1;
        e.last_used = now;
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
                st.entries.remove(&key);
                // Out of the way under the lock, so no new lease finds a
                // half-deleted directory.
                let doomed = self.shared.root.join(format!("{TMP_PREFIX}evict-{key}"));
                std::fs::rename(self.shared.root.join(&key), &doomed).ctx(|| format!("evicting layer {key}"))?;
                let _ = std::fs::remove_file(self.shared.root.join(format!("{key}{SIZE_SUFFIX}")));
                (key, doomed)
            };
            let _ = std::fs::remove_dir_all(&victim.1);
            evicted.push(victim.0);
        }
        Ok(evicted)
    }
}
