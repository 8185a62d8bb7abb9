//! Hit/miss of a tenant's action cache over time, from the builds the
//! replicated state keeps (the last 1,000): a step that was `cached` hit,
//! one that ran (`done` or `failed`) missed. Computed on any node, and
//! only from the tenant's own builds.

use rbk_coordinator::state::{StateMachine, StepState};

/// Hits and misses of one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start_ms: u64,
    pub hits: u64,
    pub misses: u64,
}

/// Buckets on the page's chart.
pub const BUCKETS: usize = 12;

/// `namespace`'s hits and misses in [`BUCKETS`] equal spans from its
/// oldest kept build to `now_ms`, by when each build was submitted; with
/// `cache_id`, only the steps that mount that cache.
pub fn hit_miss(m: &StateMachine, namespace: &str, cache_id: Option<&str>, now_ms: u64) -> Vec<Bucket> {
    let mut counted: Vec<(u64, bool)> = Vec::new();
    for b in m.builds_in(namespace) {
        for s in &b.steps {
            let hit = match s.state {
                StepState::Cached => true,
                StepState::Done | StepState::Failed => false,
                _ => continue,
            };
            if let Some(id) = cache_id {
                let node = b.graph.iter().find(|n| n.id == s.id);
                if !node.is_some_and(|n| n.cache_mounts.iter().any(|c| c.id == id)) {
                    continue;
                }
            }
            counted.push((b.created_ms, hit));
        }
    }
    let Some(first) = counted.iter().map(|c| c.0).min() else { return Vec::new() };
    let end = now_ms.max(first + 1);
    // At least a minute per chart, so a fresh tenant's bars are not slivers.
    let span = (end - first).max(60_000).div_ceil(BUCKETS as u64);
    let mut out: Vec<Bucket> = (0..BUCKETS as u64).map(|i| Bucket { start_ms: first + i * span, ..Default::default() }).collect();
    for (at, hit) in counted {
        let b = &mut out[(((at - first) / span) as usize).min(BUCKETS - 1)];
        if hit {
            b.hits += 1;
        } else {
            b.misses += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_coordinator::model::{CacheMountSpec, Sharing, StepNode};
    use rbk_coordinator::state::Command;

    fn build(m: &mut StateMachine, id: &str, ns: &str, at: u64, steps: &[(&str, Option<&str>, StepState)]) {
        let graph: Vec<StepNode> = steps
            .iter()
            .map(|(s, cache, _)| StepNode {
                id: s.to_string(),
                key: format!("{id}{s}"),
                cache_mounts: cache.iter().map(|c| CacheMountSpec { id: c.to_string(), sharing: Sharing::Shared }).collect(),
                ..Default::default()
            })
            .collect();
        let kv = graph.iter().map(|n| (n.id.clone(), n.key.clone())).collect();
        m.apply(Command::CreateBuild { build_id: id.into(), namespace: ns.into(), steps: kv, now_ms: at, graph, submitter: String::new() }).unwrap();
        for (s, _, state) in steps {
            let set = Command::SetStep { build_id: id.into(), step_id: s.to_string(), state: state.clone(), worker_id: "w".into(), attempts: 1, message: String::new() };
            m.apply(set).unwrap();
        }
    }

    #[test]
    fn cached_steps_hit_and_steps_that_ran_miss_in_the_bucket_of_their_builds_submission() {
        let mut m = StateMachine::default();
        build(&mut m, "b1", "a", 0, &[("x", Some("pip"), StepState::Done), ("y", None, StepState::Done)]);
        build(&mut m, "b2", "a", 119_999, &[("x", Some("pip"), StepState::Cached), ("y", None, StepState::Failed)]);
        build(&mut m, "other", "b", 0, &[("x", Some("pip"), StepState::Cached)]);
        let all = hit_miss(&m, "a", None, 120_000);
        assert_eq!(all.len(), BUCKETS);
        assert_eq!((all[0].hits, all[0].misses), (0, 2));
        assert_eq!((all[BUCKETS - 1].hits, all[BUCKETS - 1].misses), (1, 1));
        assert_eq!(all.iter().map(|b| b.hits + b.misses).sum::<u64>(), 4, "tenant b's step is not counted");
        let pip = hit_miss(&m, "a", Some("pip"), 120_000);
        assert_eq!(pip.iter().map(|b| (b.hits, b.misses)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)), (1, 1));
    }

    #[test]
    fn a_tenant_without_builds_has_no_buckets() {
        assert!(hit_miss(&StateMachine::default(), "a", None, 5).is_empty());
    }
}
