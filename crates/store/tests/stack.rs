//! The full production stack, built from configuration, over the real S3
//! server and Redis: existence cache > verify > compress > s3.

mod common;

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use rbk_store::{ByteRange, Digest, S3Store, Store, StoreConfig, StoreError, StoreExt, build_store};

async fn stack() -> (Arc<dyn Store>, S3Store) {
    let s3 = common::fresh_bucket().await;
    let raw = S3Store::new(s3.clone()).await.unwrap();
    let redis = rbk_testsupport::redis_url();
    let toml = format!(
        r#"
        [store]
        type = "existence_cache"
        redis_url = "{redis}"
        redis_prefix = "rbk-test-{:016x}:"
        inner = {{ type = "verify", inner = {{ type = "compress", level = 3, inner = {{ type = "s3", bucket = "{}", endpoint = "{}", region = "{}", prefix = "test" }} }} }}
        "#,
        rand::random::<u64>(),
        s3.bucket,
        s3.endpoint.as_deref().unwrap(),
        s3.region.as_deref().unwrap(),
    );
    let mut config = StoreConfig::from_toml(&toml, "test.toml").unwrap();
    let (id, secret) = (s3.access_key_id.unwrap().0, s3.secret_access_key.unwrap().0);
    config.apply_env(&|k| match k {
        "AWS_ACCESS_KEY_ID" => Some(id.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some(secret.clone()),
        _ => None,
    });
    (build_store(&config).await.unwrap(), raw)
}

#[tokio::test]
async fn round_trips_and_ranges_through_the_whole_stack() {
    let (s, raw) = stack().await;
    for len in [0usize, 1, (8 << 20) + 1] {
        let data = common::data(len, 11);
        let d = s.put_bytes(data.clone()).await.unwrap();
        assert!(s.get_bytes(d).await.unwrap() == data, "blob {d}");
        assert!(s.find_missing(&[d]).await.unwrap().is_empty());
        if len > 100 {
            assert_eq!(s.get_range_bytes(d, ByteRange::new(50, 4000)).await.unwrap(), data.slice(50..4050));
            // Half-compressible data is stored compressed.
            let stored = raw.get_bytes(d).await.unwrap();
            assert!(stored.len() < len * 3 / 4, "stored {} of {len} bytes", stored.len());
        }
    }
}

#[tokio::test]
async fn an_object_corrupted_on_the_server_is_detected_on_read() {
    let (s, raw) = stack().await;
    let data = common::data(300_000, 5);
    let d = s.put_bytes(data.clone()).await.unwrap();
    // Same length, one byte changed, still a well-formed raw object.
    let mut evil = vec![0u8];
    evil.extend_from_slice(&data);
    evil[1000] ^= 0xff;
    let key = raw.key(&d);
    raw.client().put_object().bucket(raw.bucket()).key(&key).body(SdkBody::from(evil)).send().await.unwrap();
    let err = s.get_bytes(d).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
    assert!(err.to_string().contains(&d.to_string()));
    // Garbage that is not even a valid object is refused too, naming the blob.
    raw.client().put_object().bucket(raw.bucket()).key(&key).body(SdkBody::from(vec![1u8; 64])).send().await.unwrap();
    let err = s.get_bytes(d).await.unwrap_err();
    assert!(err.to_string().contains(&d.to_string()), "{err}");
}

#[tokio::test]
async fn data_not_matching_its_digest_never_reaches_s3() {
    let (s, raw) = stack().await;
    let claimed = Digest::of(b"claimed");
    let err = s.put(claimed, rbk_store::stream_from_bytes(Bytes::from_static(b"other"))).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
    assert!(raw.list().await.unwrap().is_empty());
}
