//! `--secret` values of builds a new leader adopted.
//!
//! Secret values live only in the memory of the leader that accepted the
//! build (never in the Raft log, Redis or on disk), so a leader that adopts
//! a build after a failover has none. The submitting client re-supplies
//! them when it re-attaches (`Watch` with secrets). Until then, a step of
//! an adopted build that mounts a secret the leader does not hold waits (up
//! to [`SchedulerConfig::secret_wait`](super::SchedulerConfig)); then it
//! fails naming the secret, instead of running without it.
//!
//! Which secrets a step mounts is [`StepNode::secret_ids`](crate::model::StepNode),
//! filled by the client's planner; the payload stays opaque here.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Core, ExecKey, SchedulerError, Secrets};

impl Core {
    /// The submitting client's secrets for its build (re-attaching after a
    /// failover); values already held are replaced. The client is back, so
    /// its steps stop waiting: what it sent is all there is.
    pub(super) fn attach_secrets(&mut self, namespace: &str, build_id: &str, secrets: Secrets) -> Result<(), SchedulerError> {
        if self.builds.get(build_id).is_none_or(|b| b.namespace != namespace) {
            return Err(SchedulerError::UnknownBuild(build_id.into()));
        }
        if !secrets.0.is_empty() {
            tracing::info!(build = build_id, ids = ?secrets, "secrets re-supplied by the client");
            self.secrets.entry(build_id.into()).or_default().0.extend(secrets.0);
        }
        self.adopted.remove(build_id);
        Ok(())
    }

