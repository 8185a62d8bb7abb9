use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::existence::ExistenceIndex;
use crate::redis_conn::{bounded_config, redact};
use crate::{Digest, StoreError, StoreResult};

/// Warn about an unreachable Redis at most this often.
const WARN_EVERY_SECS: u64 = 30;

/// An existence index in Redis, shared by every node of a farm: a blob one
/// worker uploaded is known to all, without a HEAD each.
///
/// Keys are `<prefix>exists:<digest>` with a TTL. Redis is an accelerator
/// only: every command is bounded by a short timeout, and any failure reads
/// as "not known" (one more question to the store) with a warning at most
/// every 30 s. The connection is made lazily and re-made after failures,
/// so Redis may be down at start-up and come back later.
pub struct RedisExistenceIndex {
    conn: ConnectionManager,
    url_for_logs: String,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    last_warned: AtomicU64,
}

impl fmt::Debug for RedisExistenceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExistenceIndex").field("url", &self.url_for_logs).field("prefix", &self.prefix).finish()
    }
}


impl RedisExistenceIndex {
    /// Never fails because Redis is down, only on a malformed URL.
    pub fn new(url: &str, prefix: &str, ttl: Duration, timeout: Duration) -> StoreResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Config(format!("existence_cache.redis_url {:?}: {e}", redact(url))))?;
        let conn = ConnectionManager::new_lazy_with_config(client, bounded_config(timeout))
            .map_err(|e| StoreError::Config(format!("existence_cache.redis_url {:?}: {e}", redact(url))))?;
        Ok(Self {
            conn,
            url_for_logs: redact(url),
            prefix: prefix.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            timeout,
            last_warned: AtomicU64::new(0),
        })
    }

    fn key(&self, d: &Digest) -> String {
        format!("{}exists:{d}", self.prefix)
    }

    fn warn(&self, what: &str, err: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_warned.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self.last_warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                redis = %self.url_for_logs,
                "existence cache {what} failed, asking the store instead (warning at most every {WARN_EVERY_SECS}s): {err}"
            );
        }
    }

    /// Runs one Redis call under the timeout (a belt to the connection
    /// manager's braces: nothing here may hang a build).
    async fn run<T, F>(&self, what: &str, call: F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout * 2, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let msg = e.to_string();
                self.warn(what, &msg);
                Err(msg)
            }
            Err(_) => {
                let msg = format!("no answer within {:?}", self.timeout * 2);
                self.warn(what, &msg);
                Err(msg)
            }
        }
    }
}

#[async_trait::async_trait]
impl ExistenceIndex for RedisExistenceIndex {
    async fn known(&self, digests: &[Digest]) -> Vec<bool> {
        if digests.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = digests.iter().map(|d| self.key(d)).collect();
        let mut conn = self.conn.clone();
        let values: Result<Vec<Option<u8>>, _> = self.run("lookup", async move { conn.mget(keys).await }).await;
        match values {
            Ok(v) if v.len() == digests.len() => v.into_iter().map(|x| x.is_some()).collect(),
            _ => vec![false; digests.len()],
        }
    }

    async fn remember(&self, digests: &[Digest]) {
        if digests.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for d in digests {
            pipe.set_ex(self.key(d), 1u8, self.ttl_secs).ignore();
        }
        let mut conn = self.conn.clone();
        let _ = self.run("update", async move { pipe.query_async::<()>(&mut conn).await }).await;
    }

    async fn forget(&self, digest: Digest) -> StoreResult<()> {
        let key = self.key(&digest);
        let mut conn = self.conn.clone();
        self.run("invalidation", async move { conn.del::<_, ()>(key).await }).await.map_err(|e| StoreError::Backend {
            backend: "redis",
            message: format!(
                "cannot drop blob {digest} from the shared existence cache at {} ({e}); \
                 refusing to delete it while other nodes may still believe it exists",
                self.url_for_logs
            ),
            retryable: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_url_names_the_field() {
        let err = RedisExistenceIndex::new("nonsense://x", "", Duration::from_secs(1), Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("existence_cache.redis_url"), "{err}");
    }
}
