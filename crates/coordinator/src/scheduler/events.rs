//! Where the scheduler sends the events of the builds it runs.
//!
//! Each event of a live build goes through the build's [`EventSink`]: to
//! the submitting client's stream (through the metrics tap of `observe.rs`),
//! to local `Watch` subscribers (a broadcast channel in the [`EventHub`])
//! and, when the farm has Redis, to the build's pub/sub channel
//! (`redis_fanout.rs`) where followers pick it up. The hub also keeps the
//! builds' log lines and step times (`build_history.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{broadcast, mpsc};

use crate::build_history::BuildHistory;
use crate::model::BuildEvent;
use crate::redis_fanout::RedisFanout;

/// Live events kept for a slow local subscriber before it falls back to
/// polling the state (it then loses log lines, not results).
const LIVE_BACKLOG: usize = 4096;

/// Where live events of this node's builds go; one per scheduler.
#[derive(Clone, Default)]
pub struct EventHub {
    live: Arc<Mutex<HashMap<String, broadcast::Sender<BuildEvent>>>>,
    fanout: Arc<OnceLock<Arc<RedisFanout>>>,
    /// Logs and step times kept after the build (`rbk builds logs`).
    history: BuildHistory,
}

impl EventHub {
    /// Turns on Redis fan-out for every build from now on (set once, at
    /// start-up; later calls are ignored).
    pub fn set_fanout(&self, fanout: Arc<RedisFanout>) {
        let _ = self.fanout.set(fanout);
    }

    /// The farm's Redis fan-out, when configured.
    pub fn fanout(&self) -> Option<Arc<RedisFanout>> {
        self.fanout.get().cloned()
    }

    /// What this node keeps of its builds' logs and step times.
    pub fn history(&self) -> &BuildHistory {
        &self.history
    }

    /// The sink for a build's events and the submitter's receiver.
    pub(crate) fn open(&self, build_id: &str) -> (EventSink, mpsc::UnboundedReceiver<BuildEvent>) {
        let (submitter, rx) = crate::observe::observed_events();
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        self.live.lock().expect("event hub lock").insert(build_id.to_owned(), live.clone());
        let sink = EventSink { build_id: build_id.to_owned(), submitter, live, hub: self.clone() };
        (sink, rx)
    }

    /// Live events of `build_id` if this node runs it now.
    pub fn subscribe(&self, build_id: &str) -> Option<broadcast::Receiver<BuildEvent>> {
        self.live.lock().expect("event hub lock").get(build_id).map(broadcast::Sender::subscribe)
    }
}

/// One live build's outlet. Dropping it (the build ended, or this node
/// stepped down) ends its local subscribers' live feed.
pub(crate) struct EventSink {
    build_id: String,
    submitter: mpsc::UnboundedSender<BuildEvent>,
    live: broadcast::Sender<BuildEvent>,
    hub: EventHub,
}

impl EventSink {
    /// Never blocks (the scheduler's actor calls it): Redis publishing is
    /// queued. Fails only when the submitter stopped listening, which the
    /// scheduler ignores as before.
    pub(crate) fn send(&self, e: BuildEvent) -> Result<(), mpsc::error::SendError<BuildEvent>> {
        self.hub.history.record(&self.build_id, &e);
        if let Some(f) = self.hub.fanout.get() {
            f.publish(&self.build_id, &crate::wire::event_to_wire(e.clone()));
        }
        let _ = self.live.send(e.clone());
        self.submitter.send(e)
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        let mut live = self.hub.live.lock().expect("event hub lock");
        if live.get(&self.build_id).is_some_and(|s| s.same_channel(&self.live)) {
            live.remove(&self.build_id);
        }
    }
}
