//! `GET /builds/{id}/events`: one build as Server-Sent Events, for the
//! build page.
//!
//! - `log`: a batch of log lines, `[[step_id, stream, line], ...]`, read
//!   from the history this node keeps of the builds it runs
//!   (`BuildHistory::lines_since`), in order, none twice, from the first
//!   kept line on;
//! - `steps`: the build's [`BuildView`](crate::views::BuildView) whenever
//!   it changed (states, workers, times: the replicated state, as
//!   `Build.Watch` replays it);
//! - `end`: the build finished and every kept line was sent.
//!
//! The feed wakes on the build's live events (the scheduler's event hub,
//! the one `Build.Watch` follows) and re-reads at least every 250 ms, so
//! a missed live event delays a line, never loses it. The session is
//! re-checked on every wake: a revoked token ends the stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use rbk_coordinator::model::BuildEvent;
use tokio::sync::broadcast;

use crate::error::DashboardError;
use crate::pages::tenant_build;
use crate::app::App;

/// Lines per `log` event: a 10 MB log arrives in a few dozen events.
pub const LINES_PER_EVENT: usize = 2000;
/// The longest a change waits to be noticed without a live event.
const POLL: Duration = Duration::from_millis(250);
/// After a live event, how long more events are gathered into one batch.
const GATHER: Duration = Duration::from_millis(40);

struct Follow {
    app: App,
    headers: HeaderMap,
    namespace: String,
    id: String,
    /// The next log line number to send.
    cursor: u64,
    last_steps: String,
    live: Option<broadcast::Receiver<BuildEvent>>,
    out: VecDeque<Event>,
    /// Lines are waiting beyond the last batch: look again at once.
    behind: bool,
    ended: bool,
}

impl Follow {
    /// Waits for something to happen (a live event, or the poll interval).
    async fn wait(&mut self) {
        if self.behind {
            return;
        }
        match self.live.as_mut() {
            Some(rx) => match tokio::time::timeout(POLL, rx.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => tokio::time::sleep(GATHER).await,
                Ok(Err(broadcast::error::RecvError::Closed)) => self.live = None,
                Err(_) => {}
            },
            None => tokio::time::sleep(POLL).await,
        }
    }

    /// Queues what changed since the last look; false once the session
    /// or the build is gone.
    fn look(&mut self) -> bool {
        if self.app.sessions.check(&self.headers).is_err() {
            return false;
        }
        let Ok(view) = tenant_build(&self.app, &self.namespace, &self.id) else { return false };
        let history = self.app.coordinator.scheduler.events().history();
        let mut caught_up = true;
        self.behind = false;
        if let Some((lines, next)) = history.lines_since(&self.id, self.cursor, LINES_PER_EVENT) {
            caught_up = lines.len() < LINES_PER_EVENT;
            self.behind = !caught_up;
            if !lines.is_empty() {
                let batch: Vec<[&str; 3]> = lines.iter().map(|l| [l.step_id.as_str(), l.stream.as_str(), l.line.as_str()]).collect();
                let data = serde_json::to_string(&batch).unwrap_or_default();
                self.out.push_back(Event::default().event("log").id(next.to_string()).data(data));
            }
            self.cursor = next;
        }
        let steps = serde_json::to_string(&view).unwrap_or_default();
        if steps != self.last_steps {
            self.out.push_back(Event::default().event("steps").data(steps.clone()));
            self.last_steps = steps;
        }
        if view.state != "running" && caught_up {
            self.out.push_back(Event::default().event("end").data(view.state));
            self.ended = true;
        }
        true
    }
}

/// The SSE stream of the tenant's build `id` (404 for another tenant's).
pub async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    let namespace = s.tenant()?.to_owned();
    tenant_build(&app, &namespace, &id)?;
    let live = app.coordinator.scheduler.events().subscribe(&id);
    // A reconnecting browser says where it was (the `id:` of the last log event).
    let cursor = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let follow = Follow { app, headers, namespace, id, cursor, last_steps: String::new(), live, out: VecDeque::new(), behind: true, ended: false };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.out.pop_front() {
                return Some((Ok(e), f));
            }
            if f.ended {
                return None;
            }
            f.wait().await;
            if !f.look() {
                return None;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
