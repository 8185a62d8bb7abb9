//! A farm worker's whole local disk kept under one limit
//! (`rbk worker --disk-limit`).
//!
//! The layer budget bounds unpacked layers and their blobs, and contexts
//! were bounded by count; but a long-lived worker also keeps restored
//! contexts of any size and a cache-mount directory per cache id it ever
//! ran, so its volume still filled under a stream of distinct builds.
//! Everything it keeps is a local copy of something in the content store
//! (a layer blob, an unpacked layer, a context snapshot, a cache head), so
//! any of it may go at the cost of a download: after each step, while the
//! disk is over the limit, the least recently used item *of any kind*
//! goes first. What a running step uses is never offered: leased layers,
//! contexts in use, cache directories whose lock a step holds, and blobs
//! unless no step is running at all.
//!
//! This module holds the choice ([`choose`]) and the measurements; the
//! farm executor gathers the candidates under its locks and removes them.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rbk_worker::layers::LayerStore;

/// The default `--disk-limit`: room for the default layer budget twice
/// (unpacked layers and their blobs, 20 GiB each) plus contexts and caches.
pub const DEFAULT_DISK_LIMIT: u64 = 50 << 30;

/// Something the worker keeps that can be removed and fetched again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// `contexts/<digest>`.
    Context(String),
    /// `images/blobs/sha256/<hex>` (and the `held-layers/` marker naming it).
    Blob(String),
    /// An unpacked layer, by diff_id hex (`worker/layers/<hex>`).
    Layer(String),
    /// A cache-mount slot directory under the cache root, by its name.
    Cache(String),
}

/// An item that may be evicted: its size and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub item: Item,
    pub bytes: u64,
    pub used_at: SystemTime,
}

/// The candidates to remove, least recently used first, until `used`
/// bytes fit in `limit` (or none is left: what running steps use may keep
/// the disk above the limit until they finish).
pub fn choose(used: u64, limit: u64, mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| (a.used_at, &a.item).cmp(&(b.used_at, &b.item)));
    let mut left = used;
    let mut out = Vec::new();
    for c in candidates {
        if left <= limit {
            break;
        }
        left = left.saturating_sub(c.bytes);
        out.push(c);
    }
    out
}

/// Bytes of the files and directories under `path` (apparent sizes, as
/// `du --apparent-size -b`), not descending into other filesystems (a
/// running step's overlay mounts its layers under its scratch dir, which
/// would count them twice) nor into the directories `skip` names.
pub fn bytes_under(path: &Path, skip: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(path) else { return 0 };
    let dev = top.dev();
    let mut total = top.len();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            if md.dev() != dev || skip(&p) {
                continue;
            }
            total += md.len();
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    total
}

/// Sizes of restored contexts, measured once each: a context directory is
/// complete when it is renamed into place and never written after.
#[derive(Debug, Default)]
pub struct ContextSizes {
    known: HashMap<String, u64>,
}

impl ContextSizes {
    /// The size of `contexts/<name>`.
    pub fn of(&mut self, dir: &Path, name: &str) -> u64 {
        *self.known.entry(name.to_owned()).or_insert_with(|| bytes_under(&dir.join(name), &|_| false))
    }

    pub fn forget(&mut self, name: &str) {
        self.known.remove(name);
    }

    /// Drops what is known of contexts no longer on disk.
    pub fn retain(&mut self, present: &HashSet<String>) {
        self.known.retain(|k, _| present.contains(k));
    }
}

/// One pass of the disk budget over a worker's state, gathered by the
/// farm executor under its locks (so everything named free here stays
/// free until the pass ends) and run on a blocking thread.
#[derive(Debug)]
pub struct Sweep {
    /// The worker's state dir: `contexts/`, `images/`, `held-layers/`,
    /// `worker/` (the executor: `layers/`, step scratch, runtime state).
    pub root: PathBuf,
    /// The cache-mount root (`root/caches` or `--cache-dir`).
    pub cache_root: PathBuf,
    pub layers: LayerStore,
    pub context_sizes: Arc<Mutex<ContextSizes>>,
    pub limit: u64,
    /// Contexts running steps use.
    pub contexts_in_use: HashSet<String>,
    /// Whether no step is running, so blobs may go (a step fetches a blob
    /// before it unpacks or reads it).
    pub blobs_free: bool,
    /// Cache slots (directory names under `cache_root`) whose lock this
    /// pass holds.
    pub free_slots: HashSet<String>,
}

