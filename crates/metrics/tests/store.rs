//! `MetricsStore` over a real filesystem store.

use bytes::Bytes;
use futures::StreamExt;
use rbk_metrics::exposition::sample;
use rbk_metrics::{Metrics, MetricsStore};
use rbk_store::{ByteRange, Digest, FilesystemStore, Store, StoreError, StoreExt};

async fn store() -> (Metrics, MetricsStore<FilesystemStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let s = MetricsStore::new(FilesystemStore::open(dir.path()).await.unwrap(), "fs", m.clone());
    (m, s, dir)
}

fn count(m: &Metrics, op: &str) -> f64 {
    sample(&m.encode_prometheus(), "rbk_store_operation_duration_seconds_count", &[("op", op), ("backend", "fs")]).unwrap_or(0.0)
}

fn bytes(m: &Metrics, direction: &str) -> f64 {
    sample(&m.encode_prometheus(), "rbk_store_bytes_total", &[("direction", direction), ("backend", "fs")]).unwrap()
}

fn errors(m: &Metrics, op: &str, kind: &str) -> f64 {
    sample(&m.encode_prometheus(), "rbk_store_errors_total", &[("op", op), ("backend", "fs"), ("kind", kind)]).unwrap_or(0.0)
}

#[tokio::test]
async fn every_operation_is_timed_under_its_name_and_backend() {
    let (m, s, _dir) = store().await;
    let d = s.put_bytes(Bytes::from_static(b"hello metrics")).await.unwrap();
    assert_eq!(s.get_bytes(d).await.unwrap(), "hello metrics");
    s.find_missing(&[d]).await.unwrap();
    s.list().await.unwrap();
    s.delete(d).await.unwrap();
    for op in ["put", "get", "find_missing", "list", "delete"] {
        assert_eq!(count(&m, op), 1.0, "{op}");
    }
}

#[tokio::test]
async fn bytes_read_and_written_are_counted() {
    let (m, s, _dir) = store().await;
    assert_eq!(bytes(&m, "written"), 0.0, "the backend's series exist before any traffic");
    let d = s.put_bytes(Bytes::from(vec![7u8; 10_000])).await.unwrap();
    s.get_range_bytes(d, ByteRange::new(100, 500)).await.unwrap();
    assert_eq!(bytes(&m, "written"), 10_000.0);
    assert_eq!(bytes(&m, "read"), 500.0);
}

#[tokio::test]
async fn a_missing_blob_counts_as_a_not_found_error() {
    let (m, s, _dir) = store().await;
    let absent = Digest::of(b"never stored");
    assert!(s.get(absent, ByteRange::FULL).await.err().expect("absent blob").is_not_found());
    assert_eq!(errors(&m, "get", "not_found"), 1.0);
    assert_eq!(count(&m, "get"), 1.0);
}

#[tokio::test]
async fn a_put_that_fails_mid_stream_counts_an_error_and_no_written_bytes() {
    let (m, s, _dir) = store().await;
    let d = Digest::of(b"whole content");
    let broken = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"whole")),
        Err(StoreError::Backend { backend: "test", message: "connection reset".into(), retryable: true }),
    ])
    .boxed();
    s.put(d, broken).await.unwrap_err();
    assert_eq!(errors(&m, "put", "backend"), 1.0);
    assert_eq!(bytes(&m, "written"), 0.0);
    assert!(!s.contains(d).await.unwrap(), "nothing partial is visible");
}

#[tokio::test]
async fn a_read_dropped_half_way_is_recorded_once_without_error() {
    let (m, s, _dir) = store().await;
    let d = s.put_bytes(Bytes::from(vec![1u8; 3 << 20])).await.unwrap();
    let mut stream = s.get(d, ByteRange::FULL).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(count(&m, "get"), 0.0, "still reading");
    drop(stream);
    assert_eq!(count(&m, "get"), 1.0);
    assert_eq!(bytes(&m, "read"), first.len() as f64);
    assert_eq!(m.encode_prometheus().matches("rbk_store_errors_total{").count(), 0);
}
