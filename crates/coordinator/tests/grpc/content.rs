//! The RemoteStore through the Content service, backed by a filesystem store.

use bytes::Bytes;
use futures::StreamExt;
use rbk_store::{ByteRange, Digest, Store, StoreError, StoreExt};

use crate::harness::*;

fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>().into()
}

#[tokio::test]
async fn blobs_round_trip_through_the_content_service() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    for n in [0, 1, 10 * 1024 * 1024] {
        let data = pattern(n);
        let d = remote.put_bytes(data.clone()).await.unwrap();
        assert_eq!(remote.get_bytes(d).await.unwrap(), data, "{n} bytes through the remote store");
        assert_eq!(farm.store.get_bytes(d).await.unwrap(), data, "{n} bytes landed in the backing store");
    }
}

#[tokio::test]
async fn ranged_reads_return_exactly_the_range() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    let data = pattern(10 * 1024 * 1024);
    let d = remote.put_bytes(data.clone()).await.unwrap();
    let start = 3 * 1024 * 1024 + 17;
    let got = remote.get_range_bytes(d, ByteRange::new(start as u64, 2_000_001)).await.unwrap();
    assert_eq!(got, data.slice(start..start + 2_000_001));
    let tail = remote.get_range_bytes(d, ByteRange { offset: data.len() as u64 - 5, length: None }).await.unwrap();
    assert_eq!(tail, data.slice(data.len() - 5..));
    let err = remote.get_range_bytes(d, ByteRange::new(data.len() as u64, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRange { .. }), "{err}");
}

#[tokio::test]
async fn find_missing_names_exactly_the_absent_digests() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    let here = remote.put_bytes(Bytes::from_static(b"here")).await.unwrap();
    let absent = Digest::of(b"absent");
    assert_eq!(remote.find_missing(&[here, absent]).await.unwrap(), vec![absent]);
}

#[tokio::test]
async fn an_absent_blob_reads_as_not_found() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    let d = Digest::of(b"never stored");
    assert!(matches!(remote.get(d, ByteRange::FULL).await.err().unwrap(), StoreError::NotFound(x) if x == d));
}

#[tokio::test]
async fn an_upload_whose_bytes_do_not_match_its_digest_stores_nothing() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    let claimed = Digest::of(b"the real content");
    let err = remote.put(claimed, rbk_store::stream_from_bytes(Bytes::from_static(b"something else!!"))).await.unwrap_err();
    assert!(err.to_string().contains(&claimed.to_string()), "{err}");
    assert!(!farm.store.contains(claimed).await.unwrap());
}

#[tokio::test]
async fn an_upload_that_fails_locally_part_way_stores_nothing() {
    let farm = farm().await;
    let remote = farm.remote_store(TENANT_A).await;
    let data = pattern(3 * 1024 * 1024);
    let d = Digest::of(&data);
    let broken = futures::stream::iter(vec![
        Ok(data.slice(..1024 * 1024)),
        Err(StoreError::io(d, "reading the source file", std::io::Error::other("disk on fire"))),
    ])
    .boxed();
    let err = remote.put(d, broken).await.unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(!farm.store.contains(d).await.unwrap());
}
