//! Scheduler behaviour with in-memory workers driven by the test itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rbk_store::Digest;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::cache_heads::CacheHeads;
use crate::cache_heads::tests::MapMerger;
use crate::model::*;
use crate::state::{BuildState, MemoryState, Sharing, query};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    sched: Scheduler,
    state: Arc<MemoryState>,
    merger: Arc<MapMerger>,
}

fn harness_with(config: SchedulerConfig) -> Harness {
    let state = Arc::new(MemoryState::new());
    let merger = Arc::new(MapMerger::default());
    let heads = CacheHeads::new(state.clone(), merger.clone());
    Harness { sched: Scheduler::start(state.clone(), heads, config), state, merger }
}

fn harness() -> Harness {
    harness_with(SchedulerConfig::default())
}

fn node(id: &str, key: &str, deps: &[&str]) -> StepNode {
    StepNode {
        id: id.into(),
        key: key.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        // The action key is the coordinator's hash of what runs: steps the
        // tests call identical (same `key`) run the same payload.
        payload: format!("run {key}").into_bytes(),
        name: format!("RUN {id}"),
        ..Default::default()
    }
}

fn with_cache(mut n: StepNode, id: &str, sharing: Sharing) -> StepNode {
    n.cache_mounts.push(CacheMountSpec { id: id.into(), sharing });
    n
}

struct TestWorker {
    id: String,
    conn: u64,
    rx: mpsc::UnboundedReceiver<ToWorker>,
}

impl Harness {
    async fn worker(&self, id: &str, max_parallel: u32) -> TestWorker {
        self.worker_with(WorkerInfo { id: id.into(), platform: "linux/amd64".into(), max_parallel, ..WorkerInfo::serving_test_tenants() })
            .await
    }

    async fn worker_with(&self, info: WorkerInfo) -> TestWorker {
        let id = info.id.clone();
        let link = self.sched.worker_up(info).await.unwrap();
        TestWorker { id, conn: link.conn, rx: link.assignments }
    }

    async fn submit(&self, steps: Vec<StepNode>) -> (String, mpsc::UnboundedReceiver<BuildEvent>) {
        self.submit_ns("team", steps, false).await
    }

    async fn submit_ns(&self, ns: &str, steps: Vec<StepNode>, no_cache: bool) -> (String, mpsc::UnboundedReceiver<BuildEvent>) {
        self.sched.submit(BuildRequest { namespace: ns.into(), steps, no_cache }).await.unwrap()
    }

    fn succeed(&self, w: &TestWorker, a: &Assignment) {
        self.succeed_with(w, a, vec![]);
    }

    fn succeed_with(&self, w: &TestWorker, a: &Assignment, commits: Vec<CacheCommit>) {
        let outcome = StepOutcome::Succeeded {
            layers: vec![Digest::of(a.step_id.as_bytes())],
            config: b"{}".to_vec(),
            commits,
            bytes_restored: 7,
            duration_ms: 1,
            commits_follow: false,
        };
        self.sched.worker_message(&w.id, w.conn, FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome });
    }
}

impl TestWorker {
    async fn next(&mut self) -> ToWorker {
        timeout(WAIT, self.rx.recv()).await.expect("worker waited too long for a message").expect("link closed")
    }

    async fn assignment(&mut self) -> Assignment {
        match self.next().await {
            ToWorker::Assign(a) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    /// Nothing arrives within a short while (used only to show absence).
    async fn idle(&mut self) -> bool {
        timeout(Duration::from_millis(300), self.rx.recv()).await.is_err()
    }
}

async fn finish(rx: &mut mpsc::UnboundedReceiver<BuildEvent>) -> Vec<BuildEvent> {
    let mut events = Vec::new();
    loop {
        let e = timeout(WAIT, rx.recv()).await.expect("build did not finish in time").expect("event stream closed");
        let done = matches!(e, BuildEvent::BuildFinished { .. });
        events.push(e);
        if done {
            return events;
        }
    }
}

fn final_state(events: &[BuildEvent]) -> BuildState {
    match events.last() {
        Some(BuildEvent::BuildFinished { state, .. }) => *state,
        other => panic!("no BuildFinished: {other:?}"),
    }
}

#[tokio::test]
async fn independent_steps_run_in_parallel_on_different_workers() {
    let h = harness();
    let mut w1 = h.worker("w1", 1).await;
    let mut w2 = h.worker("w2", 1).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[]), node("b", "kb", &[]), node("c", "kc", &["a", "b"])]).await;
    let a1 = w1.assignment().await;
    let a2 = w2.assignment().await;
    let mut ran: Vec<_> = [a1.step_id.clone(), a2.step_id.clone()].into();
    ran.sort();
    assert_eq!(ran, ["a", "b"], "both independent steps are out at once");
    h.succeed(&w1, &a1);
    h.succeed(&w2, &a2);
    let (c, on) = tokio::select! { a = w1.assignment() => (a, 1), a = w2.assignment() => (a, 2) };
    assert_eq!(c.step_id, "c");
    let mut inputs: Vec<_> = c.inputs.iter().map(|i| (i.step_id.clone(), i.result.layers.clone())).collect();
    inputs.sort();
    assert_eq!(inputs, vec![("a".into(), vec![Digest::of(b"a")]), ("b".into(), vec![Digest::of(b"b")])]);
    let w = if on == 1 { &w1 } else { &w2 };
    h.succeed(w, &c);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
}

