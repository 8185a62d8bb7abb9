//! Lets `Build.Watch` past the leader gate.
//!
//! A follower answers every Build call with a redirect to the leader
//! (checked in an interceptor, which cannot see which method is called).
//! `Watch` is the exception: with Redis, a follower serves it itself from
//! its replicated state plus the pub/sub feed, and decides in the handler
//! whether to redirect. [`WatchBypass`] routes that one path to an
//! ungated copy of the service (still behind the token check).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// The HTTP/2 path of `Build.Watch`.
pub const WATCH_PATH: &str = "/rbk.build.v1.Build/Watch";

/// `gated` for every call but `Watch`, which goes to `ungated`.
#[derive(Clone)]
pub struct WatchBypass<G, U> {
    pub gated: G,
    pub ungated: U,
}

impl<G, U> Service<Request<Body>> for WatchBypass<G, U>
where
    G: Service<Request<Body>, Error = Infallible> + Clone + Send + 'static,
    G::Future: Send + 'static,
    G::Response: Send + 'static,
    U: Service<Request<Body>, Response = G::Response, Error = Infallible> + Clone + Send + 'static,
    U::Future: Send + 'static,
{
    type Response = G::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<G::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are generated gRPC services, always ready; each call below
        // works on a fresh clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.uri().path() == WATCH_PATH {
            let mut s = self.ungated.clone();
            Box::pin(async move { s.call(req).await })
        } else {
            let mut s = self.gated.clone();
            Box::pin(async move { s.call(req).await })
        }
    }
}

impl<G: NamedService, U> NamedService for WatchBypass<G, U> {
    const NAME: &'static str = G::NAME;
}
