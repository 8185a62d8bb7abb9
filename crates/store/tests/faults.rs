//! The S3 backend through a fault-injecting proxy in front of the real S3
//! server (moto): with a fraction of requests failed, reset, delayed or cut
//! short, every operation either works (the SDK's retries, resumed bodies)
//! or fails with a retryable error, and no read ever hands back bytes that
//! are not the blob's.

mod common;

use std::time::Duration;

use bytes::Bytes;
use rbk_store::{ByteRange, Digest, S3Config, S3Store, Store, StoreError, StoreExt, VerifyingStore};
use rbk_testsupport::{FaultPolicy, FaultProxy};

/// A fresh bucket (made directly on moto) and a verified S3 store that
/// reaches it only through a proxy with `policy`. Retries are generous and
/// quick, as they would be tuned for a flaky network.
async fn through_proxy(policy: FaultPolicy) -> (FaultProxy, VerifyingStore<S3Store>) {
    let direct = common::fresh_bucket().await;
    let proxy = FaultProxy::start(direct.endpoint.as_deref().unwrap(), policy);
    let config = S3Config {
        endpoint: Some(proxy.endpoint()),
        max_attempts: 10,
        initial_backoff_ms: 5,
        max_backoff_ms: 50,
        attempt_timeout_ms: 20_000,
        ..direct
    };
    let store = VerifyingStore::new(S3Store::new(config).await.unwrap());
    (proxy, store)
}

fn blobs() -> Vec<Bytes> {
    (0..24u64).map(|i| common::data(1 + (i as usize * 37_001) % 600_000, i)).collect()
}

#[tokio::test]
async fn puts_gets_ranges_and_existence_checks_work_with_a_quarter_of_requests_faulted() {
    let (proxy, s) = through_proxy(FaultPolicy::mixed(18, 0.25, Duration::from_millis(30))).await;
    let data = blobs();
    let mut digests = Vec::new();
    for b in &data {
        digests.push(s.put_bytes(b.clone()).await.unwrap());
    }
    let absent = Digest::of(b"never stored");
    let mut asked = digests.clone();
    asked.push(absent);
    assert_eq!(s.find_missing(&asked).await.unwrap(), vec![absent]);
    for (d, b) in digests.iter().zip(&data) {
        assert!(s.get_bytes(*d).await.unwrap() == *b, "blob {d} read back different bytes");
        let (off, len) = (b.len() as u64 / 3, b.len() as u64 / 2);
        let slice = s.get_range_bytes(*d, ByteRange::new(off, len)).await.unwrap();
        assert!(slice == b.slice(off as usize..(off + len) as usize), "range of blob {d}");
    }
    let counts = proxy.counts();
    assert!(counts.truncate > 0 && counts.reset > 0 && counts.unavailable > 0, "faults were injected: {counts:?}");
}

#[tokio::test]
async fn a_put_the_server_applied_but_answered_with_500_is_retried_into_success() {
    let (proxy, s) = through_proxy(FaultPolicy { error_after_forwarding: 0.3, seed: 3, ..FaultPolicy::NONE }).await;
    let data = blobs();
    for b in &data {
        let d = s.put_bytes(b.clone()).await.unwrap();
        assert!(s.get_bytes(d).await.unwrap() == *b);
    }
    assert!(proxy.counts().error_after_forwarding > 0);
}

#[tokio::test]
async fn a_server_that_always_fails_gives_a_retryable_error_naming_the_blob() {
    let (proxy, s) = through_proxy(FaultPolicy::NONE).await;
    let d = s.put_bytes(Bytes::from_static(b"stored while the server was well")).await.unwrap();
    for policy in [
        FaultPolicy { unavailable: 1.0, ..FaultPolicy::NONE },
        FaultPolicy { error_after_forwarding: 1.0, ..FaultPolicy::NONE },
        FaultPolicy { reset: 1.0, ..FaultPolicy::NONE },
    ] {
        proxy.set_policy(policy);
        for err in [
            s.get_bytes(d).await.unwrap_err(),
            s.put_bytes(Bytes::from_static(b"new")).await.unwrap_err(),
            s.find_missing(&[d]).await.unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Backend { retryable: true, .. }), "{policy:?}: {err:?}");
        }
        let err = s.get_bytes(d).await.unwrap_err().to_string();
        assert!(err.contains(&d.to_string()), "{err}");
    }
}

#[tokio::test]
async fn bodies_cut_short_every_time_are_an_error_never_short_data() {
    let (proxy, s) = through_proxy(FaultPolicy::NONE).await;
    let data = common::data(200_000, 9);
    let d = s.put_bytes(data.clone()).await.unwrap();
    proxy.set_policy(FaultPolicy { truncate: 1.0, ..FaultPolicy::NONE });
    let err = s.get_bytes(d).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { retryable: true, .. } | StoreError::Corrupt { .. }), "{err:?}");
    let err = s.get_range_bytes(d, ByteRange::new(1_000, 100_000)).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { retryable: true, .. } | StoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn a_body_cut_short_once_is_resumed_where_it_broke_off() {
    let (proxy, s) = through_proxy(FaultPolicy::NONE).await;
    let data = common::data(300_000, 4);
    let d = s.put_bytes(data.clone()).await.unwrap();
    // Nearly a third of answers truncated: many reads need a resume.
    proxy.set_policy(FaultPolicy { truncate: 0.3, seed: 11, ..FaultPolicy::NONE });
    for _ in 0..8 {
        assert!(s.get_bytes(d).await.unwrap() == data);
        assert!(s.get_range_bytes(d, ByteRange::new(7, 250_000)).await.unwrap() == data.slice(7..250_007));
    }
    assert!(proxy.counts().truncate > 0);
}