#[tokio::test]
async fn resubmitted_steps_are_cached_and_not_dispatched() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[]), node("b", "kb", &["a"])]).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    let b = w.assignment().await;
    h.succeed(&w, &b);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);

    let (_, mut ev) = h.submit(vec![node("a", "ka", &[]), node("b", "kb", &["a"])]).await;
    let events = finish(&mut ev).await;
    let cached = events.iter().filter(|e| matches!(e, BuildEvent::Cached { .. })).count();
    assert_eq!(cached, 2, "{events:?}");
    assert_eq!(final_state(&events), BuildState::Succeeded);
    assert!(w.idle().await, "a cached step was dispatched");
}

#[tokio::test]
async fn action_cache_hits_stay_within_the_tenant() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev) = h.submit_ns("a", vec![node("s", "k", &[])], false).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    finish(&mut ev).await;
    let (_, mut ev) = h.submit_ns("b", vec![node("s", "k", &[])], false).await;
    let a = w.assignment().await;
    assert_eq!(a.namespace, "b");
    h.succeed(&w, &a);
    assert!(!finish(&mut ev).await.iter().any(|e| matches!(e, BuildEvent::Cached { .. })));
}

#[tokio::test]
async fn no_cache_reruns_steps_that_are_cached() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    finish(&mut ev).await;
    let (_, mut ev) = h.submit_ns("team", vec![node("a", "ka", &[])], true).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
}

#[tokio::test]
async fn identical_steps_in_flight_from_two_builds_run_once() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev1) = h.submit(vec![node("x", "same", &[])]).await;
    let a = w.assignment().await;
    let (_, mut ev2) = h.submit(vec![node("y", "same", &[])]).await;
    assert!(w.idle().await, "the identical step was dispatched twice");
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut ev1).await), BuildState::Succeeded);
    let e2 = finish(&mut ev2).await;
    assert!(e2.iter().any(|e| matches!(e, BuildEvent::Finished { step_id, .. } if step_id == "y")), "{e2:?}");
    assert_eq!(final_state(&e2), BuildState::Succeeded);
}

