//! `rbk submit` across coordinator leader changes.
//!
//! `--coordinator` takes one URL or several, comma-separated (every node
//! of a replicated coordinator, or one Service spanning them). The build is
//! submitted to whichever leads. When its event stream breaks (the leader
//! died), the client looks for the new leader through every URL
//! ([`connect_any`]), calls `Build.Watch` for the build, re-supplying its
//! `--secret` values (held only in the old leader's memory), and carries
//! on printing progress; the submit driver (`run_build`) drops events it
//! already printed (`rbk_proto::replay::Replayer`), so no step shows twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{BuildEvent, WatchRequest};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::error::SubmitError;
use crate::leader::connect_leader;
use crate::tls::ClientTls;

/// How long to look for a new leader after the stream broke (an election
/// takes about a second; a Kubernetes pod restart longer).
const REATTACH_PATIENCE: Duration = Duration::from_secs(60);
/// Per URL and try: a dead node is left for the next one quickly.
const PER_URL: Duration = Duration::from_secs(3);

/// The URLs `--coordinator` lists (comma-separated; blanks dropped).
pub fn urls(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

/// Whether any of `list`'s URLs accepts a connection, trying again for up
/// to `retry` (zero: one try each). A refused or unresolvable address
/// fails here at once, naming it, instead of after the patience a leader
/// election gets: nothing is listening there, and waiting rarely helps
/// unless the coordinator is known to be starting (`--connect-retry`).
pub async fn reachable_any(tls: &ClientTls, list: &str, retry: Duration) -> Result<(), SubmitError> {
    let urls = urls(list);
    if urls.is_empty() {
        return Err(SubmitError::NoUrl);
    }
    let start = Instant::now();
    loop {
        let mut errors = Vec::new();
        for url in &urls {
            let endpoint = tls.endpoint(url).map_err(|e| SubmitError::Leader(crate::leader::LeaderError::Url { url: url.clone(), message: e.to_string() }))?;
            match tokio::time::timeout(PER_URL, endpoint.connect()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => errors.push(format!("{url}: {}", crate::tls::describe(&e))),
                Err(_) => errors.push(format!("{url}: no answer within {PER_URL:?}")),
            }
        }
        if start.elapsed() >= retry {
            return Err(SubmitError::Unreachable { errors: errors.join("; "), retry });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A channel to the leader found through any of `list`'s URLs (tried in
/// turn, each with a short patience, until `patience` has passed); returns
/// it and the leader's URL.
pub async fn connect_any(tls: &ClientTls, list: &str, token: &str, patience: Duration) -> Result<(Channel, String), SubmitError> {
    let urls = urls(list);
    if urls.is_empty() {
        return Err(SubmitError::NoUrl);
    }
    if urls.len() == 1 {
        return Ok(connect_leader(tls, &urls[0], token, patience).await?);
    }
    let start = Instant::now();
    let mut last = String::new();
    loop {
        for url in &urls {
            match connect_leader(tls, url, token, PER_URL).await {
                Ok(found) => return Ok(found),
                Err(e) => last = e.to_string(),
            }
        }
        if start.elapsed() >= patience {
            return Err(SubmitError::NoLeader { urls: urls.join(", "), patience, last });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the event stream of `build_id` broke (`why`): a channel to the
/// new leader (for the `--ssh` agents' relay), its client and its `Watch`
/// stream of the build (a replay, then live events). `secrets` go along so
/// the new leader can run the build's remaining secret-using steps.
pub async fn watch_again(
    tls: &ClientTls,
    list: &str,
    token: &str,
    build_id: &str,
    secrets: &BTreeMap<String, Vec<u8>>,
    why: &str,
) -> Result<(Channel, BuildClient<Channel>, Streaming<BuildEvent>), SubmitError> {
    let start = Instant::now();
    loop {
        let left = REATTACH_PATIENCE.saturating_sub(start.elapsed());
        let (channel, leader) = connect_any(tls, list, token, left.max(Duration::from_secs(1)))
            .await
            .map_err(|e| SubmitError::NoTakeover { why: why.to_owned(), source: Box::new(e) })?;
        let mut client = BuildClient::new(channel.clone());
        let req = WatchRequest { build_id: build_id.to_owned(), secrets: secrets.clone().into_iter().collect(), submitter: true };
        match client.watch(crate::bearer::authorized(req, token)?).await {
            Ok(stream) => {
                tracing::info!(leader = %leader, build = build_id, "following the build on the new leader");
                return Ok((channel, client, stream.into_inner()));
            }
            // A node that stopped leading, or a leader still resuming the
            // build: ask again.
            Err(s) if s.code() == Code::Unavailable && start.elapsed() < REATTACH_PATIENCE => {
                tracing::debug!("watch on {leader}: {}", s.message());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => {
                return Err(SubmitError::WatchRefused {
                    leader,
                    build_id: build_id.to_owned(),
                    why: why.to_owned(),
                    message: s.message().to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::urls;

    #[test]
    fn coordinator_urls_are_comma_separated() {
        assert_eq!(urls("http://a:1, http://b:2,,http://c:3"), vec!["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(urls("http://a:1"), vec!["http://a:1"]);
    }
}
