//! A build's events for every client that follows it, not only the one that
//! submitted it.
//!
//! The scheduler sends each event of a live build through an [`EventSink`]:
//! to the submitting client's stream (through the metrics tap), to local
//! `Watch` subscribers (a broadcast channel in the [`EventHub`]) and, when
//! the farm has Redis, to the build's pub/sub channel
//! ([`crate::redis_fanout`]) where followers pick it up.
//!
//! A `Watch` stream ([`watch`]) never trusts the live feed alone: it first
//! replays the build from the replicated state (which every node holds),
//! re-reads that state every so often and once more before the final
//! event, and drops what it already sent ([`Replayer`], shared with the
//! client, which re-attaches after a failover). So a missed live
//! event (subscribing races the scheduler; Redis drops a message or dies;
//! the leader steps down) costs at most its log lines and some latency,
//! never a step result the client needs to assemble the image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rbk_proto::build::{self as pb, build_event::Event};
pub use rbk_proto::replay::Replayer;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::redis_fanout::RedisFanout;
use crate::scheduler::BuildEvent;
use crate::state::{BuildRecord, BuildState, CoordinatorState, StepState, query};

/// Live events kept for a slow local subscriber before it falls back to
/// polling the state (it then loses log lines, not results).
const LIVE_BACKLOG: usize = 4096;
/// How often a watch re-reads the replicated state while live events flow,
/// and while they do not (no live feed, or it broke).
const POLL_WITH_LIVE: Duration = Duration::from_secs(1);
const POLL_WITHOUT_LIVE: Duration = Duration::from_millis(250);
/// How long a watch waits for the local state to show a build the live
/// feed says is finished (a follower applies the log a moment later).
const SETTLE: Duration = Duration::from_secs(5);

