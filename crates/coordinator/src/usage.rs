//! When each cache head and action-cache entry was last used: what
//! eviction (`eviction.rs`) orders by. Part of the replicated state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::HeadKey;

/// When each head and action-cache entry was last used (milliseconds);
/// entries exist only for heads and entries that exist, so it is bounded
/// by them. Maintained by `StateMachine::apply` from the times inside
/// commands, so it is the same on every Raft node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    heads: BTreeMap<HeadKey, u64>,
    actions: BTreeMap<(String, String), u64>,
}

impl Usage {
    pub(crate) fn head_used(&mut self, head: &HeadKey, at_ms: u64) {
        let e = self.heads.entry(head.clone()).or_default();
        *e = (*e).max(at_ms);
    }

    pub(crate) fn action_used(&mut self, namespace: &str, key: &str, at_ms: u64) {
        let e = self.actions.entry((namespace.to_owned(), key.to_owned())).or_default();
        *e = (*e).max(at_ms);
    }

    pub(crate) fn head_dropped(&mut self, head: &HeadKey) {
        self.heads.remove(head);
    }

    pub(crate) fn action_dropped(&mut self, namespace: &str, key: &str) {
        self.actions.remove(&(namespace.to_owned(), key.to_owned()));
    }

    pub fn head_last_used(&self, head: &HeadKey) -> Option<u64> {
        self.heads.get(head).copied()
    }

    pub fn action_last_used(&self, namespace: &str, key: &str) -> Option<u64> {
        self.actions.get(&(namespace.to_owned(), key.to_owned())).copied()
    }

    /// A head's last use: its last commit (`updated_ms`) at least.
    pub fn head_used_at(&self, key: &HeadKey, updated_ms: u64) -> u64 {
        self.head_last_used(key).unwrap_or(0).max(updated_ms)
    }

    /// An entry's last use: its creation (`created_ms`) at least.
    pub fn action_used_at(&self, namespace: &str, key: &str, created_ms: u64) -> u64 {
        self.action_last_used(namespace, key).unwrap_or(0).max(created_ms)
    }
}
