//! The coordinator's gRPC services, one file per service, all behind the
//! token check of `auth.rs` (the server installs the interceptors):
//!
//! - [`build`]: clients submit graphs, follow ([`watch`]), inspect and
//!   cancel builds, list and prune cache heads;
//! - [`worker`]: one bidirectional stream per worker (register, assignments
//!   down, logs and results up);
//! - [`content`]: blobs for callers without S3 credentials;
//! - [`admin`]: operator calls (a store collection), behind the admin
//!   token instead.
//! - [`history`]: a build's steps and kept logs after the fact;
//! - [`images`]: the farm pulls base images and pushes results.
//!
//! Each service holds only the parts it uses; protobuf conversion is in
//! `wire.rs`. The SSH agent relay is `ssh_relay.rs`.

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

use crate::scheduler::SchedulerError;

pub(crate) mod admin;
pub(crate) mod build;
pub(crate) mod content;
pub(crate) mod history;
pub(crate) mod images;
pub(crate) mod submit_stream;
pub(crate) mod watch;
pub(crate) mod worker;

pub(crate) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A scheduler error as the gRPC status a client acts on: fix the graph,
/// the build is not there, or try again.
pub(crate) fn scheduler_status(e: SchedulerError) -> Status {
    match e {
        SchedulerError::InvalidGraph(_) => Status::invalid_argument(e.to_string()),
        SchedulerError::UnknownBuild(_) => Status::not_found(e.to_string()),
        SchedulerError::WorkerIdInUse(_) => Status::already_exists(e.to_string()),
        SchedulerError::Quota(_) => Status::resource_exhausted(e.to_string()),
        SchedulerError::BadContext(_) => Status::failed_precondition(e.to_string()),
        SchedulerError::ContextUnavailable(_) => Status::unavailable(e.to_string()),
        SchedulerError::State { .. } | SchedulerError::Stopped => Status::unavailable(e.to_string()),
    }
}