#[tokio::test]
async fn a_lost_worker_has_its_step_retried_elsewhere() {
    let h = harness();
    let mut w1 = h.worker("w1", 1).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    let a = w1.assignment().await;
    assert_eq!(a.attempt, 1);
    let mut w2 = h.worker("w2", 1).await;
    h.sched.worker_down(&w1.id, w1.conn);
    let b = w2.assignment().await;
    assert_eq!((b.step_id.as_str(), b.attempt), ("a", 2));
    // A late result from the lost worker is ignored.
    h.succeed(&w1, &a);
    h.succeed(&w2, &b);
    let events = finish(&mut ev).await;
    assert!(events.iter().any(|e| matches!(e, BuildEvent::Finished { worker_id, .. } if worker_id == "w2")), "{events:?}");
    assert_eq!(final_state(&events), BuildState::Succeeded);
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_is_declared_lost() {
    let h = harness_with(SchedulerConfig {
        heartbeat_interval: Duration::from_millis(50),
        worker_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let mut silent = h.worker("silent", 1).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    silent.assignment().await;
    let mut w2 = h.worker("w2", 1).await;
    let keepalive = {
        let (sched, id, conn) = (h.sched.clone(), w2.id.clone(), w2.conn);
        tokio::spawn(async move {
            loop {
                sched.worker_message(&id, conn, FromWorker::Heartbeat);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let b = w2.assignment().await;
    assert_eq!(b.attempt, 2);
    h.succeed(&w2, &b);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
    keepalive.abort();
}

#[tokio::test]
async fn retries_after_lost_workers_are_bounded() {
    let h = harness_with(SchedulerConfig { max_attempts: 2, ..Default::default() });
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    for i in 0..2 {
        let mut w = h.worker(&format!("w{i}"), 1).await;
        w.assignment().await;
        h.sched.worker_down(&w.id, w.conn);
    }
    let events = finish(&mut ev).await;
    assert_eq!(final_state(&events), BuildState::Failed);
    let msg = events.iter().find_map(|e| match e {
        BuildEvent::Failed { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(msg.unwrap().contains("gave up after 2 attempts"));
}

#[tokio::test]
async fn a_failing_step_fails_the_build_and_cancels_running_siblings() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[]), node("b", "kb", &[]), node("c", "kc", &["a", "b"])]).await;
    let x = w.assignment().await;
    let y = w.assignment().await;
    let outcome = StepOutcome::Failed { message: "exit status 2".into(), exit_code: 2, commits: vec![] };
    h.sched.worker_message(&w.id, w.conn, FromWorker::Result { assignment_id: x.assignment_id.clone(), outcome });
    assert_eq!(w.next().await, ToWorker::Cancel { assignment_id: y.assignment_id.clone() });
    let events = finish(&mut ev).await;
    assert!(events.iter().any(|e| matches!(e, BuildEvent::Failed { exit_code: 2, .. })));
    assert_eq!(final_state(&events), BuildState::Failed);
    let steps = query(&*h.state, |m| m.build(&x.build_id).unwrap().steps.clone());
    let states: Vec<_> = steps.iter().map(|s| (s.id.as_str(), s.state.as_str())).collect();
    assert!(states.contains(&(x.step_id.as_str(), "failed")), "{states:?}");
    assert!(states.contains(&("c", "cancelled")), "{states:?}");
}

#[tokio::test]
async fn cancel_stops_running_steps_but_not_ones_another_build_shares() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (b1, mut ev1) = h.submit(vec![node("own", "k-own", &[]), node("shared", "k-shared", &[])]).await;
    let first = w.assignment().await;
    let second = w.assignment().await;
    let (_, mut ev2) = h.submit(vec![node("s", "k-shared", &[])]).await;
    h.sched.cancel("team", &b1).await.unwrap();
    let own = if first.step_id == "own" { &first } else { &second };
    let shared = if first.step_id == "shared" { &first } else { &second };
    assert_eq!(w.next().await, ToWorker::Cancel { assignment_id: own.assignment_id.clone() });
    assert_eq!(final_state(&finish(&mut ev1).await), BuildState::Cancelled);
    h.succeed(&w, shared);
    assert_eq!(final_state(&finish(&mut ev2).await), BuildState::Succeeded);
}

#[tokio::test]
async fn another_tenant_cannot_cancel_a_build() {
    let h = harness();
    let (b1, _ev) = h.submit(vec![node("a", "ka", &[])]).await;
    assert_eq!(h.sched.cancel("intruder", &b1).await, Err(SchedulerError::UnknownBuild(b1.clone())));
}

#[tokio::test]
async fn steps_go_only_to_workers_with_their_platform_and_labels() {
    let h = harness();
    let mut plain = h.worker("plain", 4).await;
    let mut gpu = h
        .worker_with(WorkerInfo {
            id: "gpu".into(),
            platform: "linux/amd64".into(),
            labels: [("gpu".to_string(), "yes".to_string())].into(),
            max_parallel: 4,
            ..WorkerInfo::serving_test_tenants()
        })
        .await;
    let mut step = node("a", "ka", &[]);
    step.labels.insert("gpu".into(), "yes".into());
    step.platform = "linux/amd64".into();
    let mut arm = node("b", "kb", &[]);
    arm.platform = "linux/arm64".into();
    let (_, _ev) = h.submit(vec![step, arm]).await;
    assert_eq!(gpu.assignment().await.step_id, "a");
    assert!(plain.idle().await, "no worker has linux/arm64 or the label");
    assert!(gpu.idle().await);
}

#[tokio::test]
async fn the_worker_holding_the_cache_head_is_preferred() {
    let h = harness();
    let snap = h.merger.store([("f".to_string(), "1".to_string())].into());
    let heads = CacheHeads::new(h.state.clone(), h.merger.clone());
    let key = HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 };
    heads.commit(&key, 0, snap, 1, 0, 0).await.unwrap();
    let mut cold = h.worker("a-cold", 4).await;
    let mut warm = h
        .worker_with(WorkerInfo {
            id: "z-warm".into(),
            max_parallel: 4,
            snapshots: [(key.clone(), snap)].into(),
            ..WorkerInfo::serving_test_tenants()
        })
        .await;
    let (_, _ev) = h.submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared)]).await;
    let a = warm.assignment().await;
    assert_eq!(a.mounts, vec![MountGrant { cache_id: "pip".into(), sharing: Sharing::Shared, slot: 0, head: Some((snap, 1)) }]);
    assert!(cold.idle().await);
}

#[tokio::test]
async fn locked_mounts_are_never_used_by_two_steps_at_once() {
    let h = harness();
    let mut w1 = h.worker("w1", 1).await;
    let mut w2 = h.worker("w2", 1).await;
    let (_, mut ev) = h
        .submit(vec![with_cache(node("a", "ka", &[]), "apt", Sharing::Locked), with_cache(node("b", "kb", &[]), "apt", Sharing::Locked)])
        .await;
    let (first, i) = tokio::select! { a = w1.assignment() => (a, 0), a = w2.assignment() => (a, 1) };
    let mut ws = [w1, w2];
    assert!(ws[1 - i].idle().await, "second locked user started while the first held the lease");
    let snap = h.merger.store([("lock".to_string(), "1".to_string())].into());
    let commit = CacheCommit { cache_id: "apt".into(), slot: 0, base_generation: 0, snapshot: snap, total_bytes: 1 };
    h.succeed_with(&ws[i], &first, vec![commit]);
    // The worker that committed holds the newest snapshot: affinity sends
    // the second user there too.
    let second = ws[i].assignment().await;
    assert_eq!(second.mounts[0].head, Some((snap, 1)), "the second user starts from the first one's commit");
    let other_w = &ws[i];
    h.succeed(other_w, &second);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
}

#[tokio::test]
async fn private_mounts_give_concurrent_users_separate_slots() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, _ev) = h
        .submit(vec![with_cache(node("a", "ka", &[]), "npm", Sharing::Private), with_cache(node("b", "kb", &[]), "npm", Sharing::Private)])
        .await;
    let a = w.assignment().await;
    let b = w.assignment().await;
    let mut slots = [a.mounts[0].slot, b.mounts[0].slot];
    slots.sort();
    assert_eq!(slots, [1, 2]);
}

