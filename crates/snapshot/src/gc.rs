//! Garbage collection and eviction.
//!
//! The store is one blob space that also holds layers, so GC never lists
//! the store and deletes "what no snapshot uses": it is told which
//! snapshots died (evicted by [`evict`], replaced as a cache head) and which
//! live — across *all* namespaces, since identical packs from two tenants
//! share a name — and deletes only packs that dead snapshots used and no
//! live one does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rbk_store::{ByteRange, Digest, Store, StoreExt};

use crate::error::{SnapshotError, SnapshotResult};
use crate::manifest::{ChunkRef, EntryKind, Manifest};
use crate::pack::PackBuilder;
use crate::Snapshot;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcPlan {
    /// Packs only dead snapshots use: safe to delete now.
    pub dead_packs: Vec<Digest>,
    /// Packs live snapshots use whose live bytes are below the repack
    /// threshold: copying their live chunks out with [`repack`] frees the rest.
    pub repack: Vec<PackUse>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackUse {
    pub pack: Digest,
    pub live_bytes: u64,
}

/// Plans a collection. `repack_below` is the live fraction (0..1) under
/// which a pack is worth rewriting.
pub fn plan(live: &[&Manifest], dead: &[&Manifest], repack_below: f64) -> GcPlan {
    let mut live_chunks: HashMap<Digest, HashSet<(u64, u64)>> = HashMap::new();
    for m in live {
        for c in m.chunks() {
            live_chunks.entry(c.pack).or_default().insert((c.offset, c.stored_len));
        }
    }
    let dead_packs: BTreeSet<Digest> = dead.iter().flat_map(|m| m.packs()).filter(|p| !live_chunks.contains_key(p)).collect();
    let mut repack: Vec<PackUse> = live_chunks
        .iter()
        .map(|(p, ranges)| PackUse { pack: *p, live_bytes: ranges.iter().map(|r| r.1).sum() })
        .filter(|u| u.pack.size() > 0 && (u.live_bytes as f64) < repack_below * u.pack.size() as f64)
        .collect();
    repack.sort_by_key(|u| u.pack);
    GcPlan { dead_packs: dead_packs.into_iter().collect(), repack }
}

/// Copies the live chunks of `packs` into new packs and returns each live
/// snapshot that used them rewritten to the new locations (old digest →
/// new snapshot). The caller switches its heads to the new snapshots; the
/// old packs then become dead packs of the old snapshots.
pub async fn repack(store: Arc<dyn Store>, live: &[Snapshot], packs: &HashSet<Digest>, pack_target: usize) -> SnapshotResult<HashMap<Digest, Snapshot>> {
    let mut moved: HashMap<(Digest, u64), ChunkRef> = HashMap::new();
    let mut builder = PackBuilder::default();
    let mut pending: Vec<((Digest, u64), ChunkRef)> = Vec::new();
    let flush = |builder: &mut PackBuilder, pending: &mut Vec<((Digest, u64), ChunkRef)>| {
        let (digest, bytes) = builder.seal();
        let done: Vec<_> = pending.drain(..).map(|(k, c)| (k, ChunkRef { pack: digest, ..c })).collect();
        (digest, bytes, done)
    };
    for snap in live {
        for c in snap.manifest.chunks() {
            if !packs.contains(&c.pack) || moved.contains_key(&(c.pack, c.offset)) || pending.iter().any(|(k, _)| *k == (c.pack, c.offset)) {
                continue;
            }
            let stored = store.get_range_bytes(c.pack, ByteRange::new(c.offset, c.stored_len)).await?;
            crate::pack::decode_chunk(c.codec, &stored, &c.digest)
                .map_err(|what| SnapshotError::CorruptContent { path: "(repack)".into(), expected: c.digest, pack: c.pack, what })?;
            let offset = builder.push(&stored);
            pending.push(((c.pack, c.offset), ChunkRef { offset, ..*c }));
            if builder.len() >= pack_target {
                let (digest, bytes, done) = flush(&mut builder, &mut pending);
                store.put(digest, rbk_store::stream_from_bytes(bytes.into())).await?;
                moved.extend(done);
            }
        }
    }
    if !builder.is_empty() {
        let (digest, bytes, done) = flush(&mut builder, &mut pending);
        store.put(digest, rbk_store::stream_from_bytes(bytes.into())).await?;
        moved.extend(done);
    }
    let mut out = HashMap::new();
    for snap in live {
        if !snap.manifest.packs().iter().any(|p| packs.contains(p)) {
            continue;
        }
        let mut m = (*snap.manifest).clone();
        for e in &mut m.entries {
            if let EntryKind::File(c) = &mut e.kind {
                for ch in &mut c.chunks {
                    if let Some(n) = moved.get(&(ch.pack, ch.offset)) {
                        *ch = *n;
                    }
                }
            }
        }
        let (new, _) = Snapshot::commit(&*store, m).await?;
        out.insert(snap.digest, new);
    }
    Ok(out)
}

/// What the coordinator knows about one stored snapshot of a namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotUsage {
    pub digest: Digest,
    /// Content bytes (see [`Manifest::content_bytes`]).
    pub bytes: u64,
    pub last_used_unix: i64,
    /// A current cache head, or in use by a running step: never evicted.
    pub pinned: bool,
}

/// Limits for one namespace; `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvictionPolicy {
    pub max_bytes: Option<u64>,
    pub max_age_secs: Option<i64>,
}

/// Which snapshots of one namespace to evict: every unpinned one unused for
/// longer than `max_age_secs`, then least recently used ones until the rest
/// fit in `max_bytes`. Pinned snapshots count toward the total but are kept.
pub fn evict(usage: &[SnapshotUsage], policy: &EvictionPolicy, now_unix: i64) -> Vec<Digest> {
    let mut order: Vec<&SnapshotUsage> = usage.iter().collect();
    order.sort_by_key(|u| (u.last_used_unix, u.digest));
    let mut evicted = Vec::new();
    let mut total: u64 = usage.iter().map(|u| u.bytes).sum();
    for u in order {
        if u.pinned {
            continue;
        }
        let too_old = policy.max_age_secs.is_some_and(|a| now_unix - u.last_used_unix > a);
        let too_big = policy.max_bytes.is_some_and(|b| total > b);
        if too_old || too_big {
            evicted.push(u.digest);
            total -= u.bytes;
        }
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u8, bytes: u64, last: i64, pinned: bool) -> SnapshotUsage {
        SnapshotUsage { digest: Digest::of(&[n]), bytes, last_used_unix: last, pinned }
    }

    #[test]
    fn eviction_drops_least_recently_used_until_the_namespace_fits() {
        let all = [u(1, 100, 10, false), u(2, 100, 30, false), u(3, 100, 20, false)];
        let out = evict(&all, &EvictionPolicy { max_bytes: Some(150), max_age_secs: None }, 40);
        assert_eq!(out, vec![all[0].digest, all[2].digest]);
    }

    #[test]
    fn eviction_drops_snapshots_unused_for_too_long_but_never_pinned_ones() {
        let all = [u(1, 1, 0, true), u(2, 1, 0, false), u(3, 1, 99, false)];
        let out = evict(&all, &EvictionPolicy { max_bytes: None, max_age_secs: Some(50) }, 100);
        assert_eq!(out, vec![all[1].digest]);
    }
}
