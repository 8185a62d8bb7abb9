//! The tree digests of the build contexts a submitted graph reads: what
//! `action_key.rs` keys a context-reading step by instead of the manifest
//! digest in its payload.
//!
//! The coordinator reads each manifest itself, by the digest the payload
//! names (the manifest the worker will restore), checks that the stored
//! blob hashes to that digest, decodes (so validates) it and computes
//! `rbk_snapshot::tree_digest`. Nothing a client says about a context's
//! content is used. Manifests are untrusted and read on the submit path, so
//! every read is bounded: the blob's size (known from its digest before it
//! is fetched), its size uncompressed, the number of distinct contexts one
//! graph may name, and the reads running at once. A digest's tree never
//! changes, so results are kept (a bounded number, oldest dropped first)
//! and an unchanged context is read once per coordinator.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rbk_snapshot::{Manifest, TreeDigest, tree_digest};
use rbk_store::{Digest, Store, StoreError, StoreExt};
use tokio::sync::Semaphore;

use crate::action_key::{ContextTrees, split_context};
use crate::model::StepNode;

/// Largest context manifest blob the coordinator fetches (a context of a
/// few hundred thousand files).
pub const MAX_MANIFEST_BLOB_BYTES: u64 = 32 << 20;
/// Largest context manifest, uncompressed, it decodes.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// Distinct contexts one graph may name (a Dockerfile build has one).
pub const MAX_CONTEXTS_PER_BUILD: usize = 16;
/// Manifest reads at once, over all submits.
const CONCURRENT_READS: usize = 4;
/// Tree digests remembered.
const REMEMBERED: usize = 4096;

/// Reads context manifests from the store and remembers their trees.
pub struct ContextReader {
    store: Arc<dyn Store>,
    reads: Semaphore,
    known: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    trees: HashMap<Digest, TreeDigest>,
    order: VecDeque<Digest>,
}

/// Why a graph's contexts cannot be keyed; the message names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Not a readable manifest within the bounds: the client's fault.
    #[error("{0}")]
    Bad(String),
    /// The store failed while reading one: worth a retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Why one context could not be read; the caller names the step.
enum Unread {
    /// The client's fault: a refusal.
    Bad(String),
    /// The store's: worth a retry.
    Store(StoreError),
}

impl ContextReader {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, reads: Semaphore::new(CONCURRENT_READS), known: Mutex::default() }
    }

    /// The tree digest of every context `steps` read. Refuses, naming the
    /// step, a context that is not a readable manifest within the bounds,
    /// and a payload that names `context` again after its first field.
    pub async fn resolve(&self, steps: &[StepNode]) -> Result<ContextTrees, ContextError> {
        let mut wanted: Vec<(Digest, &StepNode)> = Vec::new();
        for step in steps {
            let Some((manifest, _)) = split_context(&step.payload) else { continue };
            check_single_context(step, manifest)?;
            if !wanted.iter().any(|(m, _)| *m == manifest) {
                wanted.push((manifest, step));
                if wanted.len() > MAX_CONTEXTS_PER_BUILD {
                    return Err(bad(step, manifest, format!("the graph names more than {MAX_CONTEXTS_PER_BUILD} build contexts")));
                }
            }
        }
        let mut trees = ContextTrees::new();
        for (manifest, step) in wanted {
            let tree = match self.tree(manifest).await {
                Ok(t) => t,
                Err(Unread::Bad(why)) => return Err(bad(step, manifest, why)),
                Err(Unread::Store(e)) => {
                    return Err(ContextError::Unavailable(format!("{}: reading its build context {manifest}: {e}", name(step))));
                }
            };
            trees.insert(manifest, tree);
        }
        Ok(trees)
    }

    async fn tree(&self, manifest: Digest) -> Result<TreeDigest, Unread> {
        if let Some(t) = self.known.lock().unwrap().trees.get(&manifest) {
            return Ok(*t);
        }
        if manifest.size() > MAX_MANIFEST_BLOB_BYTES {
            return Err(Unread::Bad(format!(
                "its manifest is {} bytes, more than the {MAX_MANIFEST_BLOB_BYTES} a coordinator reads",
                manifest.size()
            )));
        }
        let tree = {
            let _permit = self.reads.acquire().await.expect("the semaphore is never closed");
            let blob = self.store.get_bytes(manifest).await.map_err(|e| match e {
                StoreError::NotFound(_) => Unread::Bad("it is not in the store (upload the context before submitting)".into()),
                e => Unread::Store(e),
            })?;
            // Decoding and hashing a large manifest is CPU work: off the
            // runtime's worker threads.
            tokio::task::spawn_blocking(move || {
                let actual = Digest::of(&blob);
                if actual != manifest {
                    return Err(Unread::Bad(format!("the stored blob hashes to {actual}")));
                }
                let m = Manifest::decode_within(&blob, MAX_MANIFEST_BYTES).map_err(|e| Unread::Bad(e.to_string()))?;
                Ok(tree_digest(&m))
            })
            .await
            .map_err(|e| Unread::Bad(format!("reading it panicked: {e}")))??
        };
        let mut known = self.known.lock().unwrap();
        if known.trees.insert(manifest, tree).is_none() {
            known.order.push_back(manifest);
            if known.order.len() > REMEMBERED
                && let Some(old) = known.order.pop_front()
            {
                known.trees.remove(&old);
            }
        }
        Ok(tree)
    }
}