#[tokio::test]
async fn concurrent_shared_commits_from_two_workers_are_merged() {
    let h = harness();
    let mut w1 = h.worker("w1", 1).await;
    let mut w2 = h.worker("w2", 1).await;
    let (_, mut ev) = h
        .submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared), with_cache(node("b", "kb", &[]), "pip", Sharing::Shared)])
        .await;
    let a = w1.assignment().await;
    let b = w2.assignment().await;
    let sa = h.merger.store([("from-a".to_string(), "1".to_string())].into());
    let sb = h.merger.store([("from-b".to_string(), "2".to_string())].into());
    let c = |s| vec![CacheCommit { cache_id: "pip".into(), slot: 0, base_generation: 0, snapshot: s, total_bytes: 1 }];
    h.succeed_with(&w1, &a, c(sa));
    h.succeed_with(&w2, &b, c(sb));
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
    let head = query(&*h.state, |m| m.head(&HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 }).cloned()).unwrap();
    assert_eq!(head.generation, 2);
    assert_eq!(h.merger.tree(head.snapshot).keys().collect::<Vec<_>>(), ["from-a", "from-b"]);
}

#[tokio::test]
async fn logs_reach_every_build_waiting_for_the_step() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    let a = w.assignment().await;
    let log = FromWorker::Log { assignment_id: a.assignment_id.clone(), stream: "stdout".into(), line: "hello".into() };
    h.sched.worker_message(&w.id, w.conn, log);
    h.succeed(&w, &a);
    let events = finish(&mut ev).await;
    assert!(events.iter().any(|e| matches!(e, BuildEvent::Log { line, .. } if line == "hello")), "{events:?}");
}

#[tokio::test]
async fn a_draining_worker_takes_no_new_steps() {
    let h = harness();
    let mut w = h.worker("w", 4).await;
    h.sched.worker_message(&w.id, w.conn, FromWorker::Drain);
    assert_eq!(w.next().await, ToWorker::DrainAck, "the drain is acknowledged");
    let (_, _ev) = h.submit(vec![node("a", "ka", &[])]).await;
    assert!(w.idle().await);
}

#[test]
fn graphs_with_cycles_unknown_deps_or_duplicate_ids_are_refused() {
    let cycle = validate_graph(&[node("a", "k1", &["b"]), node("b", "k2", &["a"]), node("c", "k3", &[])]).unwrap_err();
    assert_eq!(cycle.to_string(), "invalid build graph: dependency cycle among steps a, b");
    let unknown = validate_graph(&[node("a", "k", &["zzz"])]).unwrap_err();
    assert_eq!(unknown.to_string(), "invalid build graph: step a depends on unknown step zzz");
    let dup = validate_graph(&[node("a", "k", &[]), node("a", "k2", &[])]).unwrap_err();
    assert_eq!(dup.to_string(), "invalid build graph: step a appears twice");
    let nokey = validate_graph(&[node("a", "", &[])]).unwrap_err();
    assert_eq!(nokey.to_string(), "invalid build graph: step a: empty cache key");
}

#[test]
fn validating_a_long_chain_is_linear_not_quadratic() {
    // 200,000 steps: quadratic validation would take hours; linear, well
    // under a second. The bound below only keeps a regression from hanging.
    let n = 200_000;
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let steps: Vec<StepNode> = (0..n)
        .map(|i| {
            let deps: Vec<&str> = if i == 0 { vec![] } else { vec![ids[i - 1].as_str()] };
            node(&ids[i], &format!("k{i}"), &deps)
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(validate_graph(&steps)).unwrap());
    let validated = rx.recv_timeout(Duration::from_secs(60)).expect("validating a 200,000-step chain took more than 60 s");
    assert!(validated.is_ok(), "{validated:?}");
}

#[tokio::test]
async fn secrets_travel_in_assignments_but_never_into_state() {
    let h = harness();
    let mut w = h.worker("w1", 1).await;
    let secrets = Secrets(BTreeMap::from([("npmrc".to_string(), b"token-xyz-123".to_vec())]));
    let req = BuildRequest { namespace: "team".into(), steps: vec![node("a", "ka", &[])], no_cache: false };
    let (_, mut rx) = h.sched.submit_with_secrets(req, secrets.clone()).await.unwrap();
    let a = w.assignment().await;
    assert_eq!(a.secrets, secrets);
    assert!(!format!("{a:?}").contains("token-xyz"), "Debug prints secret values: {a:?}");
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut rx).await), BuildState::Succeeded);
    let dump = query(&*h.state, |m| format!("{m:?}"));
    assert!(!dump.contains("token-xyz") && !dump.contains(&format!("{:?}", b"token-xyz-123")), "state holds the secret");
}

