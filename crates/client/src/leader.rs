//! Finding the leader of a replicated coordinator.
//!
//! Only the Raft leader schedules. A follower answers Build and Worker calls
//! with `UNAVAILABLE` and, when it knows the leader, the leader's client URL
//! (`rbk_proto::leader::redirect`). Clients and workers
//! follow it with [`connect_leader`] / [`follow_leader`], so they can be
//! pointed at any node (or a Kubernetes Service spanning all of them).
//! A single-node coordinator never redirects, so these helpers cost one
//! ordinary connect there.

use std::future::Future;
use std::time::{Duration, Instant};

pub use rbk_proto::leader::{is_redirect, leader_hint};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::tls::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("coordinator url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("no coordinator leader reachable from {url} within {waited:?}: {last}")]
    Timeout { url: String, waited: Duration, last: String },
}

fn endpoint(tls: &ClientTls, url: &str) -> Result<Endpoint, LeaderError> {
    tls.endpoint(url)
        // Keepalive pings: a stopped or partitioned coordinator breaks the
        // stream within seconds instead of leaving it hanging forever.
        .map(|e| {
            e.connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true)
        })
        .map_err(|e| LeaderError::Url { url: url.into(), message: e.to_string() })
}

/// Runs `call` against the leader, starting at `url`: a redirect is followed
/// to the URL it names; a redirect without a hint (an election), a refused
/// connection, a node that does not answer within a few seconds or another
/// UNAVAILABLE is retried (every 200 ms, at the original URL once the named
/// leader is unreachable) until `patience` has
/// passed. Any other status is the call's answer. Returns the answer and the
/// URL that gave it (the leader, for reuse).
pub async fn follow_leader<T, F, Fut>(tls: &ClientTls, url: &str, patience: Duration, mut call: F) -> Result<(Result<T, Status>, String), LeaderError>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let start = Instant::now();
    let mut target = url.to_owned();
    // A stopped (not dead) node accepts connections and never answers.
    let per_try = patience.clamp(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        let last = match endpoint(tls, &target)?.connect().await {
            Ok(channel) => match tokio::time::timeout(per_try, call(channel)).await {
                Ok(Ok(v)) => return Ok((Ok(v), target)),
                Ok(Err(s)) if s.code() == Code::Unavailable => {
                    if let Some(leader) = leader_hint(&s).filter(|l| *l != target) {
                        target = leader;
                        continue;
                    }
                    // An election, or the named leader died: start over.
                    target = url.to_owned();
                    s.message().to_owned()
                }
                Ok(Err(s)) => return Ok((Err(s), target)),
                Err(_) => {
                    let m = format!("{target} did not answer within {per_try:?}");
                    target = url.to_owned();
                    m
                }
            },
            Err(e) => {
                let m = format!("connecting to {target}: {}", crate::tls::describe(&e));
                if crate::tls::is_refused_handshake(&e) {
                    // An untrusted certificate (or TLS to a plain port) does
                    // not heal by waiting.
                    return Err(LeaderError::Url { url: target, message: m });
                }
                target = url.to_owned();
                m
            }
        };
        if start.elapsed() >= patience {
            return Err(LeaderError::Timeout { url: url.into(), waited: patience, last });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A channel to the current leader, found from `url` by a cheap
/// authenticated call (`Build.List` with limit 1, which followers redirect).
/// Use it for long-lived streams (a worker session, a submit); when one
/// breaks or answers a redirect, call this again.
pub async fn connect_leader(tls: &ClientTls, url: &str, token: &str, patience: Duration) -> Result<(Channel, String), LeaderError> {
    use rbk_proto::build::{ListRequest, build_client::BuildClient};
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().map_err(|_| LeaderError::Url { url: url.into(), message: "token has characters a header cannot carry".into() })?;
    let (answer, leader) = follow_leader(tls, url, patience, |channel| {
        let auth = auth.clone();
        async move {
            let mut req = tonic::Request::new(ListRequest { limit: 1 });
            req.metadata_mut().insert("authorization", auth);
            BuildClient::new(channel.clone()).list(req).await?;
            Ok(channel)
        }
    })
    .await?;
    match answer {
        Ok(channel) => Ok((channel, leader)),
        // Not a leadership problem (a bad token, ...): hand back a channel and
        // let the caller's own call report it.
        Err(_) => Ok((endpoint(tls, &leader)?.connect_lazy(), leader)),
    }
}
