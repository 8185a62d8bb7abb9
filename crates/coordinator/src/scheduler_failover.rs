//! Leadership changes of a replicated coordinator, for the scheduler.
//!
//! Only the Raft leader schedules. When a node becomes leader it *adopts*
//! every build the replicated state says is still running: the graph comes
//! from `CreateBuild`, steps whose results are in the action cache finish as
//! cached (so completed work is not redone), the rest are queued again and
//! run on whichever workers reconnect to the new leader. When a node loses
//! leadership it *steps down*: it forgets its workers (their streams end, so
//! they reconnect and are redirected), its live builds (client streams end;
//! `Status` on the leader shows progress) and its queue, and writes nothing.

use std::collections::HashMap;
use std::time::Instant;

use super::{Core, LiveBuild};
use crate::state::{BuildState, Command, now_ms, query};

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
            // Nobody is attached to the events: the client's stream was on
            // the old leader. Sends to a closed channel are ignored; the
            // events still count in the metrics.
            let (events, _) = crate::observe::observed_events();
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
        adopted
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
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::cache_heads::CacheHeads;
    use crate::cache_heads::tests::MapMerger;
    use crate::scheduler::{BuildRequest, FromWorker, Scheduler, SchedulerConfig, StepNode, StepOutcome, ToWorker, WorkerInfo};
    use crate::state::{BuildState, CoordinatorState, MemoryState, StepState, query};

    fn node(id: &str, deps: &[&str]) -> StepNode {
        StepNode {
            id: id.into(),
            key: format!("key-{id}"),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            platform: String::new(),
            labels: BTreeMap::new(),
            cache_mounts: vec![],
            payload: id.as_bytes().to_vec(),
            name: id.into(),
        }
    }

    fn start(state: Arc<MemoryState>) -> Scheduler {
        let heads = CacheHeads::new(state.clone(), Arc::new(MapMerger::default()));
        Scheduler::start(state, heads, SchedulerConfig::default())
    }

    async fn run_next(s: &Scheduler, worker: &str, conn: u64, rx: &mut tokio::sync::mpsc::UnboundedReceiver<ToWorker>) -> String {
        let Some(ToWorker::Assign(a)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap() else {
            panic!("expected an assignment")
        };
        let outcome = StepOutcome::Succeeded { layers: vec![], config: vec![], commits: vec![], bytes_restored: 0, duration_ms: 1 };
        s.worker_message(worker, conn, FromWorker::Result { assignment_id: a.assignment_id, outcome });
        a.step_id
    }

    fn info(id: &str) -> WorkerInfo {
        WorkerInfo { id: id.into(), max_parallel: 1, ..Default::default() }
    }

    #[tokio::test]
    async fn a_new_leader_resumes_a_running_build_reusing_finished_steps() {
        let state = Arc::new(MemoryState::new());
        let old = start(state.clone());
        let mut w = old.worker_up(info("w1")).await.unwrap();
        let req = BuildRequest { namespace: "team".into(), steps: vec![node("a", &[]), node("b", &["a"])], no_cache: false };
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