#[tokio::test]
async fn a_failed_step_still_commits_its_cache_mounts() {
    let h = harness();
    let mut w = h.worker("w", 1).await;
    let (_, mut ev) = h.submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Locked)]).await;
    let a = w.assignment().await;
    let snap = h.merger.store([("partial".to_string(), "1".to_string())].into());
    let commits = vec![CacheCommit { cache_id: "pip".into(), slot: 0, base_generation: 0, snapshot: snap, total_bytes: 1 }];
    let outcome = StepOutcome::Failed { message: "exit code 1".into(), exit_code: 1, commits };
    h.sched.worker_message(&w.id, w.conn, FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome });
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Failed);
    let key = HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 };
    let deadline = std::time::Instant::now() + WAIT;
    while query(&*h.state, |m| m.head(&key).is_none()) {
        assert!(std::time::Instant::now() < deadline, "the failed step's cache commit never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(query(&*h.state, |m| m.head(&key).unwrap().snapshot), snap);
}

/// Memory state that counts the `PutAction` commands applied (guarded or
/// not).
#[derive(Default)]
struct CountingState {
    inner: MemoryState,
    puts: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl CoordinatorState for CountingState {
    async fn apply(&self, cmd: crate::state::Command) -> Result<crate::state::Outcome, crate::state::StateError> {
        // The scheduler sends it guarded by the store collector's fences.
        let inner = match &cmd {
            crate::state::Command::Guarded { cmd, .. } => &**cmd,
            other => other,
        };
        if matches!(inner, crate::state::Command::PutAction { .. }) {
            self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.apply(cmd).await
    }

    fn read(&self, f: &mut dyn FnMut(&crate::state::StateMachine)) {
        self.inner.read(f)
    }
}

#[tokio::test]
async fn a_result_sent_twice_is_committed_once() {
    // Workers re-send recent results after a broken session; the copy may
    // reach a coordinator that is still committing the first.
    let state = Arc::new(CountingState::default());
    let merger = Arc::new(MapMerger::default());
    let sched = Scheduler::start(state.clone(), CacheHeads::new(state.clone(), merger.clone()), SchedulerConfig::default());
    let link = sched.worker_up(WorkerInfo { id: "w1".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }).await.unwrap();
    let mut w = TestWorker { id: "w1".into(), conn: link.conn, rx: link.assignments };
    let req = BuildRequest { namespace: "team".into(), steps: vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared)], no_cache: false };
    let (_, mut ev) = sched.submit(req).await.unwrap();
    let a = w.assignment().await;
    let snap = merger.store([("once".to_string(), "1".to_string())].into());
    let commits = vec![CacheCommit { cache_id: "pip".into(), slot: 0, base_generation: 0, snapshot: snap, total_bytes: 1 }];
    let outcome = StepOutcome::Succeeded { layers: vec![], config: b"{}".to_vec(), commits, bytes_restored: 0, duration_ms: 1, commits_follow: false };
    for _ in 0..2 {
        sched.worker_message("w1", w.conn, FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome: outcome.clone() });
    }
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
    assert_eq!(state.puts.load(std::sync::atomic::Ordering::SeqCst), 1, "the step's result was recorded once");
}

#[tokio::test]
async fn a_worker_gets_only_steps_of_the_tenants_its_pool_serves() {
    let h = harness();
    let only_b = WorkerInfo { id: "b-only".into(), max_parallel: 4, tenants: ["b".to_string()].into(), ..Default::default() };
    let mut other_pool = h.worker_with(only_b).await;
    let (_, mut ev) = h.submit(vec![node("a", "ka", &[])]).await;
    assert!(other_pool.idle().await, "a step of tenant team went to a pool serving only b");
    let mut w = h.worker("team-worker", 1).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
}

#[tokio::test]
async fn a_second_session_under_a_live_worker_id_is_refused_unless_it_presents_the_same_token() {
    let h = harness();
    let info = |credential: &str| WorkerInfo { id: "w".into(), max_parallel: 1, credential: credential.into(), ..WorkerInfo::serving_test_tenants() };
    let mut first = h.worker_with(info("token-1")).await;
    let refused = h.sched.worker_up(info("token-2")).await.err().expect("a second session with another token was accepted");
    assert!(matches!(refused, SchedulerError::WorkerIdInUse(ref id) if id == "w"), "{refused}");
    let (_, _ev) = h.submit(vec![node("a", "ka", &[])]).await;
    assert_eq!(first.assignment().await.step_id, "a", "the first session was kicked off");
    assert!(h.sched.worker_up(info("token-1")).await.is_ok(), "the same worker reconnecting is refused");
}

