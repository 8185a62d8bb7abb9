//! Which tenants "have" which blobs: the rule the `Content` service answers
//! by (issue #15, item 4).
//!
//! The store is one content-addressed space for every tenant, so the same
//! bytes are kept once (deduplication stays inside the store). What a
//! caller *sees* of it is scoped: a tenant has a blob once
//!
//! - it uploaded the bytes through `Content.Write` (verified against the
//!   digest, so the upload proves it holds the content; see
//!   `Command::OwnBlobs` in `state.rs`), or
//! - an action-cache entry of its own names the blob (a step's result:
//!   its layers and what its config names), or a cache head of its own
//!   commits it (the snapshot's manifest and every pack).
//!
//! A build graph naming a digest grants nothing: a tenant could name any
//! digest in a payload. Reads of a blob the tenant does not have answer
//! NotFound, exactly as a blob the store lacks does, and `FindMissing`
//! answers "missing" (the client then uploads, which the store dedups and
//! which records the ownership). So the store answers no question about
//! another tenant's content.
//!
//! Ownership is part of the replicated state machine, so a new leader
//! answers the same. It is bounded by the store itself: an entry exists
//! only for a blob that was uploaded or named by a result or head, and the
//! store collector forgets the entries of the blobs it deletes
//! (`Command::ForgetBlobs`); a blob collected and written
//! again is owned afresh by whoever uploads it.

use std::collections::{BTreeMap, BTreeSet};

use rbk_store::Digest;
use serde::{Deserialize, Serialize};

/// The most digests one `OwnBlobs` or `ForgetBlobs` command carries.
pub const OWN_BATCH_MAX: usize = 1000;

/// Digest → the tenants (namespaces) that have it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobOwners {
    owners: BTreeMap<Digest, BTreeSet<String>>,
}

impl BlobOwners {
    /// Records that `namespace` has every one of `blobs`.
    pub fn grant<'a>(&mut self, namespace: &str, blobs: impl IntoIterator<Item = &'a Digest>) {
        for d in blobs {
            let owners = self.owners.entry(*d).or_default();
            if !owners.contains(namespace) {
                owners.insert(namespace.to_owned());
            }
        }
    }

    /// Forgets every owner of `blobs` (the store no longer holds them).
    pub fn forget<'a>(&mut self, blobs: impl IntoIterator<Item = &'a Digest>) {
        for d in blobs {
            self.owners.remove(d);
        }
    }

    /// Whether `namespace` has `digest`.
    pub fn has(&self, namespace: &str, digest: &Digest) -> bool {
        self.owners.get(digest).is_some_and(|o| o.contains(namespace))
    }

    /// Whether any of `namespaces` has `digest`.
    pub fn any_has(&self, namespaces: &BTreeSet<String>, digest: &Digest) -> bool {
        self.owners.get(digest).is_some_and(|o| !o.is_disjoint(namespaces))
    }

    /// How many blobs have an owner.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_for_its_namespace_only() {
        let d = Digest::of(b"a's .env");
        let mut o = BlobOwners::default();
        o.grant("team-a", [&d]);
        assert!(o.has("team-a", &d));
        assert!(!o.has("team-b", &d));
        assert!(!o.any_has(&["team-b".to_string(), "team-c".to_string()].into(), &d));
        assert!(o.any_has(&["team-b".to_string(), "team-a".to_string()].into(), &d));
    }

    #[test]
    fn forgetting_a_blob_drops_every_owner() {
        let d = Digest::of(b"x");
        let mut o = BlobOwners::default();
        o.grant("team-a", [&d]);
        o.grant("team-b", [&d]);
        o.forget([&d]);
        assert!(!o.has("team-a", &d) && !o.has("team-b", &d));
        assert!(o.is_empty());
    }
}
