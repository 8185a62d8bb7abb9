//! Leadership changes of a replicated coordinator, for the scheduler.
//!
//! Only the Raft leader schedules. When a node becomes leader it *adopts*
//! every build the replicated state says is still running: the graph comes
//! from `CreateBuild`, steps whose results are in the action cache finish as
//! cached (so completed work is not redone), and the rest are resumed:
//!
//! - a step the state records as running on worker W (`SetStep Running`
//!   carries the worker and the attempt) is *kept* on W, not run again:
//!   it waits up to [`SchedulerConfig::readopt_grace`] for W to reconnect.
//!   Workers re-report what they hold when they register (assignment id,
//!   build, step, attempt — running steps and finished ones whose result was
//!   not delivered yet). A report that matches (W, build, step, attempt)
//!   puts the assignment back in the leader's books, so the result, when it
//!   comes (also as a backlog result right after registering), is accepted
//!   through the normal path, cache commits included (head CAS or merge);
//! - if W does not come back within the grace period, or comes back without
//!   the step, the step is retried elsewhere, counted against the same
//!   bounded attempts as a lost worker;
//! - everything else is queued and runs on whichever workers reconnect.
//!
//! A report matching nothing the leader wants (build ended, step done) is
//! cancelled on the worker; a result for an assignment the leader does not
//! know is ignored with a log line — never applied twice. The grace timers,
//! the reports and early results are leader-local: what must survive
//! another leader change (the step is running on W, attempt N) is already
//! in the replicated state, so a second failover resumes the same way.
//!
//! When a node loses leadership it *steps down*: it forgets its workers
//! (their streams end, so they reconnect and are redirected), its live
//! builds (client streams end; `Status` on the leader shows progress) and
//! its queue, and writes nothing.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{Core, ExecKey, LiveBuild, Running};
use crate::model::{BuildState, HeadKey, Sharing, StepOutcome, ToWorker, WorkerInfo};
use crate::state::{Command, StepState, now_ms, query};

/// Leader-local bookkeeping of steps found running on workers.
#[derive(Default)]
pub(super) struct Readopt {
    /// `(build, step)` → `(worker, attempt)` the state records as running,
    /// filled by [`Core::adopt`] for the builds it is resuming.
    recorded: HashMap<(String, String), (String, u32)>,
    /// Executions kept on a worker that has not re-reported them yet.
    awaiting: HashMap<ExecKey, Awaiting>,
    /// Results that arrived before adoption for assignments their worker
    /// reported: replayed once the assignment is matched.
    early: HashMap<String, (String, StepOutcome)>,
    /// Set once adoption is done: from then on a report that matches
    /// nothing is stale, not early.
    adopted: bool,
}

struct Awaiting {
    worker_id: String,
    attempt: u32,
    deadline: Instant,
}

/// Why the grace period ended without the step, for logs and messages.
enum Gone {
    Expired,
    NotReported,
}

impl Core {
    /// Resumes the replicated running builds this actor does not know;
    /// returns how many it adopted.
    pub(super) async fn adopt(&mut self) -> usize {
        let running = query(&*self.state, |m| m.running_builds());
        let mut adopted = 0;
        for rec in running {
            if self.builds.contains_key(&rec.id) {
                continue;
            }
            if rec.graph.is_empty() && !rec.steps.is_empty() {
                let message = "the coordinator leader changed and this build's step graph was not replicated (created by an older coordinator)";
                self.apply(Command::FinishBuild { build_id: rec.id.clone(), state: BuildState::Failed, message: message.into(), now_ms: now_ms() })
                    .await;
                continue;
            }
            tracing::info!(build = %rec.id, steps = rec.graph.len(), "adopting a running build after a leader change");
            for s in rec.steps.iter().filter(|s| s.state == StepState::Running && !s.worker_id.is_empty()) {
                self.readopt.recorded.insert((rec.id.clone(), s.id.clone()), (s.worker_id.clone(), s.attempts));
            }
            // Nobody is attached to the events: the client's stream was on
            // the old leader. Sends to a closed channel are ignored; the
            // events still count in the metrics.
            let (events, _) = self.hub.open(&rec.id);
            self.adopted.insert(rec.id.clone(), Instant::now());
            let steps = rec.graph;
            let n = steps.len();
            let index = steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
            let waiting_on = steps.iter().map(|s| s.deps.len()).collect();
            let ready: Vec<String> = steps.iter().filter(|s| s.deps.is_empty()).map(|s| s.id.clone()).collect();
            self.builds.insert(
                rec.id.clone(),
                LiveBuild {
                    namespace: rec.namespace,
                    steps,
                    index,
                    waiting_on,
                    results: HashMap::new(),
                    attempts: vec![0; n],
                    remaining: n,
                    // Not replicated; finished steps are reused from the
                    // action cache rather than run again.
                    no_cache: false,
                    started: Instant::now(),
                    events,
                },
            );
            adopted += 1;
            if n == 0 {
                self.end_build(&rec.id, BuildState::Succeeded, String::new()).await;
            }
            for step in ready {
                self.step_ready(&rec.id, &step).await;
            }
        }
        self.readopt.recorded.clear();
        self.readopt.adopted = true;
        // Workers that reconnected before adoption finished.
        self.claim_reports(None).await;
        adopted
    }

