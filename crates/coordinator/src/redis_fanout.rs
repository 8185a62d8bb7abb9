//! Build events over Redis pub/sub, so a client attached to any node of a
//! replicated coordinator sees the whole stream (logs included).
//!
//! The leader publishes every event of its builds (protobuf bytes, sealed:
//! see `event_seal.rs`) on the build's channel `<prefix>events:<keyed hash
//! of the build id>`; a follower serving `Watch` subscribes to it and
//! ignores anything it cannot open. Redis is optional and may be lost: publishing is
//! queued and bounded (a full queue drops events; a watch re-reads the
//! replicated state for results anyway), every Redis call is bounded by a
//! short timeout, and a follower that cannot subscribe redirects the watch
//! to the leader. Secrets never travel here: events carry none. Redis
//! AUTH (`redis://user:password@host`) and TLS (`rediss://`) URLs work.

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

use crate::event_seal::EventKeys;

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
    keys: Arc<EventKeys>,
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
    pub fn start(url: &str, prefix: &str, timeout: Duration, keys: EventKeys) -> Result<Arc<Self>, String> {
        let url_for_logs = redact(url);
        let client = redis::Client::open(url).map_err(|e| format!("redis url {url_for_logs:?}: {e}"))?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), bounded_config(timeout)).map_err(|e| format!("redis url {url_for_logs:?}: {e}"))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let last_warned = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish_loop(conn, rx, timeout, url_for_logs.clone(), last_warned.clone()));
        Ok(Arc::new(Self { client, url_for_logs, prefix: prefix.to_owned(), timeout, queue, last_warned, keys: Arc::new(keys) }))
    }

    /// The build's channel name (see `event_seal.rs`).
    pub fn channel(&self, build_id: &str) -> String {
        self.keys.channel(&self.prefix, build_id)
    }

    /// Queues `event` for the build's channel; never blocks.
    pub fn publish(&self, build_id: &str, event: &pb::BuildEvent) {
        let channel = self.channel(build_id);
        let sealed = self.keys.seal(&channel, &event.encode_to_vec());
        if self.queue.try_send((channel, sealed)).is_err() {
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
        let (keys, last_warned, url) = (self.keys.clone(), self.last_warned.clone(), self.url_for_logs.clone());
        let events = messages.filter_map(move |m| {
            let _keep = &sink;
            // Anyone who reaches Redis can publish here: only what a
            // coordinator of this farm sealed for this build is shown.
            let decoded = match keys.open(&channel, m.get_payload_bytes()) {
                Some(bytes) => pb::BuildEvent::decode(bytes.as_slice()).map_err(|e| e.to_string()),
                None => Err("a message not sealed by this farm for this build (ignored)".into()),
            };
            if let Err(e) = &decoded {
                warn_throttled(&last_warned, &url, "receiving", e);
            }
            async move { decoded.ok() }
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

    /// Starts the fan-out these settings describe; `keys` name and seal
    /// the channels (from the Raft cluster secret: every node derives the
    /// same ones).
    pub fn start(&self, keys: EventKeys) -> Result<Arc<RedisFanout>, String> {
        RedisFanout::start(&self.url.0, &self.prefix, Duration::from_millis(self.timeout_ms.max(1)), keys)
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
        let f = RedisFanout::start(&format!("redis://127.0.0.1:{port}"), "rbk:", Duration::from_millis(250), EventKeys::random()).unwrap();
        // Bounded: a hang here would hang a watch.
        let r = tokio::time::timeout(Duration::from_secs(10), f.subscribe("b1")).await.expect("subscribe is bounded");
        let Err(e) = r else { panic!("subscribed to a Redis that is not there") };
        assert!(e.contains(&format!("subscribing to {}", f.channel("b1"))), "{e}");
        // Publishing to it neither blocks nor fails.
        f.publish("b1", &pb::BuildEvent::default());
    }

    #[tokio::test]
    async fn tls_and_auth_urls_are_accepted() {
        for url in ["rediss://127.0.0.1:1", "redis://user:pass@127.0.0.1:1/0", "rediss://:pass@cache.example:6380/0"] {
            let r = RedisFanout::start(url, "rbk:", Duration::from_millis(250), EventKeys::random());
            assert!(r.is_ok(), "{url}: {:?}", r.err());
        }
    }

    /// Events a real Redis carries from one coordinator's publish to a
    /// subscriber's watch; `url` is the test services' redis-server.
    async fn publisher_and_watcher(url: &str, secret: &[u8]) -> (Arc<RedisFanout>, Arc<RedisFanout>) {
        let timeout = Duration::from_secs(5);
        let leader = RedisFanout::start(url, "rbk-test:", timeout, EventKeys::derive(secret)).unwrap();
        let follower = RedisFanout::start(url, "rbk-test:", timeout, EventKeys::derive(secret)).unwrap();
        (leader, follower)
    }

    fn log_event(line: &str) -> pb::BuildEvent {
        pb::BuildEvent { event: Some(pb::build_event::Event::Log(pb::StepLog { line: line.into(), ..Default::default() })) }
    }

    #[tokio::test]
    async fn a_message_published_by_hand_onto_a_builds_channel_is_not_shown_to_its_watcher() {
        use redis::AsyncCommands;
        let url = rbk_testsupport::redis_url();
        let build = format!("b-injected-{}", std::process::id());
        let (leader, follower) = publisher_and_watcher(&url, b"farm-secret-for-this-test-0001").await;
        let mut watch = follower.subscribe(&build).await.unwrap();
        let mut attacker = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let forged = log_event("forged").encode_to_vec();
        // On the channel itself (as if its name leaked) and on the old, guessable one.
        let _: i64 = attacker.publish(follower.channel(&build), forged.clone()).await.unwrap();
        let _: i64 = attacker.publish(format!("rbk-test:events:{build}"), forged).await.unwrap();
        // Sealed by another farm's coordinator, for the same build.
        let (other, _) = publisher_and_watcher(&url, b"another-farm-secret-000000002").await;
        let _: i64 = attacker.publish(follower.channel(&build), other.keys.seal(&follower.channel(&build), &log_event("other farm").encode_to_vec())).await.unwrap();
        leader.publish(&build, &log_event("genuine"));
        let first = tokio::time::timeout(Duration::from_secs(30), watch.next()).await.expect("an event within 30 s").expect("the stream is open");
        assert_eq!(first, log_event("genuine"));
    }

    /// A redis-server of this test's own that speaks only TLS and wants a
    /// password; stopped on drop.
    struct TlsRedis {
        child: std::process::Child,
        port: u16,
        cert: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn tls_redis(password: &str) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&crt)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&crt)
            .args(["--requirepass", password, "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let server = TlsRedis { child, port, cert: crt, _dir: dir };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    #[tokio::test]
    async fn events_travel_over_a_rediss_url_with_a_password_and_a_wrong_password_is_refused() {
        let redis = tls_redis("redis-test-password-01");
        // The system roots, plus this server's certificate (each nextest
        // test runs in a process of its own).
        unsafe { std::env::set_var("SSL_CERT_FILE", &redis.cert) };
        let url = format!("rediss://:redis-test-password-01@127.0.0.1:{}/0", redis.port);
        let (leader, follower) = publisher_and_watcher(&url, b"farm-secret-for-the-tls-test-01").await;
        let mut watch = follower.subscribe("b-tls").await.unwrap();
        leader.publish("b-tls", &log_event("over tls"));
        let first = tokio::time::timeout(Duration::from_secs(30), watch.next()).await.expect("an event within 30 s").expect("the stream is open");
        assert_eq!(first, log_event("over tls"));
        let wrong = RedisFanout::start(&format!("rediss://:wrong@127.0.0.1:{}/0", redis.port), "rbk-test:", Duration::from_secs(5), EventKeys::random()).unwrap();
        let refused = wrong.subscribe("b-tls").await.err().expect("subscribed with a wrong password");
        assert!(refused.contains("subscribing to") && !refused.contains(":wrong@"), "the password is not shown: {refused}");
    }
}
