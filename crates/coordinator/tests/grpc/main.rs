//! The coordinator over real gRPC on 127.0.0.1: a test worker drives the
//! real Worker stream, a test client the real Build service, and the
//! Content service is backed by a real filesystem store.

mod harness;

mod auth;
mod builds;
mod cache;
mod content;
mod limits;
mod ssh;
mod version_skew;
mod watch;
