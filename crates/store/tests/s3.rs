//! The S3 backend against a real S3 server (moto): every behaviour the
//! `Store` trait promises, plus what only S3 has (multipart, conditional put).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use rbk_store::{ByteRange, Digest, S3Store, Secret, Store, StoreError, StoreExt, stream_from_bytes};

async fn store() -> S3Store {
    S3Store::new(common::fresh_bucket().await).await.unwrap()
}

/// A store on a fresh bucket that writes blobs over 5 MiB in 5 MiB parts
/// (the smallest S3 allows), so tests reach the multipart path cheaply.
async fn multipart_store() -> S3Store {
    let mut config = common::fresh_bucket().await;
    config.multipart_threshold = 5 << 20;
    config.part_size = 5 << 20;
    S3Store::new(config).await.unwrap()
}

async fn round_trip(s: &S3Store, len: usize) {
    let data = common::data(len, len as u64);
    let digest = s.put_bytes(data.clone()).await.unwrap();
    let back = s.get_bytes(digest).await.unwrap();
    assert_eq!(back.len(), len, "length of blob {digest}");
    assert!(back == data, "blob {digest} read back different bytes");
}

#[tokio::test]
async fn round_trips_empty_and_one_byte_blobs() {
    let s = store().await;
    round_trip(&s, 0).await;
    round_trip(&s, 1).await;
}

#[tokio::test]
async fn round_trips_blobs_at_and_just_past_the_multipart_threshold() {
    let s = store().await;
    let threshold = rbk_store::S3Config::new("x").multipart_threshold as usize;
    round_trip(&s, threshold).await;
    round_trip(&s, threshold + 1).await;
}

#[tokio::test]
async fn round_trips_a_100_mib_blob() {
    let s = store().await;
    round_trip(&s, 100 << 20).await;
}

#[tokio::test]
async fn serves_byte_ranges_and_refuses_ranges_past_the_end() {
    let s = store().await;
    let data = common::data(10_000, 7);
    let d = s.put_bytes(data.clone()).await.unwrap();
    assert_eq!(s.get_range_bytes(d, ByteRange::new(100, 50)).await.unwrap(), data.slice(100..150));
    assert_eq!(s.get_range_bytes(d, ByteRange { offset: 9_990, length: None }).await.unwrap(), data.slice(9_990..));
    assert_eq!(s.get_range_bytes(d, ByteRange { offset: 10_000, length: None }).await.unwrap(), Bytes::new());
    assert_eq!(s.get_range_bytes(d, ByteRange::new(5, 0)).await.unwrap(), Bytes::new());
    assert!(matches!(s.get(d, ByteRange::new(9_990, 11)).await, Err(StoreError::InvalidRange { .. })));
    assert!(matches!(s.get(d, ByteRange::new(10_001, 1)).await, Err(StoreError::InvalidRange { .. })));
    assert!(matches!(s.get(d, ByteRange { offset: 10_001, length: None }).await, Err(StoreError::InvalidRange { .. })));
}

#[tokio::test]
async fn sixteen_concurrent_writers_of_one_digest_all_succeed() {
    let s = Arc::new(multipart_store().await);
    for len in [1000, (5 << 20) + 1] {
        let data = common::data(len, 16);
        let digest = Digest::of(&data);
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let (s, data) = (s.clone(), data.clone());
                tokio::spawn(async move { s.put(digest, stream_from_bytes(data)).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        assert!(s.get_bytes(digest).await.unwrap() == data);
    }
    let uploads = s.client().list_multipart_uploads().bucket(s.bucket()).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "multipart uploads left behind: {:?}", uploads.uploads());
}

#[tokio::test]
async fn a_stream_failing_mid_multipart_upload_leaves_nothing_visible() {
    let s = multipart_store().await;
    let data = common::data(12 << 20, 3);
    let digest = Digest::of(&data);
    let failing = futures::stream::iter(vec![
        Ok(data.slice(0..(11 << 20))),
        Err(StoreError::Backend { backend: "test", message: "client went away".into(), retryable: false }),
    ])
    .boxed();
    assert!(s.put(digest, failing).await.is_err());
    assert_eq!(s.find_missing(&[digest]).await.unwrap(), vec![digest]);
    let uploads = s.client().list_multipart_uploads().bucket(s.bucket()).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "multipart uploads left behind: {:?}", uploads.uploads());
}

