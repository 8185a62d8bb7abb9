//! The Redis existence index against a real redis-server: shared between
//! nodes, and an accelerator only — Redis gone costs speed, not results.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbk_store::{
    ByteRange, Digest, ExistenceCacheStore, ExistenceIndex, FilesystemStore, RedisExistenceIndex, Store, StoreError,
    StoreExt,
};

const TIMEOUT: Duration = Duration::from_millis(200);

fn unique_prefix() -> String {
    format!("rbk-test-{:016x}:", rand::random::<u64>())
}

#[tokio::test]
async fn a_digest_remembered_by_one_node_is_known_to_another() {
    let url = rbk_testsupport::redis_url();
    let prefix = unique_prefix();
    let node_a = RedisExistenceIndex::new(&url, &prefix, Duration::from_secs(60), TIMEOUT).unwrap();
    let node_b = RedisExistenceIndex::new(&url, &prefix, Duration::from_secs(60), TIMEOUT).unwrap();
    let (d, e) = (Digest::of(b"d"), Digest::of(b"e"));
    node_a.remember(&[d]).await;
    assert_eq!(node_b.known(&[e, d]).await, vec![false, true]);
    node_b.forget(d).await.unwrap();
    assert_eq!(node_a.known(&[d]).await, vec![false]);
}

#[tokio::test]
async fn entries_carry_the_configured_ttl() {
    let url = rbk_testsupport::redis_url();
    let prefix = unique_prefix();
    let index = RedisExistenceIndex::new(&url, &prefix, Duration::from_secs(120), TIMEOUT).unwrap();
    let d = Digest::of(b"ttl");
    index.remember(&[d]).await;
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(format!("{prefix}exists:{d}")).query_async(&mut conn).await.unwrap();
    assert!((1..=120).contains(&ttl), "ttl {ttl}");
}

async fn cached_fs(url: &str, dir: &std::path::Path) -> ExistenceCacheStore<FilesystemStore> {
    let index = Arc::new(RedisExistenceIndex::new(url, &unique_prefix(), Duration::from_secs(60), TIMEOUT).unwrap());
    ExistenceCacheStore::new(FilesystemStore::open(dir).await.unwrap(), index)
}

#[tokio::test]
async fn a_stopped_redis_gives_the_same_answers_and_the_cache_recovers() {
    let mut redis = common::Private::redis();
    let url = format!("redis://{}", redis.addr());
    let dir = tempfile::tempdir().unwrap();
    let s = cached_fs(&url, dir.path()).await;
    let present = s.put_bytes(Bytes::from_static(b"present")).await.unwrap();
    let absent = Digest::of(b"absent");
    assert_eq!(s.find_missing(&[present, absent]).await.unwrap(), vec![absent]);

    redis.stop();
    let started = Instant::now();
    assert_eq!(s.find_missing(&[present, absent]).await.unwrap(), vec![absent]);
    let d = s.put_bytes(Bytes::from_static(b"while redis is down")).await.unwrap();
    assert_eq!(s.get_bytes(d).await.unwrap(), &b"while redis is down"[..]);
    assert_eq!(s.find_missing(&[d, absent]).await.unwrap(), vec![absent]);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // A delete whose invalidation cannot reach the shared cache is refused,
    // naming the blob, and leaves the blob in place.
    let err = s.delete(present).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { backend: "redis", .. }), "{err:?}");
    assert!(err.to_string().contains(&present.to_string()), "{err}");
    assert!(s.contains(present).await.unwrap());

    redis.restart();
    // The manager reconnects on its own; give it a few tries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.delete(present).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    }
    assert_eq!(s.find_missing(&[present]).await.unwrap(), vec![present]);
    assert!(matches!(s.get(present, ByteRange::FULL).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn redis_down_at_start_up_only_costs_speed() {
    let port = rbk_testsupport::free_port();
    let dir = tempfile::tempdir().unwrap();
    let s = cached_fs(&format!("redis://127.0.0.1:{port}"), dir.path()).await;
    let d = s.put_bytes(Bytes::from_static(b"x")).await.unwrap();
    assert!(s.find_missing(&[d]).await.unwrap().is_empty());
    assert_eq!(s.get_bytes(d).await.unwrap(), &b"x"[..]);
}
