//! Cache mounts on a worker: one local directory per scoped cache id, kept
//! in step with the id's head in the content store.
//!
//! Before a step the directory is restored from the head the coordinator
//! granted when it is missing or holds another snapshot (what makes a
//! fresh worker warm); after the step it is captured, incrementally against
//! the snapshot it holds, and reported to the coordinator, which moves the
//! head (merging concurrent commits, `rbk_coordinator::cache_heads`).
//!
//! A capture may still be on its way to the coordinator when the next step
//! mounting the same cache is granted (the capture runs after the step's
//! result, see the `background_commit` module): that step is granted the head
//! the captured one started from. The slot remembers that head (`base`), so
//! a grant of it keeps the newer local directory instead of restoring the
//! older head over it: a later step on the same worker uses the local
//! generation at once; any other grant (the head moved on, was merged or
//! pruned) is restored as usual.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbk_snapshot::{CaptureOptions, RestoreOptions, Snapshot, capture, restore};
use rbk_store::{Digest, Store};

use crate::exec_error::{ExecError, Result};

/// What capturing a cache directory produced.
#[derive(Debug, Clone, Copy)]
pub struct Captured {
    pub snapshot: Digest,
    /// Content bytes of the snapshot (what the head will weigh).
    pub total_bytes: u64,
    /// Bytes that were new to the store.
    pub bytes_uploaded: u64,
}

/// The worker's cache directories: `<root>/<blake3 of the id>/{dir,snapshot,statcache}`.
#[derive(Debug, Clone)]
pub struct CacheDirs {
    root: PathBuf,
}

/// What preparing a cache mount did, for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prepared {
    /// Bytes fetched from the store to bring the directory up to the head.
    pub bytes_restored: u64,
}

/// The local directory key of a granted cache mount: tenants never share
/// a directory, and each `private` slot has its own.
pub fn cache_key(namespace: &str, cache_id: &str, slot: u32) -> String {
    serde_json::json!([namespace, cache_id, slot]).to_string()
}

/// The head a grant names (`None`: the cache has none yet).
pub fn granted_head(g: &rbk_proto::worker::MountGrant) -> Result<Option<Digest>> {
    match g.snapshot.as_str() {
        "" => Ok(None),
        s => s.parse::<Digest>().map(Some).map_err(|source| ExecError::CacheHead { cache_id: g.cache_id.clone(), source }),
    }
}