#[tokio::test]
async fn a_result_committing_a_cache_the_step_was_not_granted_fails_and_commits_nothing() {
    let h = harness();
    let mut w = h.worker("w", 1).await;
    let (_, mut ev) = h.submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared)]).await;
    let a = w.assignment().await;
    let snap = h.merger.store([("planted".to_string(), "1".to_string())].into());
    let foreign = CacheCommit { cache_id: "other".into(), slot: 0, base_generation: 0, snapshot: snap, total_bytes: 1 };
    h.succeed_with(&w, &a, vec![foreign]);
    let events = finish(&mut ev).await;
    assert_eq!(final_state(&events), BuildState::Failed);
    let failed = events.iter().find_map(|e| if let BuildEvent::Failed { message, .. } = e { Some(message.clone()) } else { None });
    assert!(failed.unwrap_or_default().contains("cache \"other\" slot 0, which this step was not granted"), "{events:?}");
    let other = HeadKey { namespace: "team".into(), cache_id: "other".into(), slot: 0 };
    assert!(query(&*h.state, |m| m.head(&other).is_none()), "the foreign commit reached the head");
}

#[tokio::test]
async fn with_server_action_keys_a_step_is_not_cached_from_a_result_stored_under_its_client_key_for_another_payload() {
    // The default configuration: server keys are on without being asked for.
    let h = harness();
    let mut w = h.worker("w", 1).await;
    let mut planted = node("x", "victim-key", &[]);
    planted.payload = b"echo planted > /out".to_vec();
    let (_, mut ev) = h.submit(vec![planted]).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut ev).await), BuildState::Succeeded);
    let mut honest = node("x", "victim-key", &[]);
    honest.payload = b"echo honest > /out".to_vec();
    let (_, mut ev) = h.submit(vec![honest]).await;
    let b = w.assignment().await;
    assert_eq!(b.payload, b"echo honest > /out", "the honest step must run, not reuse the planted result");
    h.succeed(&w, &b);
    let events = finish(&mut ev).await;
    assert!(!events.iter().any(|e| matches!(e, BuildEvent::Cached { .. })), "{events:?}");
}

