//! A build's events as the replicated state implies them, for every client
//! that follows it, not only the one that submitted it.
//!
//! A `Watch` stream (`service/watch.rs`) never trusts the live feed alone
//! (`scheduler/events.rs`): it first
//! replays the build from the replicated state (which every node holds),
//! re-reads that state every so often and once more before the final
//! event, and drops what it already sent ([`Replayer`]). So a missed live
//! event (subscribing races the scheduler; Redis drops a message or dies;
//! the leader steps down) costs at most its log lines and some latency,
//! never a step result the client needs to assemble the image.

use rbk_proto::build::{self as pb, build_event::Event};
pub use rbk_proto::replay::Replayer;

use crate::state::{BuildRecord, BuildState, CoordinatorState, StepState, query};

/// The events `rec` (the replicated record) implies that `seen` has not
/// sent yet, in graph order (recording them); a finished build's final
/// event is not among them (see [`final_event`]). Results come from the
/// action cache.
pub fn catch_up(seen: &mut Replayer, state: &dyn CoordinatorState, rec: &BuildRecord) -> Vec<pb::BuildEvent> {
    let mut out = Vec::new();
    let mut send = |seen: &mut Replayer, e: Event| {
        let e = wire(e);
        if seen.admit(&e) {
            out.push(e);
        }
    };
    if !seen.accepted() {
        send(seen, Event::Accepted(pb::Accepted { build_id: rec.id.clone(), total_steps: rec.steps.len() as u32 }));
    }
    let name = |id: &str| rec.graph.iter().find(|n| n.id == id).map(|n| n.name.clone()).unwrap_or_default();
    for s in &rec.steps {
        if seen.ended(&s.id) {
            continue;
        }
        let event = match s.state {
            StepState::Pending | StepState::Cancelled => None,
            StepState::Running => {
                let attempt = s.attempts.max(1);
                Some(Event::Started(pb::StepStarted { step_id: s.id.clone(), worker_id: s.worker_id.clone(), attempt, name: name(&s.id) }))
            }
            StepState::Cached | StepState::Done => {
                // The result is committed before the step is marked
                // done; if it is not there yet, a later pass sends it.
                let Some(r) = query(state, |m| m.action(&rec.namespace, &s.key).cloned()) else { continue };
                let layers = r.layers.iter().map(ToString::to_string).collect();
                Some(if s.state == StepState::Cached {
                    Event::Cached(pb::StepCached { step_id: s.id.clone(), name: name(&s.id), layers, config: r.config })
                } else {
                    Event::Finished(pb::StepFinished {
                        step_id: s.id.clone(),
                        worker_id: s.worker_id.clone(),
                        duration_ms: r.duration_ms,
                        bytes_restored: 0,
                        layers,
                        config: r.config,
                    })
                })
            }
            StepState::Failed => Some(Event::Failed(pb::StepFailed {
                step_id: s.id.clone(),
                worker_id: s.worker_id.clone(),
                message: s.message.clone(),
                exit_code: 0,
            })),
        };
        if let Some(e) = event {
            send(seen, e);
        }
    }
    out
}

/// The last event of a finished build, from its record.
pub fn final_event(rec: &BuildRecord) -> Option<pb::BuildEvent> {
    (rec.state != BuildState::Running).then(|| {
        wire(Event::BuildFinished(pb::BuildFinished {
            state: rec.state.as_str().into(),
            duration_ms: rec.finished_ms.saturating_sub(rec.created_ms),
            message: rec.message.clone(),
        }))
    })
}

pub(crate) fn wire(e: Event) -> pb::BuildEvent {
    pb::BuildEvent { event: Some(e) }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::{ActionResult, Command, MemoryState, StepRecord};

    /// A build of two steps: `a` done (its result cached), `b` running.
    pub(crate) async fn state_with_build() -> Arc<MemoryState> {
        let state = Arc::new(MemoryState::new());
        state
            .apply(Command::CreateBuild {
                build_id: "b1".into(),
                namespace: "team".into(),
                steps: vec![("a".into(), "ka".into()), ("b".into(), "kb".into())],
                now_ms: 1,
                graph: vec![],
                submitter: String::new(),
            })
            .await
            .unwrap();
        let result = ActionResult { layers: vec![], config: b"{\"a\":1}".to_vec(), duration_ms: 7, worker_id: "w".into(), created_ms: 2 };
        state.apply(Command::PutAction { namespace: "team".into(), key: "ka".into(), result }).await.unwrap();
        let set = |step: &str, st: StepState| Command::SetStep {
            build_id: "b1".into(),
            step_id: step.into(),
            state: st,
            worker_id: "w".into(),
            attempts: 1,
            message: String::new(),
        };
        state.apply(set("a", StepState::Done)).await.unwrap();
        state.apply(set("b", StepState::Running)).await.unwrap();
        state
    }

    #[tokio::test]
    async fn the_replay_carries_finished_results_with_their_config_and_running_steps() {
        let state = state_with_build().await;
        let rec = query(&*state, |m| m.build("b1").cloned()).unwrap();
        let mut r = Replayer::default();
        let events = catch_up(&mut r, &*state, &rec);
        let kinds: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
        assert!(matches!(&kinds[0], Event::Accepted(a) if a.build_id == "b1" && a.total_steps == 2));
        assert!(matches!(&kinds[1], Event::Finished(f) if f.step_id == "a" && f.config == b"{\"a\":1}"));
        assert!(matches!(&kinds[2], Event::Started(s) if s.step_id == "b"));
        assert!(catch_up(&mut r, &*state, &rec).is_empty(), "a second pass sends nothing new");
        let _: &[StepRecord] = &rec.steps;
    }
}
