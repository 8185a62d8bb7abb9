//! Per-tenant budgets for what the coordinator's state keeps alive in the
//! content store, and least-recently-used eviction to stay within them.
//!
//! A tenant is charged for its cache heads (each head's `total_bytes`) and
//! for its action-cache entries (the sizes of the layers a result names
//! plus its config). Layers shared by two entries are charged twice: the
//! charge is an upper bound of what dropping the tenant's entries would
//! free, which keeps the budget a bound on the store as well.
//!
//! Evicting drops state, never blobs: a dropped head or entry only makes
//! its blobs unreachable, and the store collector (`collector.rs`) deletes
//! them later under its own fences. The leader plans evictions at the start
//! of each collection, from one read of the state:
//!
//! 1. heads not used for `keep_duration` go first, whatever the budget;
//! 2. then, per tenant and per kind, the least recently used go until the
//!    tenant is within its budget.
//!
//! What a running build uses is never evicted: heads its steps mount or
//! hold a lease on, and the action-cache entries of its steps (a cached
//! step's layers are read by the client after the build). "Used" is the
//! last commit, lease or build that mounted a head, and the last write or
//! hit of an entry (`usage.rs`, kept by the state machine).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::{ActionResult, HeadKey};
use crate::state::StateMachine;

/// What one tenant may keep; `None`: unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub heads_bytes: Option<u64>,
    pub actions_bytes: Option<u64>,
}

/// `[eviction]` in the coordinator config, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictionPolicy {
    /// Heads not used for this long are dropped; `None`: kept while in
    /// budget.
    pub keep_duration: Option<Duration>,
    /// The budget of tenants not named in `tenants`.
    pub default: Budget,
    pub tenants: BTreeMap<String, Budget>,
}

impl EvictionPolicy {
    pub fn budget(&self, tenant: &str) -> Budget {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// Whether this policy can ever evict anything.
    pub fn is_unbounded(&self) -> bool {
        self.keep_duration.is_none() && self.default == Budget::default() && self.tenants.values().all(|b| *b == Budget::default())
    }
}

/// The bytes an action-cache entry is charged.
pub fn result_bytes(result: &ActionResult) -> u64 {
    result.layers.iter().map(|d| d.size()).sum::<u64>() + result.config.len() as u64
}

/// One tenant's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    pub heads: u64,
    pub heads_bytes: u64,
    pub actions: u64,
    pub actions_bytes: u64,
}

/// What `tenant` is charged now.
pub fn tenant_usage(m: &StateMachine, tenant: &str) -> TenantUsage {
    let mut u = TenantUsage::default();
    for (_, h) in m.all_heads().filter(|(k, _)| k.namespace == tenant) {
        u.heads += 1;
        u.heads_bytes += h.total_bytes;
    }
    for (_, r) in m.all_actions().filter(|((ns, _), _)| ns == tenant) {
        u.actions += 1;
        u.actions_bytes += result_bytes(r);
    }
    u
}

/// What to drop, in the order chosen (least recently used first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Heads and the last use the plan saw.
    pub heads: Vec<(HeadKey, u64)>,
    pub actions: Vec<((String, String), u64)>,
    /// Bytes charged to what is dropped.
    pub heads_bytes: u64,
    pub actions_bytes: u64,
}

/// Plans the evictions `policy` asks for at `now_ms` (see the module docs).
pub fn plan(m: &StateMachine, policy: &EvictionPolicy, now_ms: u64) -> Evictions {
    let mut out = Evictions::default();
    if policy.is_unbounded() {
        return out;
    }
    // What running builds use.
    let mut busy_heads = BTreeSet::new();
    let mut busy_actions = BTreeSet::new();
    for b in m.running_builds() {
        for step in &b.graph {
            for mount in &step.cache_mounts {
                busy_heads.insert((b.namespace.clone(), mount.id.clone()));
            }
        }
        for step in &b.steps {
            busy_actions.insert((b.namespace.clone(), step.key.clone()));
        }
    }
    let usage = m.usage();

    // Heads, per tenant, least recently used first.
    let mut heads: BTreeMap<&str, Vec<(u64, &HeadKey, u64)>> = BTreeMap::new();
    for (k, h) in m.all_heads() {
        let used = usage.head_used_at(k, h.updated_ms);
        heads.entry(k.namespace.as_str()).or_default().push((used, k, h.total_bytes));
    }
    for (tenant, mut list) in heads {
        list.sort();
        let budget = policy.budget(tenant).heads_bytes;
        let mut total: u64 = list.iter().map(|(_, _, b)| b).sum();
        for (used, key, bytes) in list {
            let in_use = busy_heads.contains(&(key.namespace.clone(), key.cache_id.clone())) || m.lease(key).is_some_and(|l| l.expires_ms > now_ms);
            if in_use {
                continue;
            }
            let stale = policy.keep_duration.is_some_and(|k| now_ms.saturating_sub(used) >= k.as_millis() as u64);
            let over = budget.is_some_and(|b| total > b);
            if stale || over {
                total -= bytes;
                out.heads_bytes += bytes;
                out.heads.push((key.clone(), used));
            }
        }
    }

    // Action-cache entries, per tenant, least recently used first.
    let mut actions: BTreeMap<&str, Vec<(u64, &(String, String), u64)>> = BTreeMap::new();
    for (k, r) in m.all_actions() {
        let used = usage.action_used_at(&k.0, &k.1, r.created_ms);
        actions.entry(k.0.as_str()).or_default().push((used, k, result_bytes(r)));
    }
    for (tenant, mut list) in actions {
        let Some(budget) = policy.budget(tenant).actions_bytes else { continue };
        list.sort();
        let mut total: u64 = list.iter().map(|(_, _, b)| b).sum();
        for (used, key, bytes) in list {
            if total <= budget {
                break;
            }
            if busy_actions.contains(key) {
                continue;
            }
            total -= bytes;
            out.actions_bytes += bytes;
            out.actions.push((key.clone(), used));
        }
    }
    out
}

/// `"<n>"`, `"<n>KiB|MiB|GiB|TiB"` (or KB/MB/GB/TB, decimal) as bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 500MiB or 10GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(format!("{s:?}: unknown unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests;