/// The key holds the bytes after the first `context` field only; a second
/// one (JSON keeps the last of duplicate keys) would name a context the key
/// does not cover.
fn check_single_context(step: &StepNode, manifest: Digest) -> Result<(), ContextError> {
    let named = serde_json::from_slice::<serde_json::Value>(&step.payload)
        .ok()
        .and_then(|v| v.get("context").and_then(|c| c.as_str()).map(str::to_owned));
    match named {
        Some(c) if c == manifest.to_string() => Ok(()),
        Some(c) => Err(bad(step, manifest, format!("its payload names another context, {c:?}, after the first"))),
        None => Err(bad(step, manifest, "its payload is not a JSON object naming that context".into())),
    }
}

fn name(step: &StepNode) -> String {
    if step.name.is_empty() { format!("step {}", step.id) } else { format!("step {} ({})", step.id, step.name) }
}

fn bad(step: &StepNode, manifest: Digest, why: String) -> ContextError {
    ContextError::Bad(format!("{}: build context {manifest}: {why}", name(step)))
}

#[cfg(test)]
mod tests {
    use rbk_snapshot::{CaptureOptions, capture};
    use rbk_store::MemoryStore;

    use super::*;

    fn step(id: &str, payload: String) -> StepNode {
        StepNode { id: id.into(), payload: payload.into_bytes(), name: format!("COPY {id}"), ..Default::default() }
    }

    fn reading(id: &str, manifest: impl std::fmt::Display) -> StepNode {
        step(id, format!(r#"{{"context":"{manifest}","version":1}}"#))
    }

    /// Captures a directory holding `files` into `store`; `mtime` is set on
    /// each file.
    async fn context(store: &Arc<MemoryStore>, files: &[(&str, &str)], mtime: u64) -> Digest {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::write(&p, text).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        let store: Arc<dyn Store> = store.clone();
        capture(store, dir.path(), &CaptureOptions::new("context")).await.unwrap().0.digest
    }

    fn message(r: Result<ContextTrees, ContextError>) -> String {
        r.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn two_captures_of_one_tree_with_other_mtimes_have_one_tree_digest() {
        let store = Arc::new(MemoryStore::default());
        let m1 = context(&store, &[("a.txt", "hello")], 1_000).await;
        let m2 = context(&store, &[("a.txt", "hello")], 2_000).await;
        assert_ne!(m1, m2, "the manifests differ");
        let trees = ContextReader::new(store.clone()).resolve(&[reading("s1", m1), reading("s2", m2)]).await.unwrap();
        assert_eq!(trees[&m1], trees[&m2]);
        let m3 = context(&store, &[("a.txt", "hellO")], 1_000).await;
        let trees = ContextReader::new(store).resolve(&[reading("s1", m1), reading("s3", m3)]).await.unwrap();
        assert_ne!(trees[&m1], trees[&m3], "other content");
    }

    #[tokio::test]
    async fn a_context_the_store_lacks_is_refused_naming_the_step() {
        let reader = ContextReader::new(Arc::new(MemoryStore::default()));
        let err = message(reader.resolve(&[reading("s7", Digest::of(b"no such manifest"))]).await);
        assert!(err.contains("step s7 (COPY s7)") && err.contains("not in the store"), "{err}");
    }

    #[tokio::test]
    async fn a_stored_blob_that_is_not_a_manifest_is_refused_naming_the_step() {
        let store = Arc::new(MemoryStore::default());
        let d = Digest::of(b"just some bytes");
        store.put(d, rbk_store::stream_from_bytes(bytes::Bytes::from_static(b"just some bytes"))).await.unwrap();
        let err = message(ContextReader::new(store).resolve(&[reading("s2", d)]).await);
        assert!(err.contains("step s2 (COPY s2)") && err.contains("not a snapshot manifest"), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_past_the_size_bound_is_refused_without_reading_it() {
        let huge = Digest::new(*Digest::of(b"x").hash(), MAX_MANIFEST_BLOB_BYTES + 1);
        let err = message(ContextReader::new(Arc::new(MemoryStore::default())).resolve(&[reading("s1", huge)]).await);
        assert!(err.contains("step s1") && err.contains("more than the"), "{err}");
    }

    #[tokio::test]
    async fn a_payload_naming_a_second_context_after_the_first_is_refused_naming_the_step() {
        let store = Arc::new(MemoryStore::default());
        let (m1, m2) = (context(&store, &[("a", "1")], 1).await, context(&store, &[("a", "2")], 1).await);
        let twice = step("s4", format!(r#"{{"context":"{m1}","version":1,"context":"{m2}"}}"#));
        let err = message(ContextReader::new(store).resolve(&[twice]).await);
        assert!(err.contains("step s4 (COPY s4)") && err.contains("names another context"), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_is_read_once_per_coordinator() {
        let store = Arc::new(MemoryStore::default());
        let m = context(&store, &[("a.txt", "hello")], 1).await;
        let reader = ContextReader::new(store.clone());
        let first = reader.resolve(&[reading("s1", m)]).await.unwrap();
        store.delete(m).await.unwrap();
        assert_eq!(reader.resolve(&[reading("s1", m)]).await.unwrap(), first, "served from memory");
    }

    #[tokio::test]
    async fn steps_not_reading_a_context_need_no_read() {
        let reader = ContextReader::new(Arc::new(MemoryStore::default()));
        let trees = reader.resolve(&[step("s1", r#"{"version":1,"work":"run"}"#.into())]).await.unwrap();
        assert!(trees.is_empty());
    }
}
