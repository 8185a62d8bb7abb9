//! `Build.Watch`: a build's events for any client of its tenant, on any
//! node. The stream replays the build from the replicated state, then
//! follows live events (this node's scheduler, or Redis on a follower),
//! deduplicated by the [`Replayer`], re-reading the state every so often
//! and once more before the final event (see `build_events.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rbk_proto::build::{self as pb, build_event::Event};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::build_events::{Replayer, final_event};
use crate::leader_channel::LeaderGate;
use crate::model::{BuildEvent, Secrets};
use crate::scheduler::Scheduler;
use crate::state::{BuildRecord, BuildState, CoordinatorState, query};

/// How often a watch re-reads the replicated state while live events flow,
/// and while they do not (no live feed, or it broke).
const POLL_WITH_LIVE: Duration = Duration::from_secs(1);
const POLL_WITHOUT_LIVE: Duration = Duration::from_millis(250);
/// How long a watch waits for the local state to show a build the live
/// feed says is finished (a follower applies the log a moment later).
const SETTLE: Duration = Duration::from_secs(5);

/// A local subscription as a stream of wire events; it ends when the build
/// ends here, the node steps down, or the subscriber fell too far behind.
pub fn hub_stream(rx: broadcast::Receiver<BuildEvent>) -> BoxStream<'static, pb::BuildEvent> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((crate::wire::event_to_wire(e), rx)),
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
            for e in r.catch_up(&*state, &rec) {
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
                                for e in r.catch_up(&*state, &now) {
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
    scheduler: &Scheduler,
    gate: Option<&dyn LeaderGate>,
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
        let secrets = Secrets(req.secrets.into_iter().collect());
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
    use crate::build_events::tests::state_with_build;
    use crate::state::{ActionResult, Command, StepState};

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