    /// For an execution about to be dispatched: `None` to go ahead;
    /// `Some(false)` to keep it queued (an adopted build's secret is not
    /// here yet); `Some(true)` when it was failed for want of a secret.
    pub(super) async fn hold_for_secrets(&mut self, key: &ExecKey) -> Option<bool> {
        self.adopted.retain(|b, _| self.builds.contains_key(b));
        let exec = self.execs.get(key)?;
        let needed = &exec.node.secret_ids;
        if needed.is_empty() {
            return None;
        }
        // Secrets of any build waiting for this execution will do; only
        // builds adopted from another leader can lack them.
        let mut oldest: Option<Instant> = None;
        let mut missing = BTreeSet::new();
        for (bid, _) in &exec.waiters {
            // A build this leader accepted itself has what its client gave.
            let adopted = self.adopted.get(bid)?;
            let held = self.secrets.get(bid);
            let lacks: Vec<_> = needed.iter().filter(|id| !held.is_some_and(|s| s.0.contains_key(*id))).cloned().collect();
            if lacks.is_empty() {
                return None;
            }
            missing.extend(lacks);
            oldest = Some(oldest.map_or(*adopted, |o| o.min(*adopted)));
        }
        let since = oldest?;
        if since.elapsed() < self.config.secret_wait {
            return Some(false);
        }
        let exec = self.execs.remove(key).expect("looked up above");
        let ids: Vec<_> = missing.iter().map(|id| format!("{id:?}")).collect();
        let message = format!(
            "step {} needs secret {}, which no client re-supplied within {:?} after the coordinator leader changed \
             (secrets are held only in the leader's memory; re-run rbk submit with --secret)",
            exec.node.name,
            ids.join(", "),
            self.config.secret_wait
        );
        tracing::warn!("{message}");
        self.fail_exec(exec, "", message, -1).await;
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::cache_heads::CacheHeads;
    use crate::cache_heads::tests::MapMerger;
    use crate::model::{BuildEvent, BuildRequest, Secrets, StepNode, ToWorker, WorkerInfo};
    use crate::scheduler::{Scheduler, SchedulerConfig};
    use crate::state::{BuildState, MemoryState, query};

    fn secret_step(id: &str) -> StepNode {
        StepNode {
            id: id.into(),
            key: format!("key-{id}"),
            payload: br#"{"mounts":[{"kind":{"type":"secret","id":"tok"}}]}"#.to_vec(),
            name: format!("RUN {id}"),
            secret_ids: ["tok".to_owned()].into(),
            ..Default::default()
        }
    }

    /// A build submitted to one leader that died, adopted by a new one.
    async fn adopted(wait: Duration) -> (Arc<MemoryState>, Scheduler, String) {
        let state = Arc::new(MemoryState::new());
        let start = |state: Arc<MemoryState>| {
            let heads = CacheHeads::new(state.clone(), Arc::new(MapMerger::default()));
            Scheduler::start(state, heads, SchedulerConfig { secret_wait: wait, ..Default::default() })
        };
        let old = start(state.clone());
        let req = BuildRequest { namespace: "team".into(), steps: vec![secret_step("a")], no_cache: false, submitter: String::new() };
        let secrets = Secrets([("tok".to_owned(), b"s3cr3t".to_vec())].into());
        let (build_id, _) = old.submit_with_secrets(req, secrets).await.unwrap();
        old.step_down();
        let new = start(state.clone());
        assert_eq!(new.adopt().await.unwrap(), 1);
        (state, new, build_id)
    }

    #[tokio::test]
    async fn an_adopted_step_runs_with_the_secret_its_client_re_supplied() {
        let (_state, s, build_id) = adopted(Duration::from_secs(60)).await;
        let mut w = s.worker_up(WorkerInfo { id: "w".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }).await.unwrap();
        // Nothing is dispatched without the secret.
        assert!(tokio::time::timeout(Duration::from_millis(300), w.assignments.recv()).await.is_err());
        let secrets = Secrets([("tok".to_owned(), b"s3cr3t".to_vec())].into());
        s.attach_secrets("team", &build_id, secrets).await.unwrap();
        let Some(ToWorker::Assign(a)) = tokio::time::timeout(Duration::from_secs(5), w.assignments.recv()).await.unwrap() else {
            panic!("expected an assignment")
        };
        assert_eq!(a.secrets.0.get("tok").map(Vec::as_slice), Some(b"s3cr3t".as_slice()));
    }

    #[tokio::test]
    async fn an_adopted_step_whose_secret_nobody_re_supplied_fails_naming_it() {
        let (state, s, build_id) = adopted(Duration::from_millis(200)).await;
        let mut watch = s.events().subscribe(&build_id).unwrap();
        let mut w = s.worker_up(WorkerInfo { id: "w".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }).await.unwrap();
        let failed = loop {
            match tokio::time::timeout(Duration::from_secs(10), watch.recv()).await.unwrap().unwrap() {
                BuildEvent::Failed { message, .. } => break message,
                _ => continue,
            }
        };
        assert!(failed.contains("secret \"tok\""), "{failed}");
        assert!(!failed.contains("s3cr3t"));
        assert!(w.assignments.try_recv().is_err(), "the step never ran without its secret");
        for _ in 0..100 {
            if query(&*state, |m| m.build(&build_id).unwrap().state == BuildState::Failed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the build did not fail");
    }

    #[tokio::test]
    async fn a_re_attached_client_without_the_secret_releases_the_step_to_its_worker() {
        let (_state, s, build_id) = adopted(Duration::from_secs(60)).await;
        let mut w = s.worker_up(WorkerInfo { id: "w".into(), max_parallel: 1, ..WorkerInfo::serving_test_tenants() }).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), w.assignments.recv()).await.is_err());
        // The submitter is back with no secrets: the worker decides
        // (an optional secret mount runs without it; a required one fails).
        s.attach_secrets("team", &build_id, Secrets::default()).await.unwrap();
        let Some(ToWorker::Assign(a)) = tokio::time::timeout(Duration::from_secs(5), w.assignments.recv()).await.unwrap() else {
            panic!("expected an assignment")
        };
        assert!(a.secrets.0.is_empty());
    }

    #[tokio::test]
    async fn secrets_for_another_tenants_build_are_refused() {
        let (_state, s, build_id) = adopted(Duration::from_secs(60)).await;
        assert!(s.attach_secrets("other", &build_id, Secrets::default()).await.is_err());
    }
}