#[tokio::test]
async fn find_missing_lists_only_absent_digests_in_order() {
    let s = store().await;
    let present = s.put_bytes(Bytes::from_static(b"present")).await.unwrap();
    let absent: Vec<Digest> = (0..40u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
    let mut query = absent.clone();
    query.insert(17, present);
    assert_eq!(s.find_missing(&query).await.unwrap(), absent);
}

#[tokio::test]
async fn lists_deletes_and_reports_missing_blobs() {
    let s = store().await;
    let mut put = Vec::new();
    for i in 0..5u8 {
        put.push(s.put_bytes(Bytes::from(vec![i; 10])).await.unwrap());
    }
    let mut listed = s.list().await.unwrap();
    listed.sort();
    put.sort();
    assert_eq!(listed, put);
    s.delete(put[0]).await.unwrap();
    s.delete(put[0]).await.unwrap();
    assert!(matches!(s.get(put[0], ByteRange::FULL).await, Err(StoreError::NotFound(d)) if d == put[0]));
    assert_eq!(s.list().await.unwrap().len(), 4);
}

#[tokio::test]
async fn deployments_sharing_a_bucket_do_not_see_each_other() {
    let config = common::fresh_bucket().await;
    let mut other = config.clone();
    other.prefix = "other".into();
    let a = S3Store::new(config).await.unwrap();
    let b = S3Store::new(other).await.unwrap();
    let d = a.put_bytes(Bytes::from_static(b"mine")).await.unwrap();
    assert_eq!(b.find_missing(&[d]).await.unwrap(), vec![d]);
    assert!(b.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stopped_server_gives_a_clear_error_in_bounded_time_and_the_store_recovers() {
    let (mut server, endpoint, mut config) = common::Private::moto_bucket().await;
    config.max_attempts = 3;
    config.connect_timeout_ms = 500;
    let s = S3Store::new(config).await.unwrap();
    let before = s.put_bytes(Bytes::from_static(b"before")).await.unwrap();

    server.stop();
    let started = Instant::now();
    let err = s.put_bytes(Bytes::from_static(b"during")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let msg = err.to_string();
    eprintln!("error while the server is down: {msg}");
    assert!(msg.contains("s3") && msg.contains(&endpoint) && msg.contains("PUT"), "unclear error: {msg}");
    assert!(matches!(err, StoreError::Backend { retryable: true, .. }), "{err:?}");
    let err = s.get_bytes(before).await.unwrap_err();
    assert!(err.to_string().contains(&before.to_string()), "error does not name the blob: {err}");

    // moto keeps its data in memory: a restarted server is empty, so make the
    // bucket again; what matters is that the same store instance works.
    server.restart();
    s.client().create_bucket().bucket(s.bucket()).send().await.unwrap();
    let d = s.put_bytes(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(s.get_bytes(d).await.unwrap(), &b"after"[..]);
}

#[tokio::test]
async fn a_server_that_stops_answering_times_out_instead_of_hanging() {
    let (server, _endpoint, mut config) = common::Private::moto_bucket().await;
    config.max_attempts = 2;
    config.attempt_timeout_ms = 1_000;
    let s = S3Store::new(config).await.unwrap();
    let d = s.put_bytes(Bytes::from_static(b"frozen")).await.unwrap();

    let pid = server.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let started = Instant::now();
    let result = s.get_bytes(d).await;
    let elapsed = started.elapsed();
    signal("-CONT");
    let err = result.unwrap_err();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(err.to_string().contains("GET") && err.to_string().contains(&d.to_string()), "unclear error: {err}");
    assert_eq!(s.get_bytes(d).await.unwrap(), &b"frozen"[..]);
}

#[tokio::test]
async fn pages_through_every_blob_once_in_name_order_with_sizes_and_ages() {
    let s = store().await;
    let mut digests = Vec::new();
    for i in 0..7u64 {
        digests.push(s.put_bytes(common::data(10 + i as usize, i)).await.unwrap());
    }
    digests.sort_by(rbk_store::listing_order);
    // S3 reports LastModified: every page carries ages.
    assert_eq!(common::page_through(&s, 3).await, digests);
}

#[tokio::test]
async fn a_put_never_replaces_an_object_already_at_its_key_single_or_multipart() {
    // The conditional put (If-None-Match: *): whatever is at a digest's key
    // stays, even when a put of that digest finds it only at the write
    // (no existence check first), so two writers never replace each other.
    let s = multipart_store().await;
    for len in [1000, (5 << 20) + 1] {
        let data = common::data(len, 26);
        let digest = Digest::of(&data);
        let first = Bytes::from(format!("the first writer's object for {len}"));
        s.client().put_object().bucket(s.bucket()).key(s.key(&digest)).body(first.clone().into()).send().await.unwrap();
        s.put(digest, stream_from_bytes(data)).await.unwrap();
        let now = s.client().get_object().bucket(s.bucket()).key(s.key(&digest)).send().await.unwrap();
        assert_eq!(now.body.collect().await.unwrap().into_bytes(), first, "a put of {len} bytes replaced the object at {}", s.key(&digest));
    }
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_an_error_naming_the_bucket() {
    let good = common::fresh_bucket().await;
    let wrong_secret = (good.access_key_id.clone().unwrap().0, "not-the-secret-key".to_owned());
    let unknown_key = ("AKIAUNKNOWNKEY000000".to_owned(), good.secret_access_key.clone().unwrap().0);
    for (key, secret) in [wrong_secret, unknown_key] {
        let mut config = good.clone();
        config.access_key_id = Some(Secret(key.clone()));
        config.secret_access_key = Some(Secret(secret));
        let s = S3Store::new(config).await.unwrap();
        let err = s.put_bytes(Bytes::from_static(b"refused")).await.unwrap_err().to_string();
        assert!(err.contains(&good.bucket), "{err}");
        assert!(err.contains("SignatureDoesNotMatch") || err.contains("InvalidAccessKeyId"), "key {key}: {err}");
    }
    let s = S3Store::new(good).await.unwrap();
    assert_eq!(s.list().await.unwrap().len(), 0, "a refused put left a blob");
}
