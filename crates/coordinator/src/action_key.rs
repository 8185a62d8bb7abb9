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
//! - its payload bytes (the work, the base image, the context digest and the
//!   other stages it reads, as the client's planner wrote them);
//! - its platform and the labels its worker must carry;
//! - its cache mounts (id and sharing) and the ids of the secrets it mounts;
//! - for each dependency, in the order the step lists them, the dependency's
//!   id (the payload names parents by id) and its own server-computed key.
//!
//! Two steps share a key only if they execute the same bytes on top of
//! results with the same keys, so a result stored under a key is one some
//! worker produced for exactly that action. Bumping [`VERSION`] (or any
//! change of this encoding) starts a fresh action cache: old entries are
//! never hit again and age out with the builds that made them.

use std::collections::HashMap;

use crate::model::StepNode;

/// Part of every key: a change of the encoding never matches old keys.
pub const VERSION: &str = "rbk action key v1";

/// Sets each step's `key` to its server-computed key. `steps` must be a
/// valid graph (known deps, no cycle: `validate_graph`).
pub fn assign_keys(steps: &mut [StepNode]) {
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
                keys[i] = Some(action_key(&steps[i], &parents));
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
pub fn action_key(step: &StepNode, parents: &[(&str, &str)]) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(VERSION.as_bytes());
    field(&step.payload);
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
        StepNode {
            id: id.into(),
            key: format!("client-{id}"),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            platform: String::new(),
            labels: Default::default(),
            cache_mounts: vec![],
            payload: payload.as_bytes().to_vec(),
            name: String::new(),
            secret_ids: Default::default(),
        }
    }

    fn keys(mut steps: Vec<StepNode>) -> Vec<String> {
        assign_keys(&mut steps);
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
