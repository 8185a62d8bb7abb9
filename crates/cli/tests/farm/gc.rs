//! The store collector on a farm of real processes (S3 store, real
//! worker, real layers and cache snapshots): with no grace at all, a
//! collection deletes garbage and keeps everything a finished build left
//! live, so the next identical build is all cached and its image whole.

use std::time::Duration;

use bytes::Bytes;
use rbk_proto::build::build_event::Event;
use rbk_store::{Digest, Store, StoreExt};

use crate::harness::*;

/// Collect only on demand, keep nothing for being young.
const GC: &str = "[gc]\ninterval = \"off\"\ngrace = \"0s\"\nexistence_ttl = \"0s\"\n[admin]\ntoken_file = \"admin-token\"\n";

fn store_gc(farm: &Farm) -> String {
    let out = std::process::Command::new(RBK).args(["store", "gc", "--coordinator", &farm.url]).env("RBK_ADMIN_TOKEN", ADMIN).output().unwrap();
    assert!(out.status.success(), "rbk store gc: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layers(events: &[Event]) -> Vec<Digest> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Finished(f) => f.layers.clone(),
            Event::Cached(c) => c.layers.clone(),
            _ => vec![],
        })
        .map(|l| l.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_without_grace_deletes_garbage_and_keeps_what_a_finished_build_left_live() {
    let farm = Farm::start_configured(GC).await;
    let _w = farm.worker("a", &[]);
    let step = farm.run("s1", "gc-farm-key", "echo kept > /cache/f && echo built > /out", Some(("gc-cache", "shared")), None);
    let first = farm.build(vec![step.clone()]).await;
    assert_eq!(final_state(&first), "succeeded");
    let built = layers(&first);
    assert!(!built.is_empty());
    let store = farm.store().await;
    let junk = store.put_bytes(Bytes::from_static(b"nothing references this")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let report = store_gc(&farm);

    eprintln!("{report}");
    assert_eq!(store.find_missing(&[junk]).await.unwrap(), [junk], "the garbage was kept");
    assert!(store.find_missing(&built).await.unwrap().is_empty(), "a layer of the action-cache entry was deleted");
    let base: Digest = farm.base.blake3.parse().unwrap();
    assert!(store.find_missing(&[base]).await.unwrap().is_empty(), "the base layer the result's chain names was deleted");
    assert_eq!(farm.cache_files("gc-cache").await.get("f").map(String::as_str), Some("kept\n"));
    let again = farm.build(vec![step]).await;
    assert_eq!(final_state(&again), "succeeded");
    assert!(again.iter().any(|e| matches!(e, Event::Cached(_))), "the rebuild ran the step again: {again:?}");
    assert!(store.find_missing(&layers(&again)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gc_verify_finds_every_blob_a_finished_build_left_live() {
    let farm = Farm::start_configured(GC).await;
    let _w = farm.worker("a", &[]);
    let step = farm.run("s1", "gc-verify-key", "echo kept > /cache/f && echo built > /out", Some(("gc-verify", "shared")), None);
    assert_eq!(final_state(&farm.build(vec![step]).await), "succeeded");

    let out = std::process::Command::new(RBK)
        .args(["store", "gc", "--dry-run", "--verify", "--coordinator", &farm.url])
        .env("RBK_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rbk store gc --verify: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let verified = stdout.lines().find(|l| l.starts_with("verified")).unwrap_or_else(|| panic!("no verified line:\n{stdout}"));
    let n: u64 = verified.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The layer, the base layer, the cache head's manifest and its pack.
    assert!(n >= 4, "{verified}");
    assert!(verified.ends_with(", 0 missing"), "{verified}");
}
