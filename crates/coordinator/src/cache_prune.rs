//! `rbk cache ls|prune` as one code path for every caller: the gRPC
//! `Build.ListCaches`/`PruneCaches` (`service/build.rs`) and the web
//! dashboard's Caches page. Always scoped to one tenant's namespace.

use crate::eviction::{Budget, EvictionPolicy, TenantUsage};
use crate::model::HeadKey;
use crate::state::{CacheHead, Command, CoordinatorState, StateError, query};

/// A tenant's cache heads, what it is charged and its budget.
#[derive(Debug, Clone)]
pub struct CacheListing {
    pub heads: Vec<(HeadKey, CacheHead)>,
    pub usage: TenantUsage,
    pub budget: Budget,
}

/// The heads of `namespace` (never another's) and its usage against budget.
pub fn list(state: &dyn CoordinatorState, eviction: &EvictionPolicy, namespace: &str) -> CacheListing {
    let (heads, usage) = query(state, |m| (m.heads_of(namespace), crate::eviction::tenant_usage(m, namespace)));
    CacheListing { heads, usage, budget: eviction.budget(namespace) }
}

/// Which heads of `namespace` to forget: those named in `ids` (all when
/// empty) unused for at least `unused_for_ms`.
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    pub ids: Vec<String>,
    pub unused_for_ms: u64,
}

/// Drops the matching heads of `namespace` and returns them. Heads in use
/// (a live lease) are kept: dropping one under a running locked or private
/// step would orphan its commit. The snapshots' blobs are left for the
/// store collector.
pub async fn prune(state: &dyn CoordinatorState, namespace: &str, filter: &PruneFilter, now_ms: u64) -> Result<Vec<(HeadKey, CacheHead)>, StateError> {
    let candidates = query(state, |m| {
        m.heads_of(namespace)
            .into_iter()
            .filter(|(k, h)| {
                (filter.ids.is_empty() || filter.ids.contains(&k.cache_id))
                    && now_ms.saturating_sub(h.updated_ms) >= filter.unused_for_ms
                    && m.lease(k).is_none_or(|l| l.expires_ms <= now_ms)
            })
            .collect::<Vec<_>>()
    });
    let mut dropped = Vec::new();
    for (key, head) in candidates {
        state.apply(Command::DropHead { head: key.clone() }).await?;
        dropped.push((key, head));
    }
    Ok(dropped)
}
