//! What a build's event stream already told its reader, so neither a
//! replay nor a duplicate live event says it twice.
//!
//! Both ends of `Build.Watch` need it: the coordinator, which replays a
//! build from the replicated state before and while it forwards live
//! events, and the client (`rbk_client::submit`), which re-attaches to a
//! new leader after a failover and is replayed the build again.

use std::collections::HashSet;

use crate::build::{BuildEvent, build_event::Event};

/// The log stream of the coordinator's lines about a step's cache commits,
/// which may land after the step ended (the worker captures cache mounts
/// behind the next steps).
pub const COMMIT_STREAM: &str = "commit";

#[derive(Debug, Default)]
pub struct Replayer {
    accepted: bool,
    /// Steps whose cached/finished/failed event was sent.
    ended: HashSet<String>,
    /// `(step, attempt)` pairs whose started event was sent.
    started: HashSet<(String, u32)>,
}

impl Replayer {
    /// Whether an event is news (and records it). `BuildFinished` is
    /// always news; the caller ends the stream with it.
    pub fn admit(&mut self, e: &BuildEvent) -> bool {
        match &e.event {
            Some(Event::Accepted(_)) => !std::mem::replace(&mut self.accepted, true),
            Some(Event::Started(s)) => !self.ended.contains(&s.step_id) && self.started.insert((s.step_id.clone(), s.attempt)),
            Some(Event::Cached(c)) => self.ended.insert(c.step_id.clone()),
            Some(Event::Finished(f)) => self.ended.insert(f.step_id.clone()),
            Some(Event::Failed(f)) => self.ended.insert(f.step_id.clone()),
            // A step's cache commits land after it ended (stream
            // `commit`, see `COMMIT_STREAM`).
            Some(Event::Log(l)) => l.stream == COMMIT_STREAM || !self.ended.contains(&l.step_id),
            Some(Event::BuildFinished(_)) => true,
            None => false,
        }
    }

    /// Whether the build's `Accepted` event was sent.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    /// Whether `step_id`'s cached/finished/failed event was sent.
    pub fn ended(&self, step_id: &str) -> bool {
        self.ended.contains(step_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{StepFinished, StepStarted};

    fn started(step: &str, attempt: u32) -> BuildEvent {
        BuildEvent { event: Some(Event::Started(StepStarted { step_id: step.into(), worker_id: "w".into(), attempt, name: String::new() })) }
    }

    fn finished(step: &str) -> BuildEvent {
        BuildEvent { event: Some(Event::Finished(StepFinished { step_id: step.into(), ..Default::default() })) }
    }

    #[test]
    fn a_live_event_already_replayed_is_not_sent_again() {
        let mut r = Replayer::default();
        assert!(r.admit(&started("a", 1)));
        assert!(!r.admit(&started("a", 1)));
        assert!(r.admit(&started("a", 2)), "a retry is news");
        assert!(r.admit(&finished("a")));
        assert!(!r.admit(&finished("a")));
        assert!(!r.admit(&started("a", 3)), "nothing starts after it ended");
    }

    #[test]
    fn a_steps_output_ends_with_it_but_its_cache_commit_lines_come_after() {
        let mut r = Replayer::default();
        assert!(r.admit(&finished("a")));
        let log = |stream: &str| BuildEvent {
            event: Some(Event::Log(crate::build::StepLog { step_id: "a".into(), stream: stream.into(), line: "x".into(), ..Default::default() })),
        };
        assert!(!r.admit(&log("stdout")));
        assert!(r.admit(&log(COMMIT_STREAM)));
    }
}
