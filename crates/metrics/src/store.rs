//! `MetricsStore`: a content-store wrapper that times every operation and
//! counts errors and bytes, per operation and backend.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rbk_store::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};

use crate::Metrics;
use crate::labels::StoreOp;

/// Records `rbk_store_operation_duration_seconds`, `rbk_store_errors_total`
/// and `rbk_store_bytes_total` for the store it wraps, labelled
/// `backend = <name given here>`.
///
/// Put it outermost to see what callers experience (verification and
/// compression included), or directly above a backend to see the backend
/// alone; a stack may hold two with different names. A get is timed until
/// its stream ends (or is dropped), since the transfer is what costs;
/// `NotFound` counts as an error of kind `not_found` so existence probes
/// are visible apart from real failures.
#[derive(Debug)]
pub struct MetricsStore<S> {
    inner: S,
    backend: &'static str,
    metrics: Metrics,
}

impl<S: Store> MetricsStore<S> {
    pub fn new(inner: S, backend: &'static str, metrics: Metrics) -> Self {
        metrics.store_backend_seen(backend);
        Self { inner, backend, metrics }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn record<T>(&self, op: StoreOp, started: Instant, r: &StoreResult<T>) {
        self.metrics.store_op(op, self.backend, started.elapsed(), r.as_ref().err().map(error_kind));
    }
}

/// A short, stable name for each kind of store error (a label value).
pub fn error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound(_) => "not_found",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::DigestMismatch { .. } => "digest_mismatch",
        StoreError::InvalidRange { .. } => "invalid_range",
        StoreError::Io { .. } => "io",
        StoreError::Backend { .. } => "backend",
        StoreError::Config(_) => "config",
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for MetricsStore<S> {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let started = Instant::now();
        let r = self.inner.find_missing(digests).await;
        self.record(StoreOp::FindMissing, started, &r);
        r
    }

    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        let started = Instant::now();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let data = data
            .inspect(move |chunk| {
                if let Ok(b) = chunk {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            })
            .boxed();
        let r = self.inner.put(digest, data).await;
        self.record(StoreOp::Put, started, &r);
        if r.is_ok() {
            // Only bytes that became a blob count as written.
            self.metrics.store_bytes("written", self.backend, seen.load(Ordering::Relaxed));
        }
        r
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let started = Instant::now();
        match self.inner.get(digest, range).await {
            Ok(stream) => Ok(MeteredRead { inner: stream, started, store: Some((self.metrics.clone(), self.backend)) }.boxed()),
            Err(e) => {
                self.metrics.store_op(StoreOp::Get, self.backend, started.elapsed(), Some(error_kind(&e)));
                Err(e)
            }
        }
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        let started = Instant::now();
        let r = self.inner.delete(digest).await;
        self.record(StoreOp::Delete, started, &r);
        r
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        let started = Instant::now();
        let r = self.inner.list().await;
        self.record(StoreOp::List, started, &r);
        r
    }

    /// Forwarded (timed as a list), so a collector sweeping through this
    /// wrapper sees the backend's pages and ages, not the trait's
    /// list-everything default that reports no ages.
    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<rbk_store::ListPage> {
        let started = Instant::now();
        let r = self.inner.list_page(after, limit).await;
        self.record(StoreOp::List, started, &r);
        r
    }
}

/// A get's stream: counts bytes as they pass and records the operation
/// once, when the stream ends, fails, or is dropped unfinished.
struct MeteredRead {
    inner: ByteStream,
    started: Instant,
    /// `None` once recorded.
    store: Option<(Metrics, &'static str)>,
}

impl MeteredRead {
    fn finish(&mut self, error: Option<&'static str>) {
        if let Some((m, backend)) = self.store.take() {
            m.store_op(StoreOp::Get, backend, self.started.elapsed(), error);
        }
    }
}

impl Stream for MeteredRead {
    type Item = StoreResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                if let Some((m, backend)) = &self.store {
                    m.store_bytes("read", backend, b.len() as u64);
                }
            }
            Poll::Ready(Some(Err(e))) => self.finish(Some(error_kind(e))),
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for MeteredRead {
    fn drop(&mut self) {
        // A reader that stops early (it had what it needed) is not an error.
        self.finish(None);
    }
}