/// What one [`Sweep`] saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Bytes in use before the pass.
    pub used: u64,
    pub removed: usize,
    pub freed: u64,
    /// Of `used`: the cache-mount directories, the unpacked layers and the
    /// compressed layer blobs (before the pass; for the Workers page).
    pub cache_bytes: u64,
    pub layer_bytes: u64,
    pub blob_bytes: u64,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect();
    v.sort();
    v
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Sweep {
    /// Measures the worker's disk use and, over the limit, removes the
    /// least recently used free items until it fits.
    pub fn run(self) -> Swept {
        let contexts = self.root.join("contexts");
        let layers_dir = self.root.join("worker").join("layers");
        let blobs = self.root.join("images").join("blobs").join("sha256");
        let mut sizes = self.context_sizes.lock().expect("context sizes");
        // Restored contexts (complete ones; a restore in progress, named
        // with a dot, is walked), measured once each.
        let context_names: Vec<String> = names_in(&contexts).into_iter().filter(|n| !n.starts_with('.')).collect();
        sizes.retain(&context_names.iter().cloned().collect());
        let context_bytes: HashMap<String, u64> = context_names.iter().map(|n| (n.clone(), sizes.of(&contexts, n))).collect();
        // Cache slots, each walked (a step writes into them).
        let slot_bytes: HashMap<String, u64> =
            names_in(&self.cache_root).into_iter().map(|n| (n.clone(), bytes_under(&self.cache_root.join(&n), &|_| false))).collect();
        let skip = |p: &Path| {
            p == layers_dir
                || p == self.cache_root
                || (p.parent() == Some(contexts.as_path()) && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| context_bytes.contains_key(n)))
        };
        // The skipped roots' own directory entries count too.
        let own = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.len());
        let used = bytes_under(&self.root, &skip)
            + own(&layers_dir)
            + own(&self.cache_root)
            + self.layers.bytes()
            + context_bytes.values().sum::<u64>()
            + slot_bytes.values().sum::<u64>();
        let blob_bytes: u64 = std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()))
            .sum();
        let mut out = Swept {
            used,
            cache_bytes: slot_bytes.values().sum(),
            layer_bytes: self.layers.bytes(),
            blob_bytes,
            ..Swept::default()
        };
        if used <= self.limit {
            return out;
        }
        let mut candidates = Vec::new();
        for (name, bytes) in &context_bytes {
            if !self.contexts_in_use.contains(name) {
                candidates.push(Candidate { item: Item::Context(name.clone()), bytes: *bytes, used_at: mtime(&contexts.join(name)) });
            }
        }
        if self.blobs_free {
            for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
                let Ok(md) = e.metadata() else { continue };
                if md.is_file() && !name.starts_with('.') {
                    candidates.push(Candidate { item: Item::Blob(name), bytes: md.len(), used_at: md.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
                }
            }
        }
        for l in self.layers.unused() {
            candidates.push(Candidate { item: Item::Layer(l.key), bytes: l.bytes, used_at: l.used_at });
        }
        for (name, bytes) in &slot_bytes {
            if self.free_slots.contains(name) {
                candidates.push(Candidate { item: Item::Cache(name.clone()), bytes: *bytes, used_at: last_touched(&self.cache_root.join(name)) });
            }
        }
        let mut gone_blobs = HashSet::new();
        for c in choose(used, self.limit, candidates) {
            let removed = match &c.item {
                Item::Context(n) => {
                    let ok = std::fs::remove_dir_all(contexts.join(n)).is_ok();
                    sizes.forget(n);
                    ok
                }
                Item::Blob(n) => {
                    let ok = std::fs::remove_file(blobs.join(n)).is_ok();
                    if ok {
                        gone_blobs.insert(format!("sha256:{n}"));
                    }
                    ok
                }
                Item::Layer(k) => self.layers.remove_unused(k).unwrap_or_else(|e| {
                    tracing::warn!("could not evict the unpacked layer {k}: {e}");
                    false
                }),
                Item::Cache(n) => std::fs::remove_dir_all(self.cache_root.join(n)).is_ok(),
            };
            if removed {
                out.removed += 1;
                out.freed += c.bytes;
            } else {
                tracing::warn!(item = ?c.item, "could not evict from the worker's disk");
            }
        }
        if !gone_blobs.is_empty() {
            crate::blob_budget::drop_markers(&self.root.join("held-layers"), &gone_blobs);
        }
        tracing::info!(used, limit = self.limit, removed = out.removed, freed = out.freed, "evicted least recently used local state over the disk limit");
        out
    }
}

/// The newest modification time of `path` and its direct children: a
/// cache slot's `snapshot` file is rewritten by every capture and restore.
pub fn last_touched(path: &Path) -> SystemTime {
    let own = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .fold(own, SystemTime::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn c(item: Item, bytes: u64, age_s: u64) -> Candidate {
        Candidate { item, bytes, used_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s) }
    }

    #[test]
    fn nothing_is_chosen_within_the_limit() {
        assert_eq!(choose(100, 100, vec![c(Item::Blob("a".into()), 50, 10)]), vec![]);
    }

    #[test]
    fn the_least_recently_used_of_any_kind_go_first_until_the_rest_fit() {
        let candidates = vec![
            c(Item::Layer("new".into()), 100, 10),
            c(Item::Context("oldest".into()), 100, 300),
            c(Item::Cache("mid".into()), 100, 200),
            c(Item::Blob("old".into()), 100, 250),
        ];
        let chosen: Vec<Item> = choose(400, 150, candidates).into_iter().map(|c| c.item).collect();
        assert_eq!(chosen, [Item::Context("oldest".into()), Item::Blob("old".into()), Item::Cache("mid".into())]);
    }

    #[test]
    fn when_every_candidate_goes_and_the_rest_still_does_not_fit_all_are_chosen() {
        // The rest is what running steps use: it stays.
        let chosen = choose(1000, 10, vec![c(Item::Blob("a".into()), 10, 1), c(Item::Blob("b".into()), 10, 2)]);
        assert_eq!(chosen.len(), 2);
    }

    #[test]
    fn bytes_under_counts_files_and_directories_and_skips_what_it_is_told_to() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("skipped")).unwrap();
        std::fs::write(t.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(t.path().join("skipped/g"), vec![0u8; 5000]).unwrap();
        let dirs = ["", "a", "a/b"].iter().map(|d| std::fs::metadata(t.path().join(d)).unwrap().len()).sum::<u64>();
        let skip_dir = t.path().join("skipped");
        assert_eq!(bytes_under(t.path(), &|p| p == skip_dir), dirs + 1000);
    }
}