#[tokio::test]
async fn a_build_whose_context_manifest_is_not_in_the_store_is_refused_naming_the_step_and_creates_nothing() {
    let h = harness();
    let sched = h.sched.clone().with_contexts(Arc::new(rbk_store::MemoryStore::default()));
    let mut step = node("copy", "k", &[]);
    step.payload = format!(r#"{{"context":"{}","version":1}}"#, Digest::of(b"never uploaded")).into_bytes();
    let refused = sched.submit(BuildRequest { namespace: "team".into(), steps: vec![step], no_cache: false }).await.unwrap_err();
    assert!(matches!(refused, SchedulerError::BadContext(_)), "{refused}");
    assert!(refused.to_string().contains("step copy (RUN copy)") && refused.to_string().contains("not in the store"), "{refused}");
    assert!(query(&*h.state, |m| m.builds_of("team", 10).is_empty()), "a build was created");
}

// Per-tenant limits (quota.rs).

#[tokio::test]
async fn a_tenant_at_its_build_limit_is_refused_while_another_tenant_is_not() {
    let h = harness_with(SchedulerConfig { max_builds_per_tenant: 2, ..Default::default() });
    let (_, _a1) = h.submit_ns("team", vec![node("a", "k-a", &[])], false).await;
    let (_, _a2) = h.submit_ns("team", vec![node("b", "k-b", &[])], false).await;
    let refused = h.sched.submit(BuildRequest { namespace: "team".into(), steps: vec![node("c", "k-c", &[])], no_cache: false }).await.unwrap_err();
    assert!(matches!(refused, SchedulerError::Quota(_)), "{refused}");
    assert!(refused.to_string().contains("max_builds_per_tenant = 2"), "{refused}");
    let (_, _other) = h.submit_ns("team-b", vec![node("d", "k-d", &[])], false).await;
}

#[tokio::test]
async fn a_build_that_would_take_a_tenant_past_its_step_limit_is_refused_and_fits_once_one_finishes() {
    let h = harness_with(SchedulerConfig { max_steps_per_tenant: 3, ..Default::default() });
    let mut w = h.worker("w1", 1).await;
    let (_, mut first) = h.submit(vec![node("a", "k-a", &[]), node("b", "k-b", &["a"])]).await;
    let two_more = || BuildRequest { namespace: "team".into(), steps: vec![node("c", "k-c", &[]), node("d", "k-d", &["c"])], no_cache: false };
    let refused = h.sched.submit(two_more()).await.unwrap_err();
    assert!(refused.to_string().contains("max_steps_per_tenant = 3"), "{refused}");
    for _ in 0..2 {
        let a = w.assignment().await;
        h.succeed(&w, &a);
    }
    assert_eq!(final_state(&finish(&mut first).await), BuildState::Succeeded);
    h.sched.submit(two_more()).await.expect("room again once the first build finished");
}

// Step logs on the coordinator (log_clip.rs).

fn log(h: &Harness, w: &TestWorker, a: &Assignment, line: &str) {
    h.sched.worker_message(&w.id, w.conn, FromWorker::Log { assignment_id: a.assignment_id.clone(), stream: "stdout".into(), line: line.into() });
}

fn log_lines(events: &[BuildEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Log { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_steps_log_past_the_coordinators_limit_is_clipped_with_one_marker() {
    let h = harness_with(SchedulerConfig { max_step_log_bytes: 1000, ..Default::default() });
    let mut w = h.worker("w1", 1).await;
    let (_, mut ev) = h.submit(vec![node("a", "k-a", &[])]).await;
    let a = w.assignment().await;
    for i in 0..100 {
        log(&h, &w, &a, &format!("{i:03} {}", "x".repeat(95)));
    }
    h.succeed(&w, &a);
    let lines = log_lines(&finish(&mut ev).await);
    assert_eq!(lines.len(), 11, "10 lines of 100 bytes (newline included) fill 1000, then the marker: {lines:?}");
    assert!(lines[..10].iter().all(|l| l.ends_with("xxx")), "{lines:?}");
    assert!(lines[10].contains("log clipped by the coordinator"), "{lines:?}");
}

#[tokio::test]
async fn log_lines_for_a_step_from_a_worker_not_running_it_are_not_shown() {
    let h = harness();
    let mut w1 = h.worker("w1", 1).await;
    let w2 = h.worker("w2", 1).await;
    let (_, mut ev) = h.submit(vec![node("a", "k-a", &[])]).await;
    let (runner, other) = match timeout(Duration::from_millis(500), w1.rx.recv()).await {
        Ok(Some(ToWorker::Assign(a))) => ((&w1, a), &w2),
        other => panic!("expected w1 (the first worker) to get the step: {other:?}"),
    };
    log(&h, other, &runner.1, "forged by w2");
    log(&h, runner.0, &runner.1, "genuine");
    h.succeed(runner.0, &runner.1);
    assert_eq!(log_lines(&finish(&mut ev).await), vec!["genuine".to_owned()]);
}

// Steps no worker can run (unschedulable.rs).

fn expiring() -> SchedulerConfig {
    SchedulerConfig { unschedulable_timeout: Duration::from_millis(200), ..Default::default() }
}

fn failure(events: &[BuildEvent]) -> String {
    let Some(BuildEvent::BuildFinished { state: BuildState::Failed, .. }) = events.last() else { panic!("{events:?}") };
    events
        .iter()
        .find_map(|e| match e {
            BuildEvent::Failed { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no step failed: {events:?}"))
}

#[tokio::test]
async fn a_step_needing_a_label_no_worker_has_fails_naming_the_label() {
    let h = harness_with(expiring());
    let info = WorkerInfo { id: "w1".into(), platform: "linux/amd64".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() };
    let _w = h.worker_with(info).await;
    let mut gpu = node("a", "k-a", &[]);
    gpu.labels.insert("gpu".into(), "yes".into());
    let (_, mut rx) = h.submit(vec![gpu]).await;
    let message = failure(&finish(&mut rx).await);
    assert!(message.contains("cannot be scheduled") && message.contains("label gpu=yes"), "{message}");
}

#[tokio::test]
async fn a_step_for_a_platform_no_worker_has_fails_naming_the_platform() {
    let h = harness_with(expiring());
    let _w = h.worker("w1", 1).await;
    let mut arm = node("a", "k-a", &[]);
    arm.platform = "linux/arm64".into();
    let (_, mut rx) = h.submit(vec![arm]).await;
    let message = failure(&finish(&mut rx).await);
    assert!(message.contains("has platform linux/arm64"), "{message}");
}

#[tokio::test]
async fn a_step_of_a_tenant_no_pool_serves_fails_naming_the_tenant() {
    let h = harness_with(expiring());
    let (_, mut rx) = h.submit_ns("nobody-serves-me", vec![node("a", "k-a", &[])], false).await;
    let message = failure(&finish(&mut rx).await);
    assert!(message.contains("no connected worker serves tenant \"nobody-serves-me\""), "{message}");
}

#[tokio::test]
async fn a_step_waiting_only_for_a_busy_worker_does_not_expire() {
    let h = harness_with(expiring());
    let mut w = h.worker("w1", 1).await;
    let (_, mut first) = h.submit(vec![node("a", "k-a", &[])]).await;
    let (_, mut second) = h.submit(vec![node("b", "k-b", &[])]).await;
    let a = w.assignment().await;
    // Longer than the timeout passes while `b` waits for the one slot.
    tokio::time::sleep(Duration::from_millis(600)).await;
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut first).await), BuildState::Succeeded);
    let b = w.assignment().await;
    h.succeed(&w, &b);
    assert_eq!(final_state(&finish(&mut second).await), BuildState::Succeeded);
}

/// A result whose cache commits follow (`StepResult.commits_follow`).
fn succeeded_commits_follow(a: &Assignment) -> FromWorker {
    let outcome = StepOutcome::Succeeded {
        layers: vec![Digest::of(a.step_id.as_bytes())],
        config: b"{}".to_vec(),
        commits: vec![],
        bytes_restored: 0,
        duration_ms: 1,
        commits_follow: true,
    };
    FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome }
}

fn pip_head(h: &Harness) -> Option<crate::state::CacheHead> {
    query(&*h.state, |m| m.head(&HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 }).cloned())
}

#[tokio::test]
async fn a_step_whose_commits_follow_readies_its_dependents_at_once_and_its_build_ends_when_they_land() {
    let h = harness();
    let mut w = h.worker("w", 2).await;
    let (_, mut ev) = h.submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared), node("b", "kb", &["a"])]).await;
    let a = w.assignment().await;
    h.sched.worker_message(&w.id, w.conn, succeeded_commits_follow(&a));
    // b runs while a's cache is still being captured.
    let b = w.assignment().await;
    assert_eq!(b.step_id, "b");
    h.succeed(&w, &b);
    let snap = h.merger.store([("wheel".to_string(), "1".to_string())].into());
    let commits = vec![CacheCommit { cache_id: "pip".into(), slot: 0, base_generation: 0, snapshot: snap, total_bytes: 1 }];
    h.sched.worker_message(&w.id, w.conn, FromWorker::Commits { assignment_id: a.assignment_id.clone(), commits, error: String::new() });
    let events = finish(&mut ev).await;
    assert_eq!(final_state(&events), BuildState::Succeeded);
    // The build waited for the commit: its line came before the end.
    let line = events.iter().position(|e| matches!(e, BuildEvent::Log { line, step_id, .. } if step_id == "a" && line.contains("\"pip\": committed")));
    assert!(line.is_some(), "{events:?}");
    assert_eq!(pip_head(&h).map(|hd| (hd.generation, hd.snapshot)), Some((1, snap)));
}

