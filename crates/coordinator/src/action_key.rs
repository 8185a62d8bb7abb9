//! The action-cache key of a step, computed by the coordinator from what it
//! will execute, never taken from the client.
//!
//! A client that could name the key of a step could pair one step's payload
//! with another's key and plant a result under a key it did not earn (the
//! next build of the honest step would come out `CACHED` with the planted
//! content). So, as in the remote-execution API where the key *is* the hash
//! of the action, the key is blake3 over a versioned, length-prefixed
//! encoding of everything that decides what the step produces:
//!
//! - its payload (the work, the base image, the context and the other stages
//!   it reads, as the client's planner wrote them), in one of two forms:
//!   - a payload reading a build context starts `{"context":"<manifest
//!     digest>"` (the worker's `FarmStep` puts that field first). The
//!     manifest digest is not content-only: the manifest records the
//!     client's staging copy's mtimes, its capture time and its pack layout,
//!     so an unchanged context has a new one on every submit. This form
//!     hashes instead the context's **tree digest**
//!     (`rbk_snapshot::tree_digest`: paths, kinds, modes, owners, file
//!     contents, link targets) and the payload bytes *after* the manifest
//!     digest. The coordinator computes the tree digest itself from the
//!     manifest it fetched by that digest, checked against it, and that
//!     manifest is the one the worker restores (`context_trees.rs`); no
//!     client claim about a context's content is ever used;
//!   - any other payload: all its bytes;
//! - its platform and the labels its worker must carry;
//! - its cache mounts (id and sharing) and the ids of the secrets it mounts;
//! - for each dependency, in the order the step lists them, the dependency's
//!   id (the payload names parents by id) and its own server-computed key.
//!
//! Two steps share a key only if they execute the same bytes on top of
//! results with the same keys, with, for the first form, contexts whose trees
//! differ at most in mtimes (a field the worker's COPY keeps, so a cached
//! result may carry an earlier capture's mtimes, as in BuildKit, whose context
//! checksums ignore mtimes too). The two forms are told apart by a tag, so
//! one never collides with the other. Why the first form is sound: its
//! payload is the fixed prefix, the manifest digest (64 hex digits, `-`, a
//! size: no escapes, so the JSON string is exactly those bytes) and the
//! hashed remainder; two payloads with one key therefore differ only in that
//! digest, whose trees the coordinator found equal. A payload naming
//! `context` a second time later on is refused before keying (`serde` would
//! refuse it on the worker as a duplicate field anyway).
//!
//! Presentation fields are left out: a payload that is a JSON object is
//! keyed as that object without `label`, `file` and `line` (the progress
//! label and the Dockerfile path and line, which only name the step in
//! messages), with `context` replaced by the tree digest, serialised
//! canonically (keys sorted). So the same step at another line of the
//! Dockerfile, or in a checkout at another path, keys the same. That is
//! sound for the same reason: what the worker executes is that object — its
//! payload parser refuses duplicate fields, so the object a duplicate would
//! hide never runs — and the fields left out change only messages.
//!
//! Bumping [`VERSION`] (or any change of this encoding) starts a fresh
//! action cache: old entries are never hit again and age out with the builds
//! that made them.

use std::collections::HashMap;

use rbk_snapshot::TreeDigest;
use rbk_store::Digest;

use crate::model::StepNode;

/// Part of every key: a change of the encoding never matches old keys.
pub const VERSION: &str = "rbk action key v3";

/// How a payload reading a build context starts (then the manifest digest
/// and its closing quote).
const CONTEXT_PREFIX: &[u8] = br#"{"context":""#;

/// The tree digest of each context manifest the graph's steps name (see
/// `context_trees.rs`).
pub type ContextTrees = HashMap<Digest, TreeDigest>;