impl CacheDirs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CacheDirs { root: root.into() }
    }

    fn slot(&self, id: &str) -> PathBuf {
        // The id comes from the Dockerfile: hash it so it can never name a
        // path outside the root.
        self.root
            .join(blake3::hash(id.as_bytes()).to_hex().as_str())
    }

    /// The directory mounted for `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.slot(id).join("dir")
    }

    fn local_snapshot(&self, id: &str) -> Result<Option<Digest>> {
        let p = self.slot(id).join("snapshot");
        match std::fs::read_to_string(&p) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ExecError::io(&p, format!("not a snapshot digest: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ExecError::io(&p, e)),
        }
    }

    fn set_local_snapshot(&self, id: &str, d: &Digest) -> Result<()> {
        let p = self.slot(id).join("snapshot");
        std::fs::write(&p, d.to_string()).map_err(|e| ExecError::io(&p, e))
    }

    /// Makes the directory for `id` hold snapshot `head`: restored
    /// incrementally when the directory holds another snapshot, untouched
    /// when it holds this one, emptied when there is no head (the head is
    /// the truth; a pruned cache starts over everywhere).
    pub async fn prepare_head(
        &self,
        store: &Arc<dyn Store>,
        id: &str,
        head: Option<Digest>,
    ) -> Result<Prepared> {
        let dir = self.dir(id);
        let mut out = Prepared::default();
        let local = if dir.is_dir() {
            self.local_snapshot(id)?
        } else {
            None
        };
        let slot = self.slot(id);
        let granted = head.map(|d| d.to_string()).unwrap_or_default();
        if head.is_some() && local.is_some() && local != head && std::fs::read_to_string(slot.join("base")).is_ok_and(|b| b == granted) {
            // Newer than the grant: captured here from it, the commit
            // still on its way (or lost, and then committed by this step).
            // Never for "no head": that is also what a pruned cache is
            // granted, and the head is the truth.
            return Ok(out);
        }
        std::fs::create_dir_all(&slot).map_err(|e| ExecError::io(&slot, e))?;
        let id_file = slot.join("id");
        std::fs::write(&id_file, id).map_err(|e| ExecError::io(&id_file, e))?;
        match head {
            Some(head_digest) if local != Some(head_digest) => {
                std::fs::create_dir_all(&dir).map_err(|e| ExecError::io(&dir, e))?;
                // Until the restore completes the directory holds neither
                // snapshot: an interrupted restore (an aborted prefetch, a
                // crash) must not leave it claiming the old one.
                let marker = slot.join("snapshot");
                if local.is_some() {
                    std::fs::remove_file(&marker).map_err(|e| ExecError::io(&marker, e))?;
                }
                let _ = std::fs::remove_file(slot.join("base"));
                let snap = Snapshot::load(&**store, head_digest).await?;
                let opts = RestoreOptions {
                    stat_cache: Some(slot.join("statcache")),
                    ..RestoreOptions::default()
                };
                let stats = restore(store.clone(), &snap, &dir, &opts).await?;
                out.bytes_restored = stats.bytes_fetched;
                self.set_local_snapshot(id, &head_digest)?;
            }
            None if local.is_some() => {
                std::fs::remove_dir_all(&dir).map_err(|e| ExecError::io(&dir, e))?;
                for f in ["snapshot", "statcache", "base"] {
                    let p = slot.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| ExecError::io(&p, e))?;
                    }
                }
            }
            _ => {}
        }
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| ExecError::io(&dir, e))?;
        }
        Ok(out)
    }

    /// Captures the directory for `id` (incrementally against the snapshot
    /// it holds) and records the result as what it holds now, derived from
    /// the head `granted` (the step's grant; `None`: no head).
    pub async fn capture(
        &self,
        store: &Arc<dyn Store>,
        namespace: &str,
        id: &str,
        granted: Option<Digest>,
    ) -> Result<Captured> {
        let dir = self.dir(id);
        // Until the capture is recorded the directory is neither the old
        // snapshot nor the new one: a capture that fails (or a crash) makes
        // the next step restore the head.
        let marker = self.slot(id).join("snapshot");
        let base = self.local_snapshot(id)?;
        if base.is_some() {
            std::fs::remove_file(&marker).map_err(|e| ExecError::io(&marker, e))?;
        }
        let mut opts = CaptureOptions::new(namespace);
        opts.stat_cache = Some(self.slot(id).join("statcache"));
        if let Some(d) = base {
            // The base only speeds capture up; a base the store lost is
            // not an error, the capture just reads everything.
            opts.base = Snapshot::load(&**store, d).await.ok();
        }
        let (snap, stats) = capture(store.clone(), &dir, &opts).await?;
        let base_file = self.slot(id).join("base");
        let granted = granted.map(|d| d.to_string()).unwrap_or_default();
        std::fs::write(&base_file, granted).map_err(|e| ExecError::io(&base_file, e))?;
        self.set_local_snapshot(id, &snap.digest)?;
        Ok(Captured {
            snapshot: snap.digest,
            total_bytes: snap.manifest.content_bytes(),
            bytes_uploaded: stats.bytes_uploaded,
        })
    }

    /// The ids whose directories hold a known snapshot, with it: what a
    /// worker tells the scheduler it holds (for affinity).
    pub fn held(&self) -> Vec<(String, Digest)> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(id) = std::fs::read_to_string(e.path().join("id")) else {
                continue;
            };
            // Only slots whose name matches their id (never trust a stray file).
            if self.slot(&id) != e.path() || !self.dir(&id).is_dir() {
                continue;
            }
            if let Ok(Some(d)) = self.local_snapshot(&id) {
                out.push((id, d));
            }
        }
        out.sort();
        out
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_store::FilesystemStore;

    async fn store(dir: &Path) -> Arc<dyn Store> {
        Arc::new(FilesystemStore::open(dir).await.unwrap())
    }

    /// Worker `a` (under a fresh store) wrote `file` into cache `id` of
    /// namespace `ns` and captured it: `captured.snapshot` is the head the
    /// coordinator would grant the next step, on `a` or on another worker.
    struct Filled {
        tmp: tempfile::TempDir,
        store: Arc<dyn Store>,
        a: CacheDirs,
        captured: Captured,
    }

    async fn filled_by_worker_a(ns: &str, id: &str, file: &str, data: &[u8]) -> Filled {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(&tmp.path().join("store")).await;
        let a = CacheDirs::new(tmp.path().join("a"));
        a.prepare_head(&store, id, None).await.unwrap();
        std::fs::write(a.dir(id).join(file), data).unwrap();
        let captured = a.capture(&store, ns, id, None).await.unwrap();
        Filled { tmp, store, a, captured }
    }

    async fn a_wheel_built_once() -> Filled {
        filled_by_worker_a("local", "local/pip", "wheel", b"built once").await
    }

    #[tokio::test]
    async fn a_fresh_worker_restores_the_head_written_by_another() {
        let Filled { tmp, store, captured, a: _ } = a_wheel_built_once().await;
        let b = CacheDirs::new(tmp.path().join("b"));
        let p = b.prepare_head(&store, "local/pip", Some(captured.snapshot)).await.unwrap();
        assert!(p.bytes_restored > 0);
        assert_eq!(std::fs::read(b.dir("local/pip").join("wheel")).unwrap(), b"built once");
    }

    #[tokio::test]
    async fn an_unchanged_cache_captures_the_same_snapshot() {
        let Filled { tmp: _tmp, store, a, captured } = filled_by_worker_a("local", "local/c", "f", b"x").await;
        let first = captured.snapshot;
        a.prepare_head(&store, "local/c", Some(first)).await.unwrap();
        assert_eq!(a.capture(&store, "local", "local/c", Some(first)).await.unwrap().snapshot, first);
    }

    #[tokio::test]
    async fn a_directory_already_at_the_head_restores_nothing() {
        let Filled { tmp, store, captured, a: _ } = a_wheel_built_once().await;
        let head = captured.snapshot;
        let b = CacheDirs::new(tmp.path().join("b"));
        assert!(b.prepare_head(&store, "local/pip", Some(head)).await.unwrap().bytes_restored > 0);
        assert_eq!(b.prepare_head(&store, "local/pip", Some(head)).await.unwrap().bytes_restored, 0);
        assert_eq!(std::fs::read(b.dir("local/pip").join("wheel")).unwrap(), b"built once");
    }

    #[tokio::test]
    async fn a_directory_without_head_is_emptied_and_held_lists_what_is_held() {
        let Filled { tmp: _tmp, store, a, captured: c } = filled_by_worker_a("ns", "ns/c", "f", b"x").await;
        assert_eq!(c.total_bytes, 1);
        assert_eq!(a.held(), vec![("ns/c".to_owned(), c.snapshot)]);
        a.prepare_head(&store, "ns/c", None).await.unwrap();
        assert!(!a.dir("ns/c").join("f").exists());
        assert!(a.held().is_empty());
    }

    #[tokio::test]
    async fn a_grant_of_the_head_a_newer_local_capture_started_from_keeps_the_local_directory() {
        // a captured `wheel` (head H1, committed); a later step on a wrote
        // `more` and captured it, its commit still on its way: the next
        // grant is still H1.
        let Filled { tmp: _tmp, store, a, captured } = a_wheel_built_once().await;
        let h1 = captured.snapshot;
        a.prepare_head(&store, "local/pip", Some(h1)).await.unwrap();
        std::fs::write(a.dir("local/pip").join("more"), b"newer").unwrap();
        let newer = a.capture(&store, "local", "local/pip", Some(h1)).await.unwrap();
        let p = a.prepare_head(&store, "local/pip", Some(h1)).await.unwrap();
        assert_eq!(p.bytes_restored, 0);
        assert_eq!(std::fs::read(a.dir("local/pip").join("more")).unwrap(), b"newer");
        assert_eq!(a.held(), vec![("local/pip".to_owned(), newer.snapshot)]);
    }

    #[tokio::test]
    async fn a_grant_of_another_head_restores_it_over_a_newer_local_capture() {
        let Filled { tmp, store, a, captured } = a_wheel_built_once().await;
        let h1 = captured.snapshot;
        // Worker b moved the head on from H1 meanwhile.
        let b = CacheDirs::new(tmp.path().join("b"));
        b.prepare_head(&store, "local/pip", Some(h1)).await.unwrap();
        std::fs::write(b.dir("local/pip").join("from-b"), b"b").unwrap();
        let h2 = b.capture(&store, "local", "local/pip", Some(h1)).await.unwrap().snapshot;
        std::fs::write(a.dir("local/pip").join("more"), b"newer").unwrap();
        a.capture(&store, "local", "local/pip", Some(h1)).await.unwrap();
        a.prepare_head(&store, "local/pip", Some(h2)).await.unwrap();
        assert!(a.dir("local/pip").join("from-b").exists());
        assert!(!a.dir("local/pip").join("more").exists());
    }

    #[test]
    fn cache_ids_never_name_paths_outside_the_root() {
        let c = CacheDirs::new("/tmp/root");
        assert!(c.dir("../../etc").starts_with("/tmp/root"));
        assert_eq!(
            c.dir("../../etc").parent().unwrap().parent().unwrap(),
            Path::new("/tmp/root")
        );
    }
}