    /// From `step_ready`, for a new execution: if the state records the
    /// step as running on a worker, keeps it there awaiting the worker's
    /// report instead of queueing it; returns whether it did.
    pub(super) fn readopt_recorded(&mut self, key: &ExecKey, build_id: &str, step_id: &str) -> bool {
        let Some((worker_id, attempt)) = self.readopt.recorded.remove(&(build_id.to_owned(), step_id.to_owned())) else {
            return false;
        };
        let Some(exec) = self.execs.get_mut(key) else { return false };
        exec.attempt = attempt;
        // No assignment id until the worker reports it.
        exec.running = Some(Running { assignment_id: String::new(), worker_id: worker_id.clone(), granted: None, started: Instant::now(), committing: false, logged: 0 });
        if let Some(b) = self.builds.get_mut(build_id)
            && let Some(&i) = b.index.get(step_id)
        {
            b.attempts[i] = attempt;
        }
        tracing::info!(build = build_id, step = step_id, worker = %worker_id, attempt, grace_ms = self.config.readopt_grace.as_millis() as u64, "keeping a step on the worker that was running it, awaiting its return");
        let deadline = Instant::now() + self.config.readopt_grace;
        self.readopt.awaiting.insert(key.clone(), Awaiting { worker_id, attempt, deadline });
        true
    }