/// A payload reading a build context: the manifest digest it starts with
/// and the bytes after it. `None` for any other payload, and for one whose
/// digest is not written in the canonical form (it is then keyed by all its
/// bytes).
pub fn split_context(payload: &[u8]) -> Option<(Digest, &[u8])> {
    let rest = payload.strip_prefix(CONTEXT_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let digest: Digest = text.parse().ok()?;
    (digest.to_string() == text).then_some((digest, &rest[end + 1..]))
}

/// Fields of a payload that only name the step in messages.
const PRESENTATION: &[&str] = &["label", "file", "line"];

/// The payload as keyed (see the module docs): a JSON object without its
/// presentation fields, its context (when it reads one) replaced by the
/// tree digest, in canonical form. `None` — keyed by all its bytes — for a
/// payload that is not a JSON object, or names a context whose tree is not
/// known or that is not written where and as [`split_context`] expects.
fn keyed_payload(payload: &[u8], trees: &ContextTrees) -> Option<Vec<u8>> {
    let serde_json::Value::Object(mut object) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    for f in PRESENTATION {
        object.remove(*f);
    }
    if object.contains_key("context") && !object["context"].is_null() {
        let (manifest, _) = split_context(payload)?;
        if object["context"].as_str() != Some(manifest.to_string().as_str()) {
            return None;
        }
        object.insert("context".into(), serde_json::Value::String(format!("tree {}", trees.get(&manifest)?)));
    }
    serde_json::to_vec(&serde_json::Value::Object(object)).ok()
}

/// Sets each step's `key` to its server-computed key. `steps` must be a
/// valid graph (known deps, no cycle: `validate_graph`); `trees` holds the
/// tree digest of every context they name (a context missing from it keys
/// its steps by their whole payload: sound, but never a hit across submits).
pub fn assign_keys(steps: &mut [StepNode], trees: &ContextTrees) {
    let index: HashMap<String, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
    let mut keys: Vec<Option<String>> = vec![None; steps.len()];
    // Iterative depth-first order, so a deep chain cannot overflow the stack.
    for root in 0..steps.len() {
        let mut stack = vec![root];
        while let Some(&i) = stack.last() {
            if keys[i].is_some() {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = steps[i].deps.iter().map(|d| index[d]).filter(|&j| keys[j].is_none()).collect();
            if pending.is_empty() {
                let parents: Vec<(&str, &str)> =
                    steps[i].deps.iter().map(|d| (d.as_str(), keys[index[d]].as_deref().expect("computed first"))).collect();
                keys[i] = Some(action_key(&steps[i], &parents, trees));
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
    }
    for (s, k) in steps.iter_mut().zip(keys) {
        s.key = k.expect("every step was visited");
    }
}

/// The key of `step` whose dependencies (in `step.deps` order) have the
/// given `(id, key)`s.
pub fn action_key(step: &StepNode, parents: &[(&str, &str)], trees: &ContextTrees) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(VERSION.as_bytes());
    match keyed_payload(&step.payload, trees) {
        Some(object) => {
            field(b"payload object without presentation fields, context by its tree");
            field(&object);
        }
        None => {
            field(b"payload");
            field(&step.payload);
        }
    }
    field(step.platform.as_bytes());
    field(&(step.labels.len() as u64).to_le_bytes());
    for (k, v) in &step.labels {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(&(step.cache_mounts.len() as u64).to_le_bytes());
    for m in &step.cache_mounts {
        field(m.id.as_bytes());
        field(m.sharing.as_str().as_bytes());
    }
    field(&(step.secret_ids.len() as u64).to_le_bytes());
    for s in &step.secret_ids {
        field(s.as_bytes());
    }
    field(&(parents.len() as u64).to_le_bytes());
    for (id, key) in parents {
        field(id.as_bytes());
        field(key.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, payload: &str, deps: &[&str]) -> StepNode {
        let deps = deps.iter().map(|d| d.to_string()).collect();
        StepNode { id: id.into(), key: format!("client-{id}"), deps, payload: payload.as_bytes().to_vec(), ..Default::default() }
    }

    fn keys(mut steps: Vec<StepNode>) -> Vec<String> {
        assign_keys(&mut steps, &ContextTrees::new());
        steps.into_iter().map(|s| s.key).collect()
    }

    #[test]
    fn the_client_key_is_ignored() {
        let mut a = step("a", "run x", &[]);
        let k1 = keys(vec![a.clone()]);
        a.key = "forged".into();
        assert_eq!(keys(vec![a]), k1);
        assert_ne!(k1[0], "client-a");
    }

    #[test]
    fn the_same_graph_gets_the_same_keys() {
        let g = || vec![step("b", "run y", &["a"]), step("a", "run x", &[])];
        assert_eq!(keys(g()), keys(g()));
    }

    #[test]
    fn a_different_payload_or_parent_changes_the_key() {
        let base = keys(vec![step("a", "run x", &[]), step("b", "run y", &["a"])]);
        let other_payload = keys(vec![step("a", "run x", &[]), step("b", "run z", &["a"])]);
        let other_parent = keys(vec![step("a", "run w", &[]), step("b", "run y", &["a"])]);
        assert_ne!(base[1], other_payload[1]);
        assert_ne!(base[1], other_parent[1], "a child's key holds its parent's");
    }

    fn tree(dirs: &[&str]) -> TreeDigest {
        let mut m = rbk_snapshot::Manifest::new("context");
        for d in dirs {
            m.entries.push(rbk_snapshot::Entry {
                path: d.as_bytes().to_vec(),
                kind: rbk_snapshot::EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Default::default(),
            });
        }
        rbk_snapshot::tree_digest(&m)
    }

    fn reading(manifest: Digest, rest: &str) -> String {
        format!(r#"{{"context":"{manifest}"{rest}"#)
    }

    #[test]
    fn two_manifests_of_one_tree_give_a_step_reading_the_context_one_key() {
        let (m1, m2) = (Digest::of(b"manifest 1"), Digest::of(b"manifest 2"));
        let trees = ContextTrees::from([(m1, tree(&["src"])), (m2, tree(&["src"]))]);
        let key = |m| action_key(&step("a", &reading(m, r#","work":"copy"}"#), &[]), &[], &trees);
        assert_eq!(key(m1), key(m2));
    }

    #[test]
    fn another_tree_or_other_bytes_after_the_manifest_digest_change_the_key() {
        let (m1, m2) = (Digest::of(b"manifest 1"), Digest::of(b"manifest 2"));
        let trees = ContextTrees::from([(m1, tree(&["src"])), (m2, tree(&["lib"]))]);
        let key = |m, rest| action_key(&step("a", &reading(m, rest), &[]), &[], &trees);
        assert_ne!(key(m1, r#","work":"copy"}"#), key(m2, r#","work":"copy"}"#), "another tree");
        assert_ne!(key(m1, r#","work":"copy"}"#), key(m1, r#","work":"run"}"#), "other work");
    }

    #[test]
    fn a_context_without_a_tree_digest_keys_the_step_by_its_whole_payload() {
        let (m1, m2) = (Digest::of(b"manifest 1"), Digest::of(b"manifest 2"));
        let key = |m| action_key(&step("a", &reading(m, "}"), &[]), &[], &ContextTrees::new());
        assert_ne!(key(m1), key(m2));
    }

    #[test]
    fn only_a_canonically_written_digest_at_the_very_start_is_a_context() {
        let m = Digest::of(b"manifest");
        assert_eq!(split_context(reading(m, ",\"x\":1}").as_bytes()), Some((m, &b",\"x\":1}"[..])));
        let upper = format!(r#"{{"context":"{}-{}"}}"#, m.hash_hex().to_uppercase(), m.size());
        assert_eq!(split_context(upper.as_bytes()), None, "upper-case hex");
        assert_eq!(split_context(format!(r#"{{ "context":"{m}"}}"#).as_bytes()), None, "a space first");
        assert_eq!(split_context(format!(r#"{{"version":1,"context":"{m}"}}"#).as_bytes()), None, "not the first field");
    }

    #[test]
    fn the_label_and_the_dockerfile_path_and_line_leave_the_key_alone() {
        let key = |p: &str| keys(vec![step("a", p, &[])])[0].clone();
        let here = key(r#"{"version":1,"label":"[2/3] RUN x","file":"/home/a/repo/Dockerfile","line":2,"work":"run x"}"#);
        let there = key(r#"{"version":1,"label":"[build 3/4] RUN x","file":"/srv/b/Dockerfile","line":9,"work":"run x"}"#);
        assert_eq!(here, there);
        assert_ne!(here, key(r#"{"version":1,"label":"[2/3] RUN x","file":"/home/a/repo/Dockerfile","line":2,"work":"run y"}"#));
    }

    #[test]
    fn a_context_payload_keys_by_its_tree_without_presentation_fields() {
        let (m1, m2) = (Digest::of(b"manifest 1"), Digest::of(b"manifest 2"));
        let trees = ContextTrees::from([(m1, tree(&["src"])), (m2, tree(&["src"]))]);
        let key = |m, rest| action_key(&step("a", &reading(m, rest), &[]), &[], &trees);
        assert_eq!(key(m1, r#","line":3,"work":"copy"}"#), key(m2, r#","line":7,"work":"copy"}"#));
        assert_ne!(key(m1, r#","work":"copy"}"#), key(m1, r#","work":"copy2"}"#));
    }

    #[test]
    fn mounts_secrets_platform_and_labels_are_in_the_key() {
        let base = keys(vec![step("a", "run x", &[])])[0].clone();
        let mut s = step("a", "run x", &[]);
        s.secret_ids.insert("npm".into());
        assert_ne!(keys(vec![s])[0], base);
        let mut s = step("a", "run x", &[]);
        s.platform = "linux/arm64".into();
        assert_ne!(keys(vec![s])[0], base);
        let mut s = step("a", "run x", &[]);
        s.labels.insert("gpu".into(), "yes".into());
        assert_ne!(keys(vec![s])[0], base);
        let mut s = step("a", "run x", &[]);
        s.cache_mounts.push(crate::model::CacheMountSpec { id: "pip".into(), sharing: crate::model::Sharing::Shared });
        assert_ne!(keys(vec![s])[0], base);
    }
}
