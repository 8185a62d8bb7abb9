//! The submitting client's event stream, bounded (issue #15, item 7).
//!
//! The scheduler hands a build's events to an unbounded channel (it must
//! never wait on a client). A client that stops reading would make the
//! coordinator hold every log line of its build. Here they are moved into
//! a channel of [`SUBMIT_BACKLOG`] events; a client that falls that far
//! behind gets, after what is queued, a `RESOURCE_EXHAUSTED` error saying
//! so, and its build's later events are no longer kept for it. The build
//! itself goes on: the client can re-attach with `Watch`, which replays
//! the build from the replicated state and then follows it live.

use rbk_proto::build as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::EventStream;
use crate::model::BuildEvent;
use crate::wire::event_to_wire;

/// Events kept for a submitting client that is not reading.
pub const SUBMIT_BACKLOG: usize = 4096;

/// `events` as a gRPC stream that holds at most `backlog` of them.
pub(crate) fn bounded(build_id: String, mut events: mpsc::UnboundedReceiver<BuildEvent>, backlog: usize) -> EventStream<pb::BuildEvent> {
    let (tx, rx) = mpsc::channel::<Result<pb::BuildEvent, Status>>(backlog.max(2));
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            // The last slot is kept for the error.
            if tx.capacity() <= 1 {
                tracing::warn!(build = %build_id, "a submitting client fell {backlog} events behind; dropping its stream");
                let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                    "this client fell more than {backlog} events behind build {build_id} and its event stream was dropped; \
                     the build goes on: re-attach with Watch to replay it"
                ))));
                return;
            }
            if tx.try_send(Ok(event_to_wire(e))).is_err() {
                return; // the client went away
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