    /// A worker reconnecting to this same leader: the assignments it still
    /// holds and re-reports stay with it instead of being retried by the
    /// `worker_lost` of its old connection. Returns them for the new slot.
    pub(super) fn carry_over(&mut self, info: &WorkerInfo) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        let Some(old) = self.workers.get_mut(&info.id) else { return kept };
        for held in &info.running {
            let still_ours = self
                .assignments
                .get(&held.assignment_id)
                .and_then(|k| self.execs.get(k))
                .and_then(|e| e.running.as_ref())
                .is_some_and(|r| r.assignment_id == held.assignment_id && r.worker_id == info.id);
            if still_ours && old.running.remove(&held.assignment_id) {
                kept.insert(held.assignment_id.clone());
            }
        }
        kept
    }

    /// Matches what connected workers (all, or `only`) report against the
    /// steps awaiting them. After adoption, a step awaiting a connected
    /// worker that did not report it is retried, and a report matching
    /// nothing is cancelled on its worker.
    pub(super) async fn claim_reports(&mut self, only: Option<&str>) {
        let workers: Vec<String> = match only {
            Some(w) => vec![w.to_owned()],
            None => self.workers.keys().cloned().collect(),
        };
        for worker_id in workers {
            let Some(w) = self.workers.get(&worker_id) else { continue };
            let tenants = w.info.tenants.clone();
            for held in w.info.running.clone() {
                if self.assignments.contains_key(&held.assignment_id) {
                    continue;
                }
                let found = self
                    .readopt
                    .awaiting
                    .iter()
                    .find(|(k, a)| {
                        a.worker_id == worker_id
                            && a.attempt == held.attempt
                            && self.execs.get(*k).is_some_and(|e| {
                                // Never a step of a tenant the worker does not serve.
                                tenants.contains(&e.namespace)
                                    && e.waiters.iter().any(|(b, s)| *b == held.build_id && *s == held.step_id)
                            })
                    })
                    .map(|(k, _)| k.clone());
                match found {
                    Some(key) => self.claim(&worker_id, key, held.assignment_id).await,
                    None if self.readopt.adopted => {
                        tracing::info!(worker = %worker_id, assignment = %held.assignment_id, build = %held.build_id, step = %held.step_id, attempt = held.attempt, "a reconnected worker holds an assignment this leader does not want; cancelling it");
                        if let Some(w) = self.workers.get(&worker_id) {
                            let _ = w.tx.send(ToWorker::Cancel { assignment_id: held.assignment_id.clone() });
                        }
                        if let Some((_, outcome)) = self.readopt.early.remove(&held.assignment_id) {
                            self.unmatched_result(&worker_id, held.assignment_id, outcome).await;
                        }
                    }
                    None => {}
                }
            }
            if self.readopt.adopted {
                let missing: Vec<ExecKey> =
                    self.readopt.awaiting.iter().filter(|(_, a)| a.worker_id == worker_id).map(|(k, _)| k.clone()).collect();
                for key in missing {
                    self.readopt_retry(key, Gone::NotReported).await;
                }
            }
        }
    }

    /// Puts a re-reported assignment back in the books; replays its result
    /// if it came before adoption.
    async fn claim(&mut self, worker_id: &str, key: ExecKey, assignment_id: String) {
        self.readopt.awaiting.remove(&key);
        let Some(exec) = self.execs.get_mut(&key) else { return };
        let Some(running) = exec.running.as_mut() else { return };
        running.assignment_id = assignment_id.clone();
        let Some(w) = self.workers.get_mut(worker_id) else { return };
        w.running.insert(assignment_id.clone());
        self.assignments.insert(assignment_id.clone(), key.clone());
        rbk_metrics::global().step_readopted(rbk_metrics::Readopted::Kept);
        tracing::info!(worker = worker_id, assignment = %assignment_id, step = %exec.node.name, attempt = exec.attempt, "the worker re-reported a running step; keeping it there");
        if let Some((from, outcome)) = self.readopt.early.remove(&assignment_id)
            && from == worker_id
        {
            self.step_result(worker_id, assignment_id, outcome).await;
        }
    }

    /// A result for an assignment this leader has no execution for: kept
    /// for replay if its worker reported it and adoption is still running,
    /// else ignored (its build ended, its step is done, or it was retried).
    pub(super) async fn unmatched_result(&mut self, worker_id: &str, assignment_id: String, outcome: StepOutcome) {
        let reported = self.workers.get(worker_id).is_some_and(|w| w.info.running.iter().any(|h| h.assignment_id == assignment_id));
        if !self.readopt.adopted && reported {
            tracing::info!(worker = worker_id, assignment = %assignment_id, "a result before adoption finished; kept until its step is matched");
            self.readopt.early.insert(assignment_id, (worker_id.to_owned(), outcome));
            return;
        }
        tracing::info!(worker = worker_id, assignment = %assignment_id, "ignoring a result for an assignment this leader does not know (its build ended, its step is done or it was retried)");
        rbk_metrics::global().step_readopted(rbk_metrics::Readopted::Ignored);
        // Nothing runs under that assignment any more: its leases go.
        let _ = self.heads.release(&assignment_id).await;
    }

    /// Retries the steps whose worker did not come back in time.
    pub(super) async fn grace_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<ExecKey> = self.readopt.awaiting.iter().filter(|(_, a)| a.deadline <= now).map(|(k, _)| k.clone()).collect();
        for key in expired {
            self.readopt_retry(key, Gone::Expired).await;
        }
    }

    /// The awaited worker will not run the step: back to the queue (bounded
    /// attempts, as for a lost worker). A `locked` lease the lost
    /// assignment held is released so the retry is not blocked until it
    /// expires.
    async fn readopt_retry(&mut self, key: ExecKey, why: Gone) {
        let Some(awaiting) = self.readopt.awaiting.remove(&key) else { return };
        let Some(exec) = self.execs.get_mut(&key) else { return };
        if !exec.running.as_ref().is_some_and(|r| r.assignment_id.is_empty() && r.worker_id == awaiting.worker_id) {
            return;
        }
        exec.running = None;
        let why = match why {
            Gone::Expired => format!("did not come back within {:?} after the leader changed", self.config.readopt_grace),
            Gone::NotReported => "came back without it after the leader changed".to_owned(),
        };
        tracing::warn!(worker = %awaiting.worker_id, step = %exec.node.name, attempt = exec.attempt, "the worker running a step {why}; retrying it");
        rbk_metrics::global().step_readopted(rbk_metrics::Readopted::Retried);
        let (namespace, mounts) = (exec.namespace.clone(), exec.node.cache_mounts.clone());
        for m in mounts.iter().filter(|m| m.sharing == Sharing::Locked) {
            let head = HeadKey { namespace: namespace.clone(), cache_id: m.id.clone(), slot: 0 };
            let Some(holder) = query(&*self.state, |s| s.lease(&head).map(|l| l.holder.clone())) else { continue };
            // Only an orphan: no assignment of ours, and no other step that
            // may still come back could hold it.
            let may_return = self.readopt.awaiting.keys().any(|k| {
                self.execs.get(k).is_some_and(|e| e.namespace == namespace && e.node.cache_mounts.iter().any(|o| o.id == m.id))
            });
            if !self.assignments.contains_key(&holder) && !may_return {
                tracing::info!(cache = %head, %holder, "releasing the lost assignment's lease");
                let _ = self.heads.release(&holder).await;
            }
        }
        let exec = self.execs.get(&key).expect("looked up above");
        if exec.attempt >= self.config.max_attempts {
            let exec = self.execs.remove(&key).expect("looked up above");
            let message = format!("worker {} {why}; gave up after {} attempts", awaiting.worker_id, exec.attempt);
            self.fail_exec(exec, &awaiting.worker_id, message, -1).await;
        } else {
            self.queue.push_front(key);
        }
    }

    /// Drops everything live; the replicated state is untouched.
    pub(super) fn step_down(&mut self) {
        if !self.builds.is_empty() || !self.workers.is_empty() {
            tracing::warn!(builds = self.builds.len(), workers = self.workers.len(), "lost leadership: handing builds and workers to the new leader");
        }
        self.workers.clear();
        self.builds.clear();
        self.execs.clear();
        self.queue.clear();
        self.assignments.clear();
        self.late.clear();
        self.readopt = Readopt::default();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::cache_heads::CacheHeads;
    use crate::cache_heads::tests::MapMerger;
    use crate::model::{
        Assignment, BuildRequest, FromWorker, HeldAssignment, StepNode, StepOutcome, ToWorker, WorkerInfo,
    };
    use crate::scheduler::{Scheduler, SchedulerConfig};
    use crate::state::{BuildState, CoordinatorState, MemoryState, StepState, query};

    fn node(id: &str, deps: &[&str]) -> StepNode {
        let deps = deps.iter().map(|d| d.to_string()).collect();
        StepNode { id: id.into(), key: format!("key-{id}"), deps, payload: id.as_bytes().to_vec(), name: id.into(), ..Default::default() }
    }

    fn start(state: Arc<MemoryState>) -> Scheduler {
        start_with(state, SchedulerConfig::default())
    }

    fn start_with(state: Arc<MemoryState>, config: SchedulerConfig) -> Scheduler {
        let heads = CacheHeads::new(state.clone(), Arc::new(MapMerger::default()));
        Scheduler::start(state, heads, config)
    }

    fn grace(d: Duration) -> SchedulerConfig {
        SchedulerConfig { readopt_grace: d, heartbeat_interval: Duration::from_millis(50), ..Default::default() }
    }

    fn succeeded() -> StepOutcome {
        StepOutcome::Succeeded { layers: vec![], config: vec![], commits: vec![], bytes_restored: 0, commits_follow: false, duration_ms: 1 }
    }

    async fn next_assignment(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ToWorker>) -> Assignment {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(ToWorker::Assign(a))) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    fn held(a: &Assignment) -> HeldAssignment {
        HeldAssignment { assignment_id: a.assignment_id.clone(), build_id: a.build_id.clone(), step_id: a.step_id.clone(), attempt: a.attempt }
    }

    async fn wait_for(state: &MemoryState, what: &str, f: impl Fn(&crate::state::StateMachine) -> bool) {
        for _ in 0..500 {
            if query(state, &f) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A one-step build whose step the old leader gave to `w1`: the state
    /// records it running there; the old leader is gone. Returns the build
    /// id and w1's assignment.
    async fn running_on_w1_when_the_leader_dies(state: &Arc<MemoryState>) -> (String, Assignment) {
        let old = start(state.clone());
        let mut w = old.worker_up(info("w1")).await.unwrap();
        let req = BuildRequest { namespace: "team".into(), steps: vec![node("a", &[])], no_cache: false, submitter: String::new() };
        let (build_id, _events) = old.submit(req).await.unwrap();
        let a = next_assignment(&mut w.assignments).await;
        wait_for(state, "step a recorded running on w1", |m| {
            m.build(&build_id).is_some_and(|b| b.steps[0].state == StepState::Running && b.steps[0].worker_id == "w1")
        })
        .await;
        old.step_down();
        (build_id, a)
    }

    fn succeeded_build(build_id: &str) -> impl Fn(&crate::state::StateMachine) -> bool + '_ {
        move |m| m.build(build_id).is_some_and(|b| b.state == BuildState::Succeeded)
    }

    #[tokio::test]
    async fn a_step_its_worker_re_reports_stays_there_and_its_result_is_accepted() {
        let state = Arc::new(MemoryState::new());
        let (build_id, a) = running_on_w1_when_the_leader_dies(&state).await;
        let new = start_with(state.clone(), grace(Duration::from_secs(30)));
        assert_eq!(new.adopt().await.unwrap(), 1);
        // An idle worker is there at once: the step is not given to it.
        let mut other = new.worker_up(info("w2")).await.unwrap();
        let mut w1 = new.worker_up(WorkerInfo { running: vec![held(&a)], ..info("w1") }).await.unwrap();
        new.worker_message("w1", w1.conn, FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome: succeeded() });
        wait_for(&state, "the build to succeed", succeeded_build(&build_id)).await;
        let rec = query(&*state, |m| m.build(&build_id).cloned()).unwrap();
        assert_eq!((rec.steps[0].state.clone(), rec.steps[0].worker_id.as_str(), rec.steps[0].attempts), (StepState::Done, "w1", 1));
        assert!(other.assignments.try_recv().is_err(), "the step ran once, on w1");
        assert!(w1.assignments.try_recv().is_err(), "w1 was not given the step again");
    }

    #[tokio::test]
    async fn a_backlog_result_sent_before_adoption_is_accepted_once_matched() {
        let state = Arc::new(MemoryState::new());
        let (build_id, a) = running_on_w1_when_the_leader_dies(&state).await;
        let new = start_with(state.clone(), grace(Duration::from_secs(30)));
        // The worker finds the new leader before it has adopted anything.
        let mut w1 = new.worker_up(WorkerInfo { running: vec![held(&a)], ..info("w1") }).await.unwrap();
        new.worker_message("w1", w1.conn, FromWorker::Result { assignment_id: a.assignment_id.clone(), outcome: succeeded() });
        assert_eq!(new.adopt().await.unwrap(), 1);
        wait_for(&state, "the build to succeed", succeeded_build(&build_id)).await;
        assert!(w1.assignments.try_recv().is_err(), "the step was not run again");
    }

    #[tokio::test]
    async fn a_step_is_retried_when_its_worker_does_not_return_within_the_grace_period() {
        let state = Arc::new(MemoryState::new());
        let (build_id, _) = running_on_w1_when_the_leader_dies(&state).await;
        let new = start_with(state.clone(), grace(Duration::from_millis(300)));
        assert_eq!(new.adopt().await.unwrap(), 1);
        let mut w2 = new.worker_up(info("w2")).await.unwrap();
        let retry = next_assignment(&mut w2.assignments).await;
        assert_eq!((retry.step_id.as_str(), retry.attempt), ("a", 2), "the retry counts as the next attempt");
        new.worker_message("w2", w2.conn, FromWorker::Result { assignment_id: retry.assignment_id, outcome: succeeded() });
        wait_for(&state, "the build to succeed", succeeded_build(&build_id)).await;
        assert_eq!(query(&*state, |m| m.build(&build_id).unwrap().steps[0].worker_id.clone()), "w2");
    }

    #[tokio::test]
    async fn a_step_whose_worker_returns_without_it_is_retried_and_the_old_result_is_ignored() {
        let state = Arc::new(MemoryState::new());
        let (build_id, old) = running_on_w1_when_the_leader_dies(&state).await;
        let new = start_with(state.clone(), grace(Duration::from_secs(30)));
        assert_eq!(new.adopt().await.unwrap(), 1);
        // w1 restarted and lost the step: it registers holding nothing.
        let mut w1 = new.worker_up(info("w1")).await.unwrap();
        let retry = next_assignment(&mut w1.assignments).await;
        assert_eq!(retry.attempt, 2);
        assert_ne!(retry.assignment_id, old.assignment_id);
        // A result for the assignment the leader no longer knows changes nothing.
        new.worker_message("w1", w1.conn, FromWorker::Result { assignment_id: old.assignment_id, outcome: succeeded() });
        let before = query(&*state, |m| m.build(&build_id).cloned()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(query(&*state, |m| m.build(&build_id).cloned()).unwrap(), before);
        assert_eq!(before.state, BuildState::Running);
        new.worker_message("w1", w1.conn, FromWorker::Result { assignment_id: retry.assignment_id, outcome: succeeded() });
        wait_for(&state, "the build to succeed", succeeded_build(&build_id)).await;
    }

    #[tokio::test]
    async fn a_reported_assignment_the_leader_does_not_want_is_cancelled() {
        let state = Arc::new(MemoryState::new());
        let new = start(state.clone());
        assert_eq!(new.adopt().await.unwrap(), 0);
        let stale = HeldAssignment { assignment_id: "a-gone".into(), build_id: "b-gone".into(), step_id: "s".into(), attempt: 1 };
        let mut w1 = new.worker_up(WorkerInfo { running: vec![stale], ..info("w1") }).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), w1.assignments.recv()).await.unwrap() {
            Some(ToWorker::Cancel { assignment_id }) => assert_eq!(assignment_id, "a-gone"),
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    async fn run_next(s: &Scheduler, worker: &str, conn: u64, rx: &mut tokio::sync::mpsc::UnboundedReceiver<ToWorker>) -> String {
        let Some(ToWorker::Assign(a)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap() else {
            panic!("expected an assignment")
        };
        let outcome = StepOutcome::Succeeded { layers: vec![], config: vec![], commits: vec![], bytes_restored: 0, duration_ms: 1, commits_follow: false };
        s.worker_message(worker, conn, FromWorker::Result { assignment_id: a.assignment_id, outcome });
        a.step_id
    }

    fn info(id: &str) -> WorkerInfo {
        WorkerInfo { id: id.into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }
    }

    #[tokio::test]
    async fn a_new_leader_resumes_a_running_build_reusing_finished_steps() {
        let state = Arc::new(MemoryState::new());
        let old = start(state.clone());
        let mut w = old.worker_up(info("w1")).await.unwrap();
        let req = BuildRequest { namespace: "team".into(), steps: vec![node("a", &[]), node("b", &["a"])], no_cache: false, submitter: String::new() };
        let (build_id, _events) = old.submit(req).await.unwrap();
        assert_eq!(run_next(&old, "w1", w.conn, &mut w.assignments).await, "a");
        // Wait until a is recorded done, then the leader goes away mid-build.
        for _ in 0..100 {
            if query(&*state, |m| m.build(&build_id).unwrap().steps[0].state == StepState::Done) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        old.step_down();
        drop(old);

        let new = start(state.clone());
        assert_eq!(new.adopt().await.unwrap(), 1);
        let mut w = new.worker_up(info("w1")).await.unwrap();
        assert_eq!(run_next(&new, "w1", w.conn, &mut w.assignments).await, "b", "a is reused from the action cache");
        for _ in 0..100 {
            if query(&*state, |m| m.build(&build_id).unwrap().state == BuildState::Succeeded) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the adopted build did not finish: {:?}", query(&*state, |m| m.build(&build_id).cloned()));
    }

    #[tokio::test]
    async fn a_stepped_down_scheduler_ends_its_worker_streams() {
        let state = Arc::new(MemoryState::new());
        let s = start(state.clone());
        let mut w = s.worker_up(info("w1")).await.unwrap();
        s.step_down();
        assert!(tokio::time::timeout(Duration::from_secs(5), w.assignments.recv()).await.unwrap().is_none());
        let _: &dyn CoordinatorState = &*state;
    }
}
