//! Snapshots through the real S3 server (moto): packs up, ranged GETs down.

mod common;

use std::sync::Arc;

use common::*;
use rbk_snapshot::{Snapshot, capture, restore};
use rbk_store::{S3Config, S3Store, Secret, Store};

async fn s3_store() -> Arc<dyn Store> {
    let s3 = rbk_testsupport::s3();
    let mut config = S3Config::new(format!("rbk-snap-test-{}-{}", std::process::id(), rbk_snapshot::Manifest::new("x").created_unix_ns));
    config.endpoint = Some(s3.endpoint);
    config.region = Some(s3.region);
    config.access_key_id = Some(Secret(s3.access_key));
    config.secret_access_key = Some(Secret(s3.secret_key));
    let store = S3Store::new(config).await.unwrap();
    store.client().create_bucket().bucket(store.bucket()).send().await.unwrap();
    Arc::new(store)
}

#[tokio::test]
async fn a_tree_captured_to_s3_restores_exactly_on_another_machine() {
    let store = s3_store().await;
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    for i in 0..60 {
        let noise: Vec<u8> = (0..i as u32 * 300).map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 11) as u8).collect();
        write(&src, &format!("d{}/f{i}", i % 5), &noise);
    }
    let (snap, stats) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    assert!(stats.packs_uploaded > 1, "small pack target gives several packs");
    // "Another machine": only the digest travels.
    let snap = Snapshot::load(&*store, snap.digest).await.unwrap();
    let r = restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    assert!(r.gets >= stats.packs_uploaded);
    assert_eq!(observe(&dst), observe(&src));
}
