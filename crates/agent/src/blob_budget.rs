//! A farm worker's compressed layer blobs (`images/blobs/sha256`) kept
//! under a byte budget.
//!
//! Every layer a worker pulls or makes lands there before it is unpacked;
//! the unpacked copies are bounded by the executor's layer store, but the
//! blobs were not, so a long-lived CI worker filled its volume one base
//! image at a time. Blobs are only a local copy of what the content store
//! holds, so evicting one costs a download at worst: the least recently
//! used go first (a step's use touches its blobs), and the `held-layers/`
//! markers that tell the scheduler "this worker holds layer X" go with
//! them so affinity does not steer steps to a worker that no longer has X.
//!
//! The caller runs [`trim`] only while no step is between fetching a blob
//! and unpacking it (the farm executor's exclusive blob lock).

use std::collections::HashSet;
use std::path::Path;
use std::time::SystemTime;

/// What one [`trim`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub blobs: usize,
    pub bytes: u64,
}

/// Marks `blob` as just used (its mtime orders eviction). Best effort.
pub fn touch(blob: &Path) {
    let _ = std::fs::File::open(blob).and_then(|f| f.set_modified(SystemTime::now()));
}

/// Removes the least recently used blobs of `blobs_dir` until the rest fit
/// in `budget` bytes, and every marker in `held_dir` that names a removed
/// blob (a marker's content is the blob's `sha256:<hex>` digest; a marker
/// from an older worker, with no content, is dropped too, since what it
/// names cannot be checked). Temporary files (`.incoming-*`) are left to
/// their writers.
pub fn trim(blobs_dir: &Path, held_dir: &Path, budget: u64) -> Trimmed {
    let mut blobs: Vec<(SystemTime, u64, String)> = std::fs::read_dir(blobs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let meta = e.metadata().ok().filter(|m| m.is_file() && !name.starts_with('.'))?;
            Some((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), name))
        })
        .collect();
    let mut total: u64 = blobs.iter().map(|b| b.1).sum();
    let mut out = Trimmed::default();
    if total <= budget {
        return out;
    }
    blobs.sort();
    let mut gone = HashSet::new();
    for (_, len, name) in blobs {
        if total <= budget {
            break;
        }
        let path = blobs_dir.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total -= len;
                out.blobs += 1;
                out.bytes += len;
                gone.insert(format!("sha256:{name}"));
            }
            Err(e) => tracing::warn!("could not evict the layer blob {}: {e}", path.display()),
        }
    }
    drop_markers(held_dir, &gone);
    tracing::info!(blobs = out.blobs, bytes = out.bytes, budget, "evicted least recently used layer blobs");
    out
}

/// Removes the markers in `held_dir` that name a blob in `gone`
/// (`sha256:<hex>`), and legacy empty ones.
pub fn drop_markers(held_dir: &Path, gone: &HashSet<String>) {
    for marker in std::fs::read_dir(held_dir).into_iter().flatten().flatten() {
        let names = std::fs::read_to_string(marker.path()).unwrap_or_default();
        let names = names.trim();
        if names.is_empty() || gone.contains(names) {
            let _ = std::fs::remove_file(marker.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn blob(dir: &Path, name: &str, len: usize, age_s: u64) {
        let p = dir.join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn blobs_within_the_budget_are_all_kept() {
        let t = tempfile::tempdir().unwrap();
        blob(t.path(), "aa", 100, 30);
        blob(t.path(), "bb", 100, 20);
        assert_eq!(trim(t.path(), &t.path().join("none"), 200), Trimmed::default());
        assert_eq!(names(t.path()), ["aa", "bb"]);
    }

    #[test]
    fn the_least_recently_used_blobs_go_first_until_the_rest_fit() {
        let t = tempfile::tempdir().unwrap();
        blob(t.path(), "old", 100, 300);
        blob(t.path(), "mid", 100, 200);
        blob(t.path(), "new", 100, 100);
        let r = trim(t.path(), &t.path().join("none"), 150);
        assert_eq!(r, Trimmed { blobs: 2, bytes: 200 });
        assert_eq!(names(t.path()), ["new"]);
    }

    #[test]
    fn a_touched_blob_counts_as_recently_used() {
        let t = tempfile::tempdir().unwrap();
        blob(t.path(), "old", 100, 300);
        blob(t.path(), "new", 100, 100);
        touch(&t.path().join("old"));
        trim(t.path(), &t.path().join("none"), 100);
        assert_eq!(names(t.path()), ["old"]);
    }

    #[test]
    fn markers_of_evicted_blobs_and_legacy_empty_markers_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let (blobs, held) = (t.path().join("blobs"), t.path().join("held"));
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&held).unwrap();
        blob(&blobs, "old", 100, 300);
        blob(&blobs, "new", 100, 100);
        std::fs::write(held.join("b3-old"), "sha256:old").unwrap();
        std::fs::write(held.join("b3-new"), "sha256:new").unwrap();
        std::fs::write(held.join("b3-legacy"), "").unwrap();
        trim(&blobs, &held, 100);
        assert_eq!(names(&held), ["b3-new"]);
    }

    #[test]
    fn blobs_being_written_are_left_alone() {
        let t = tempfile::tempdir().unwrap();
        blob(t.path(), ".incoming-x", 500, 300);
        blob(t.path(), "aa", 100, 100);
        let r = trim(t.path(), &t.path().join("none"), 50);
        assert_eq!(r.blobs, 1);
        assert_eq!(names(t.path()), [".incoming-x"]);
    }
}
