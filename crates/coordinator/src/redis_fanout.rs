//! Build events over Redis pub/sub, so a client attached to any node of a
//! replicated coordinator sees the whole stream (logs included).
//!
//! The leader publishes every event of its builds (protobuf bytes) on the
//! channel `<prefix>events:<build_id>`; a follower serving `Watch`
//! subscribes to it. Redis is optional and may be lost: publishing is
//! queued and bounded (a full queue drops events; a watch re-reads the
//! replicated state for results anyway), every Redis call is bounded by a
//! short timeout, and a follower that cannot subscribe redirects the watch
//! to the leader. Secrets never travel here: events carry none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use rbk_proto::build as pb;
use rbk_store::redis_conn::{bounded_config, redact};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

/// Events waiting to be published while Redis is slow or down.
const QUEUE: usize = 10_000;
/// Warn about an unreachable Redis at most this often.
const WARN_EVERY_SECS: u64 = 30;

/// A farm's Redis fan-out. Cheap to share (`Arc`).
pub struct RedisFanout {
    client: redis::Client,
    url_for_logs: String,
    prefix: String,
    timeout: Duration,
    queue: mpsc::Sender<(String, Vec<u8>)>,
    last_warned: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFanout").field("url", &self.url_for_logs).field("prefix", &self.prefix).finish()
    }
}

fn warn_throttled(last: &AtomicU64, url: &str, what: &str, err: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let prev = last.load(Ordering::Relaxed);
    if now.saturating_sub(prev) >= WARN_EVERY_SECS && last.compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(redis = %url, "build event fan-out: {what} failed (warning at most every {WARN_EVERY_SECS}s): {err}");
    }
}

impl RedisFanout {
    /// Starts the publisher on the current runtime. Fails only on a
    /// malformed URL: Redis may be down now and come back later.
    pub fn start(url: &str, prefix: &str, timeout: Duration) -> Result<Arc<Self>, String> {
        let url_for_logs = redact(url);
        let client = redis::Client::open(url).map_err(|e| format!("redis url {url_for_logs:?}: {e}"))?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), bounded_config(timeout)).map_err(|e| format!("redis url {url_for_logs:?}: {e}"))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let last_warned = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish_loop(conn, rx, timeout, url_for_logs.clone(), last_warned.clone()));
        Ok(Arc::new(Self { client, url_for_logs, prefix: prefix.to_owned(), timeout, queue, last_warned }))
    }

    fn channel(&self, build_id: &str) -> String {
        format!("{}events:{build_id}", self.prefix)
    }

    /// Queues `event` for the build's channel; never blocks.
    pub fn publish(&self, build_id: &str, event: &pb::BuildEvent) {
        if self.queue.try_send((self.channel(build_id), event.encode_to_vec())).is_err() {
            warn_throttled(&self.last_warned, &self.url_for_logs, "publishing", "the queue is full (Redis too slow or down); dropping events");
        }
    }

    /// Live events of `build_id` published from now on. Fails within the
    /// timeout when Redis is unreachable; the stream ends when the
    /// connection does.
    pub async fn subscribe(&self, build_id: &str) -> Result<BoxStream<'static, pb::BuildEvent>, String> {
        let channel = self.channel(build_id);
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(format!("subscribing to {channel} on {}: {e}", self.url_for_logs)),
            Err(_) => return Err(format!("subscribing to {channel} on {}: no answer within {:?}", self.url_for_logs, self.timeout)),
        };
        // The sink rides along: dropping it would close the subscription.
        let (sink, messages) = pubsub.split();
        let events = messages.filter_map(move |m| {
            let _keep = &sink;
            let decoded = pb::BuildEvent::decode(m.get_payload_bytes());
            async move {
                match decoded {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::warn!("build event fan-out: an undecodable message on the channel: {e}");
                        None
                    }
                }
            }
        });
        Ok(events.boxed())
    }
}

async fn publish_loop(
    mut conn: ConnectionManager,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    timeout: Duration,
    url: String,
    last_warned: Arc<AtomicU64>,
) {
    use redis::AsyncCommands;
    while let Some((channel, bytes)) = rx.recv().await {
        let r = tokio::time::timeout(timeout * 2, conn.publish::<_, _, i64>(&channel, bytes)).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn_throttled(&last_warned, &url, "publishing", &e.to_string()),
            Err(_) => warn_throttled(&last_warned, &url, "publishing", &format!("no answer within {:?}", timeout * 2)),
        }
    }
}

/// `[redis]` of the coordinator config.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    pub url: rbk_store::Secret,
    /// Prefix of the pub/sub channel names (several farms on one Redis).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Bound on connecting and subscribing (a follower then redirects).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_prefix() -> String {
    "rbk:".into()
}

fn default_timeout_ms() -> u64 {
    250
}

impl RedisSection {
    /// The fan-out's settings: `[redis]` if given, else the Redis of the
    /// store's existence cache (after `RBK_REDIS_URL` was applied to it),
    /// so a farm configures its Redis once.
    pub fn resolve(explicit: Option<&RedisSection>, store: &rbk_store::StoreConfig) -> Option<RedisSection> {
        use rbk_store::StoreConfig as S;
        if let Some(r) = explicit {
            return Some(r.clone());
        }
        let mut c = store;
        loop {
            match c {
                S::ExistenceCache { redis_url: Some(url), redis_prefix, redis_timeout_ms, .. } => {
                    return Some(RedisSection { url: url.clone(), prefix: redis_prefix.clone(), timeout_ms: *redis_timeout_ms });
                }
                S::ExistenceCache { inner, .. } | S::Compress { inner, .. } | S::Verify { inner } => c = inner,
                S::Filesystem { .. } | S::S3(_) => return None,
            }
        }
    }

    /// Starts the fan-out these settings describe.
    pub fn start(&self) -> Result<Arc<RedisFanout>, String> {
        RedisFanout::start(&self.url.0, &self.prefix, Duration::from_millis(self.timeout_ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fanout_reuses_the_existence_cache_redis_unless_configured() {
        let store: rbk_store::StoreConfig = toml::from_str(
            "type = \"existence_cache\"\nredis_url = \"redis://r:1\"\n[inner]\ntype = \"filesystem\"\npath = \"/s\"\n",
        )
        .unwrap();
        assert_eq!(RedisSection::resolve(None, &store).unwrap().url.0, "redis://r:1");
        let own = RedisSection { url: rbk_store::Secret("redis://mine:2".into()), prefix: "x:".into(), timeout_ms: 100 };
        assert_eq!(RedisSection::resolve(Some(&own), &store), Some(own));
        let plain: rbk_store::StoreConfig = toml::from_str("type = \"filesystem\"\npath = \"/s\"\n").unwrap();
        assert_eq!(RedisSection::resolve(None, &plain), None);
    }

    #[tokio::test]
    async fn subscribing_to_an_unreachable_redis_fails_fast() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let f = RedisFanout::start(&format!("redis://127.0.0.1:{port}"), "rbk:", Duration::from_millis(250)).unwrap();
        // Bounded: a hang here would hang a watch.
        let r = tokio::time::timeout(Duration::from_secs(10), f.subscribe("b1")).await.expect("subscribe is bounded");
        let Err(e) = r else { panic!("subscribed to a Redis that is not there") };
        assert!(e.contains("subscribing to rbk:events:b1"), "{e}");
        // Publishing to it neither blocks nor fails.
        f.publish("b1", &pb::BuildEvent::default());
    }
}