#[tokio::test]
async fn a_worker_lost_before_sending_its_late_commits_leaves_the_head_as_it_was_and_the_build_still_ends() {
    let h = harness();
    let mut w = h.worker("w", 1).await;
    let (_, mut ev) = h.submit(vec![with_cache(node("a", "ka", &[]), "pip", Sharing::Shared)]).await;
    let a = w.assignment().await;
    h.sched.worker_message(&w.id, w.conn, succeeded_commits_follow(&a));
    h.sched.worker_down(&w.id, w.conn);
    let events = finish(&mut ev).await;
    assert_eq!(final_state(&events), BuildState::Succeeded);
    assert!(events.iter().any(|e| matches!(e, BuildEvent::Log { line, .. } if line.contains("commit lost"))), "{events:?}");
    assert_eq!(pip_head(&h), None);
}

fn arm64_step(id: &str) -> StepNode {
    let mut n = node(id, &format!("k-{id}"), &[]);
    n.platform = "linux/arm64".into();
    n
}

fn emulating(id: &str) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        platform: "linux/amd64".into(),
        emulated_platforms: vec!["linux/arm64".into()],
        max_parallel: 4,
        ..WorkerInfo::serving_test_tenants()
    }
}

#[tokio::test]
async fn a_step_of_a_foreign_platform_runs_on_a_worker_that_emulates_it() {
    let h = harness();
    let mut w = h.worker_with(emulating("amd-qemu")).await;
    let (_, mut rx) = h.submit(vec![arm64_step("a")]).await;
    let a = w.assignment().await;
    h.succeed(&w, &a);
    assert_eq!(final_state(&finish(&mut rx).await), BuildState::Succeeded);
}

#[tokio::test]
async fn a_native_worker_is_preferred_to_an_emulating_one() {
    let h = harness();
    let mut emu = h.worker_with(emulating("amd-qemu")).await;
    let mut arm = h.worker_with(WorkerInfo { id: "arm".into(), platform: "linux/arm64".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }).await;
    let (_, mut rx) = h.submit(vec![arm64_step("a"), arm64_step("b")]).await;
    // Both go to the native worker, one after the other, though the
    // emulating one has free slots.
    let a = arm.assignment().await;
    assert!(emu.idle().await, "an arm64 step went to the emulating worker while a native one was connected");
    h.succeed(&arm, &a);
    let b = arm.assignment().await;
    h.succeed(&arm, &b);
    assert_eq!(final_state(&finish(&mut rx).await), BuildState::Succeeded);
}
