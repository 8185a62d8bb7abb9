//! Which content-store blobs the coordinator's state names: what the
//! store collector (`collector.rs`) marks from, and what a fenced commit
//! (`gc_fence.rs`) is checked against.
//!
//! Step payloads and result configs are opaque to the coordinator (the
//! worker crate's JSON, see `rbk_worker::payload`), and the coordinator
//! must not depend on the worker. So they are read *conservatively*: every
//! JSON string in them that parses as a store digest (`<64 hex>-<size>`) is
//! a reference. A string under a key named `context` is a snapshot (the
//! build context: its manifest and packs are live); any other is a blob
//! live by itself (a layer's `blake3`). Reading too much keeps a blob
//! longer; reading too little would delete one in use, so a payload that
//! is not JSON is scanned as text for digest-shaped words too.

use std::collections::BTreeSet;

use rbk_store::Digest;

use crate::model::{ActionResult, StepNode};

/// Blobs and snapshots named by some piece of state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Manifest digests: the snapshot and every pack it names are live.
    pub snapshots: BTreeSet<Digest>,
    /// Blobs live by themselves.
    pub blobs: BTreeSet<Digest>,
}

impl References {
    /// Everything named, snapshots and blobs alike.
    pub fn all(&self) -> impl Iterator<Item = &Digest> {
        self.snapshots.iter().chain(self.blobs.iter())
    }

    /// What a build graph names: its steps' contexts, base-image layers and
    /// stage sources.
    pub fn add_graph(&mut self, graph: &[StepNode]) {
        for step in graph {
            self.add_opaque(&step.payload);
        }
    }

    /// What an action-cache entry names: its layers, and whatever its
    /// opaque config names (the worker's layer chain).
    pub fn add_result(&mut self, result: &ActionResult) {
        self.blobs.extend(result.layers.iter().copied());
        self.add_opaque(&result.config);
    }

    /// Scans opaque bytes (JSON from the worker crate) for digests.
    pub fn add_opaque(&mut self, bytes: &[u8]) {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => self.add_json(&v, false),
            Err(_) => {
                for word in String::from_utf8_lossy(bytes).split(|c: char| !(c.is_ascii_hexdigit() || c == '-')) {
                    if let Ok(d) = word.parse::<Digest>() {
                        self.blobs.insert(d);
                    }
                }
            }
        }
    }

    fn add_json(&mut self, v: &serde_json::Value, under_context: bool) {
        match v {
            serde_json::Value::String(s) => {
                if let Ok(d) = s.parse::<Digest>() {
                    if under_context {
                        self.snapshots.insert(d);
                    } else {
                        self.blobs.insert(d);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| self.add_json(i, under_context)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    self.add_json(v, k == "context");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(payload: serde_json::Value) -> StepNode {
        StepNode { id: "s".into(), key: "k".into(), payload: serde_json::to_vec(&payload).unwrap(), ..Default::default() }
    }

    #[test]
    fn a_payload_context_is_a_snapshot_and_its_layers_are_blobs() {
        let (ctx, layer) = (Digest::of(b"context manifest"), Digest::of(b"layer"));
        let mut r = References::default();
        r.add_graph(&[step(serde_json::json!({
            "version": 1,
            "context": ctx.to_string(),
            "parent": {"kind": "layers", "layers": [{"digest": "sha256:00", "blake3": layer.to_string(), "size": 5}]},
        }))]);
        assert_eq!(r.snapshots, [ctx].into());
        assert_eq!(r.blobs, [layer].into());
    }

    #[test]
    fn a_result_names_its_layers_and_those_in_its_config() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let config = serde_json::to_vec(&serde_json::json!({"layers": [{"blake3": b.to_string()}]})).unwrap();
        let mut r = References::default();
        r.add_result(&ActionResult { layers: vec![a], config, duration_ms: 0, worker_id: String::new(), created_ms: 0 });
        assert_eq!(r.blobs, [a, b].into());
        assert!(r.snapshots.is_empty());
    }

    #[test]
    fn opaque_bytes_that_are_not_json_are_scanned_as_text() {
        let d = Digest::of(b"x");
        let mut r = References::default();
        r.add_opaque(format!("not json {d}, more").as_bytes());
        assert_eq!(r.blobs, [d].into());
    }

    #[test]
    fn strings_that_are_not_digests_name_nothing() {
        let mut r = References::default();
        r.add_opaque(br#"{"label": "RUN pip install", "digest": "sha256:abc", "size": 12}"#);
        assert_eq!(r, References::default());
    }
}
