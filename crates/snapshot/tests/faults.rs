//! Snapshots through a fault-injecting proxy in front of the real S3 server
//! (moto): capture and restore keep working while a fraction of requests
//! fail, reset, stall or come back cut short, and a restore never writes
//! bytes that are not the snapshot's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rbk_snapshot::{Snapshot, capture, restore};
use rbk_store::{S3Config, S3Store, Secret, Store, VerifyingStore};
use rbk_testsupport::{FaultPolicy, FaultProxy};

/// A fresh bucket, reached through a proxy with `policy`, behind the
/// verification every configured stack has.
async fn store_through_proxy(policy: FaultPolicy) -> (FaultProxy, Arc<dyn Store>) {
    let s3 = rbk_testsupport::s3();
    let mut config = S3Config::new(format!("rbk-snap-faults-{:016x}", rand_id()));
    config.region = Some(s3.region);
    config.access_key_id = Some(Secret(s3.access_key));
    config.secret_access_key = Some(Secret(s3.secret_key));
    config.endpoint = Some(s3.endpoint.clone());
    config.sdk_client().await.unwrap().create_bucket().bucket(&config.bucket).send().await.unwrap();
    let proxy = FaultProxy::start(&s3.endpoint, policy);
    config.endpoint = Some(proxy.endpoint());
    config.max_attempts = 10;
    config.initial_backoff_ms = 5;
    config.max_backoff_ms = 50;
    let store = S3Store::new(config).await.unwrap();
    (proxy, Arc::new(VerifyingStore::new(store)))
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    t.as_nanos() as u64 ^ (std::process::id() as u64) << 40
}

fn tree(src: &std::path::Path) {
    for i in 0..40 {
        let noise: Vec<u8> = (0..i as u32 * 400).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 11) as u8).collect();
        write(src, &format!("d{}/f{i}", i % 4), &noise);
    }
}

#[tokio::test]
async fn capture_and_restore_work_with_a_fifth_of_s3_requests_faulted() {
    let (proxy, store) = store_through_proxy(FaultPolicy::mixed(5, 0.2, Duration::from_millis(20))).await;
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    let (snap, stats) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    assert!(stats.packs_uploaded > 1);
    let snap = Snapshot::load(&*store, snap.digest).await.unwrap();
    restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    assert_eq!(observe(&dst), observe(&src));
    let counts = proxy.counts();
    assert!(counts.faults() > 0, "faults were injected: {counts:?}");
}

#[tokio::test]
async fn a_restore_whose_reads_are_always_cut_short_fails_and_writes_no_wrong_bytes() {
    let (proxy, store) = store_through_proxy(FaultPolicy::NONE).await;
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    let (snap, _) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    proxy.set_policy(FaultPolicy { truncate: 1.0, ..FaultPolicy::NONE });
    let err = match Snapshot::load(&*store, snap.digest).await {
        Err(e) => e,
        Ok(loaded) => restore(store.clone(), &loaded, &dst, &restore_opts()).await.unwrap_err(),
    };
    let text = err.to_string();
    assert!(text.contains("s3") || text.contains("corrupt"), "{text}");
    // Whatever the restore wrote before failing is the source's own bytes.
    let seen = observe(&src);
    if dst.exists() {
        for (path, s) in observe(&dst) {
            if s.kind == "file" && !s.data.is_empty() {
                assert_eq!(seen.get(&path).map(|x| &x.data), Some(&s.data), "{}", String::from_utf8_lossy(&path));
            }
        }
    }
}