/// Where live events of this node's builds go; one per scheduler.
#[derive(Clone, Default)]
pub struct EventHub {
    live: Arc<Mutex<HashMap<String, broadcast::Sender<BuildEvent>>>>,
    fanout: Arc<OnceLock<Arc<RedisFanout>>>,
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
        if let Some(f) = self.hub.fanout.get() {
            f.publish(&self.build_id, &crate::server::event_to_wire(e.clone()));
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

fn wire(e: Event) -> pb::BuildEvent {
    pb::BuildEvent { event: Some(e) }
}

/// A local subscription as a stream of wire events; it ends when the build
/// ends here, the node steps down, or the subscriber fell too far behind.
pub fn hub_stream(rx: broadcast::Receiver<BuildEvent>) -> BoxStream<'static, pb::BuildEvent> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((crate::server::event_to_wire(e), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a build watcher fell behind; following the state instead");
                None
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .boxed()
}

/// The build's record if it belongs to `namespace`; a follower may not
/// have applied a just-created build yet, so it is looked for a little.
pub async fn find_build(state: &dyn CoordinatorState, namespace: &str, build_id: &str) -> Result<BuildRecord, Status> {
    for _ in 0..20 {
        if let Some(rec) = query(state, |m| m.build(build_id).cloned()) {
            if rec.namespace != namespace {
                break;
            }
            return Ok(rec);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another tenant's build is "not found" too.
    Err(Status::not_found(format!("build {build_id} not found")))
}

/// The Watch stream: a replay of `rec` from `state`, then `live` events
/// (deduplicated) with periodic state re-reads, until the build finished.
/// `live` is `None` when nothing live is available (a finished build, a
/// new leader that has not adopted the build yet): the state alone drives
/// the stream.
pub fn watch(
    state: Arc<dyn CoordinatorState>,
    rec: BuildRecord,
    live: Option<BoxStream<'static, pb::BuildEvent>>,
) -> BoxStream<'static, Result<pb::BuildEvent, Status>> {
    let (tx, rx) = mpsc::channel::<Result<pb::BuildEvent, Status>>(256);
    tokio::spawn(async move {
        let mut r = Replayer::default();
        let mut live = live;
        let build_id = rec.id.clone();
        let mut rec = rec;
        loop {
            for e in catch_up(&mut r, &*state, &rec) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if let Some(done) = final_event(&rec) {
                let _ = tx.send(Ok(done)).await;
                return;
            }
            let poll = if live.is_some() { POLL_WITH_LIVE } else { POLL_WITHOUT_LIVE };
            let next = async {
                match live.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = next => match e {
                    Some(e) if matches!(e.event, Some(Event::BuildFinished(_))) => {
                        // Settle: send every result the state holds before
                        // the end (a follower's state may lag the feed).
                        let deadline = tokio::time::Instant::now() + SETTLE;
                        loop {
                            if let Some(now) = query(&*state, |m| m.build(&build_id).cloned()) {
                                for e in catch_up(&mut r, &*state, &now) {
                                    if tx.send(Ok(e)).await.is_err() {
                                        return;
                                    }
                                }
                                if now.state != BuildState::Running || tokio::time::Instant::now() >= deadline {
                                    break;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let _ = tx.send(Ok(e)).await;
                        return;
                    }
                    Some(e) => {
                        if r.admit(&e) && tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        tracing::info!(build = %build_id, "a watch's live feed ended; following the replicated state");
                        live = None;
                    }
                },
                _ = tokio::time::sleep(poll) => {}
                _ = tx.closed() => return,
            }
            if let Some(now) = query(&*state, |m| m.build(&build_id).cloned()) {
                rec = now;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// `Build.Watch` on this node. The leader serves it from its own live
/// events (taking re-supplied secrets for the build); a follower serves it
/// from its replicated state plus the Redis feed, and redirects it to the
/// leader when there is no Redis, Redis does not answer, or the request
/// carries secrets (which must reach the leader, and only it).
pub async fn serve_watch(
    state: Arc<dyn CoordinatorState>,
    scheduler: &crate::scheduler::Scheduler,
    gate: Option<&dyn rbk_proto::leader::LeaderGate>,
    namespace: &str,
    req: pb::WatchRequest,
) -> Result<BoxStream<'static, Result<pb::BuildEvent, Status>>, Status> {
    let hub = scheduler.events();
    if let Some(redirect) = gate.and_then(|g| g.check().err()) {
        if req.submitter || !req.secrets.is_empty() {
            return Err(redirect);
        }
        let Some(fanout) = hub.fanout() else { return Err(redirect) };
        let rec = find_build(&*state, namespace, &req.build_id).await?;
        if rec.state != BuildState::Running {
            return Ok(watch(state, rec, None));
        }
        return match fanout.subscribe(&req.build_id).await {
            // Subscribed first, then the state is read again: nothing
            // published in between is missed.
            Ok(live) => {
                let rec = find_build(&*state, namespace, &req.build_id).await?;
                Ok(watch(state, rec, Some(live)))
            }
            Err(e) => {
                tracing::warn!("watch of build {} on a follower: {e}; redirecting to the leader", req.build_id);
                Err(redirect)
            }
        };
    }
    let rec = find_build(&*state, namespace, &req.build_id).await?;
    if rec.state == BuildState::Running && (req.submitter || !req.secrets.is_empty()) {
        let secrets = crate::scheduler::Secrets(req.secrets.into_iter().collect());
        if let Err(e) = scheduler.attach_secrets(namespace, &req.build_id, secrets).await {
            // A leader that has not adopted the build yet (it was elected
            // a moment ago): the client asks again.
            tracing::info!("watch of build {} with secrets: {e}", req.build_id);
            return Err(Status::unavailable(format!(
                "build {} is being resumed by the new leader; watch again in a moment",
                req.build_id
            )));
        }
    }
    let live = hub.subscribe(&req.build_id).map(hub_stream);
    let rec = find_build(&*state, namespace, &req.build_id).await?;
    if live.is_none() && rec.state == BuildState::Running {
        // Elected a moment ago, not adopted yet: asked again, the watch
        // gets live events (logs) too.
        return Err(Status::unavailable(format!("build {} is being resumed by the new leader; watch again in a moment", req.build_id)));
    }
    Ok(watch(state, rec, live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ActionResult, Command, MemoryState, StepRecord};

    async fn state_with_build() -> Arc<MemoryState> {
        let state = Arc::new(MemoryState::new());
        state
            .apply(Command::CreateBuild {
                build_id: "b1".into(),
                namespace: "team".into(),
                steps: vec![("a".into(), "ka".into()), ("b".into(), "kb".into())],
                now_ms: 1,
                graph: vec![],
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

    #[tokio::test]
    async fn a_watch_without_live_events_follows_the_state_to_the_end() {
        let state = state_with_build().await;
        let rec = find_build(&*state, "team", "b1").await.unwrap();
        let mut stream = watch(state.clone(), rec, None);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(stream.next().await.unwrap().unwrap());
        }
        state.apply(Command::PutAction { namespace: "team".into(), key: "kb".into(), result: ActionResult { layers: vec![], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 3 } })
            .await
            .unwrap();
        state
            .apply(Command::SetStep {
                build_id: "b1".into(),
                step_id: "b".into(),
                state: StepState::Done,
                worker_id: "w".into(),
                attempts: 1,
                message: String::new(),
            })
            .await
            .unwrap();
        state.apply(Command::FinishBuild { build_id: "b1".into(), state: BuildState::Succeeded, message: String::new(), now_ms: 9 }).await.unwrap();
        let rest: Vec<_> = stream.map(|e| e.unwrap().event.unwrap()).collect().await;
        assert!(matches!(&rest[0], Event::Finished(f) if f.step_id == "b"), "{rest:?}");
        assert!(matches!(&rest[1], Event::BuildFinished(b) if b.state == "succeeded"), "{rest:?}");
        assert_eq!(rest.len(), 2);
    }

    #[tokio::test]
    async fn another_tenants_build_is_not_found() {
        let state = state_with_build().await;
        let e = find_build(&*state, "other", "b1").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
}
