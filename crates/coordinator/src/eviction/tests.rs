//! Eviction: least recently used first, per tenant; what running builds
//! use is kept; a plan never drops what was used after it was made.

use rbk_store::Digest;

use super::*;
use crate::model::{CacheMountSpec, Sharing, StepNode};
use crate::state::{Command, EvictCommand, StepState};

fn head(tenant: &str, id: &str) -> HeadKey {
    HeadKey { namespace: tenant.into(), cache_id: id.into(), slot: 0 }
}

fn commit(m: &mut StateMachine, h: &HeadKey, bytes: u64, at_ms: u64) {
    let snapshot = Digest::of(format!("{h} at {at_ms}").as_bytes());
    m.apply(Command::CommitHead { head: h.clone(), base_generation: m.head(h).map_or(0, |c| c.generation), snapshot, total_bytes: bytes, now_ms: at_ms }).unwrap();
}

fn put_action(m: &mut StateMachine, tenant: &str, key: &str, layer_bytes: usize, at_ms: u64) {
    let layer = Digest::of(&vec![7u8; layer_bytes]);
    let result = ActionResult { layers: vec![layer], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: at_ms };
    m.apply(Command::PutAction { namespace: tenant.into(), key: key.into(), result }).unwrap();
}

fn step(key: &str, caches: &[&str]) -> StepNode {
    let cache_mounts = caches.iter().map(|c| CacheMountSpec { id: (*c).into(), sharing: Sharing::Shared }).collect();
    StepNode { id: format!("s-{key}"), key: key.into(), cache_mounts, payload: b"{}".to_vec(), ..Default::default() }
}

fn create_build(m: &mut StateMachine, id: &str, tenant: &str, graph: Vec<StepNode>, at_ms: u64) {
    let steps = graph.iter().map(|s| (s.id.clone(), s.key.clone())).collect();
    m.apply(Command::CreateBuild { build_id: id.into(), namespace: tenant.into(), steps, now_ms: at_ms, graph, submitter: String::new() }).unwrap();
}

fn finish(m: &mut StateMachine, id: &str) {
    m.apply(Command::FinishBuild { build_id: id.into(), state: crate::state::BuildState::Succeeded, message: String::new(), now_ms: 0 }).unwrap();
}

fn heads_budget(bytes: u64) -> EvictionPolicy {
    EvictionPolicy { default: Budget { heads_bytes: Some(bytes), actions_bytes: None }, ..Default::default() }
}

fn dropped_heads(e: &Evictions) -> Vec<String> {
    e.heads.iter().map(|(h, _)| h.to_string()).collect()
}

#[test]
fn heads_over_budget_are_evicted_least_recently_used_first_within_each_tenant() {
    let mut m = StateMachine::default();
    // Tenant a: pip (t=1), npm (t=2), go (t=3); tenant b: cargo (t=10),
    // maven (t=11). Budget: 20 bytes each; every head is 10.
    for (i, id) in ["pip", "npm", "go"].iter().enumerate() {
        commit(&mut m, &head("a", id), 10, 1 + i as u64);
    }
    commit(&mut m, &head("b", "cargo"), 10, 10);
    commit(&mut m, &head("b", "maven"), 10, 11);
    // A build of tenant a at t=20 mounts pip: now its most recent use.
    create_build(&mut m, "b1", "a", vec![step("k", &["pip"])], 20);
    finish(&mut m, "b1");

    let e = plan(&m, &heads_budget(20), 100);

    // a: npm is now the least recently used; b is within budget, although
    // its heads are older than a's.
    assert_eq!(dropped_heads(&e), [head("a", "npm").to_string()]);
    assert_eq!(e.heads_bytes, 10);
}

#[test]
fn action_cache_entries_over_budget_are_evicted_least_recently_used_first_and_a_hit_is_a_use() {
    let mut m = StateMachine::default();
    put_action(&mut m, "a", "k1", 100, 1);
    put_action(&mut m, "a", "k2", 100, 2);
    put_action(&mut m, "a", "k3", 100, 3);
    put_action(&mut m, "b", "old", 100, 0);
    // A build at t=50 hits k1 (its step is marked cached).
    create_build(&mut m, "b1", "a", vec![step("k1", &[])], 50);
    m.apply(Command::SetStep { build_id: "b1".into(), step_id: "s-k1".into(), state: StepState::Cached, worker_id: "w".into(), attempts: 0, message: String::new() }).unwrap();
    finish(&mut m, "b1");
    let policy = EvictionPolicy { default: Budget { heads_bytes: None, actions_bytes: Some(200) }, ..Default::default() };

    let e = plan(&m, &policy, 100);

    assert_eq!(e.actions.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [("a".to_string(), "k2".to_string())]);
    assert_eq!(e.actions_bytes, 100);
}

#[test]
fn heads_unused_for_keep_duration_go_even_within_budget() {
    let mut m = StateMachine::default();
    commit(&mut m, &head("a", "stale"), 1, 1_000);
    commit(&mut m, &head("a", "fresh"), 1, 90_000);
    let policy = EvictionPolicy { keep_duration: Some(Duration::from_secs(60)), ..Default::default() };

    let e = plan(&m, &policy, 100_000);

    assert_eq!(dropped_heads(&e), [head("a", "stale").to_string()]);
}

#[test]
fn what_a_running_build_mounts_or_caches_from_is_never_evicted() {
    let mut m = StateMachine::default();
    commit(&mut m, &head("a", "pip"), 10, 1);
    commit(&mut m, &head("a", "npm"), 10, 2);
    put_action(&mut m, "a", "k-old", 100, 1);
    put_action(&mut m, "a", "k-new", 100, 2);
    create_build(&mut m, "running", "a", vec![step("k-old", &["pip"])], 3);
    let policy = EvictionPolicy { keep_duration: None, default: Budget { heads_bytes: Some(0), actions_bytes: Some(0) }, ..Default::default() };

    let e = plan(&m, &policy, 100);

    assert_eq!(dropped_heads(&e), [head("a", "npm").to_string()]);
    assert_eq!(e.actions.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>(), ["k-new"]);
}

#[test]
fn a_head_used_after_the_plan_was_made_is_kept_by_the_drop() {
    let mut m = StateMachine::default();
    commit(&mut m, &head("a", "pip"), 10, 1);
    commit(&mut m, &head("a", "npm"), 10, 2);
    let e = plan(&m, &heads_budget(0), 100);
    assert_eq!(e.heads.len(), 2);
    // pip is committed to again between the plan and the drop.
    commit(&mut m, &head("a", "pip"), 10, 101);

    m.apply(Command::Evict(EvictCommand::DropHeads { heads: e.heads })).unwrap();

    assert!(m.head(&head("a", "pip")).is_some());
    assert!(m.head(&head("a", "npm")).is_none());
}

#[test]
fn an_unbounded_policy_evicts_nothing() {
    let mut m = StateMachine::default();
    commit(&mut m, &head("a", "pip"), u64::MAX / 4, 0);
    put_action(&mut m, "a", "k", 10, 0);
    assert_eq!(plan(&m, &EvictionPolicy::default(), u64::MAX), Evictions::default());
}

#[test]
fn sizes_parse_in_binary_and_decimal_units_and_a_bad_one_is_named() {
    assert_eq!(parse_bytes("10GiB"), Ok(10 << 30));
    assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
    assert_eq!(parse_bytes("42"), Ok(42));
    let e = parse_bytes("10 gigs").unwrap_err();
    assert!(e.contains("10 gigs"), "{e}");
}
