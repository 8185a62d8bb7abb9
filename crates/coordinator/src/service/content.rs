//! `Content`: blobs for callers without S3 credentials (clients, workers
//! told to use the coordinator). Uploads are verified against their digest
//! before the store commits them.
//!
//! Every call is scoped to what the caller has (`blob_owners.rs`): a
//! tenant sees the blobs it uploaded and those its results and cache heads
//! name; a worker sees what the tenants whose steps run on it now have.
//! A blob outside the scope is answered exactly like one the store lacks
//! (NotFound on read, "missing" from `FindMissing`), so no call tells a
//! caller whether another tenant stored some content.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use rbk_proto::content::content_server::Content;
use rbk_proto::content::{self as pc};
use rbk_store::{ByteRange, ByteStream, Digest, Hasher, Store, StoreError};
use tonic::{Request, Response, Status, Streaming};

use super::EventStream;
use rbk_proto::chunks::split_chunks;
use crate::auth::REVOKED;
use crate::state::{Command, CoordinatorState, Principal, StateError, query};
use crate::wire::parse_digest;
use crate::worker_uploads::WorkerUploads;

/// The header a worker sharing a pool token names itself with on
/// `Content` calls (a worker with a token of its own is named by it).
pub const WORKER_ID_HEADER: &str = "rbk-worker-id";

/// Maps store errors onto gRPC codes the remote store maps back.
pub(crate) fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::InvalidRange { .. } => Status::out_of_range(e.to_string()),
        StoreError::DigestMismatch { .. } => Status::invalid_argument(e.to_string()),
        StoreError::Backend { retryable: true, .. } => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// `Content` over the farm's store.
pub(crate) struct ContentService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) state: Arc<dyn CoordinatorState>,
    pub(crate) worker_uploads: Arc<WorkerUploads>,
}

/// Whose blobs a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// A tenant: its own.
    Tenant(String),
    /// A worker: those of the tenants whose steps run on it now (of those
    /// its pool `serves`; none between assignments), and what it uploaded
    /// itself (`worker_uploads.rs`).
    Worker { id: Option<String>, serves: BTreeSet<String> },
}

/// How long a worker's read of a blob that a tenant its pool serves has,
/// but whose step the state does not yet show running on the worker, waits
/// for the state to catch up: a worker may read through a follower, which
/// applies the leader's "running" record a little after the worker was
/// told of the step. On the leader the record precedes the assignment.
const FOLLOWER_LAG: std::time::Duration = std::time::Duration::from_secs(2);

impl ContentService {
    fn scope<T>(&self, req: &Request<T>) -> Result<Scope, Status> {
        match req.extensions().get::<Principal>() {
            Some(Principal::Tenant(ns)) => Ok(Scope::Tenant(ns.clone())),
            Some(Principal::BoundWorker(grant)) => {
                let claimed = req.metadata().get(WORKER_ID_HEADER).and_then(|v| v.to_str().ok());
                Ok(Scope::Worker { id: grant.id.as_deref().or(claimed).map(str::to_owned), serves: grant.tenants.clone() })
            }
            // A worker token from before pools listed their tenants serves none.
            Some(Principal::Worker(_)) => Ok(Scope::Worker { id: None, serves: BTreeSet::new() }),
            Some(Principal::Revoked { .. }) => Err(Status::unauthenticated(REVOKED)),
            None => Err(Status::unauthenticated("request was not authenticated")),
        }
    }

    /// Whether `scope` has each of `digests`.
    async fn has(&self, scope: &Scope, digests: &[Digest]) -> Vec<bool> {
        let (has, lagging) = self.has_now(scope, digests);
        if !lagging {
            return has;
        }
        let deadline = tokio::time::Instant::now() + FOLLOWER_LAG;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let (has, lagging) = self.has_now(scope, digests);
            if !lagging || tokio::time::Instant::now() >= deadline {
                return has;
            }
        }
    }

    /// [`Self::has`] from one read of the state, and whether a worker
    /// misses a blob that a tenant its pool serves has (see
    /// [`FOLLOWER_LAG`]).
    fn has_now(&self, scope: &Scope, digests: &[Digest]) -> (Vec<bool>, bool) {
        match scope {
            Scope::Tenant(ns) => (query(&*self.state, |m| digests.iter().map(|d| m.tenant_has_blob(ns, d)).collect()), false),
            Scope::Worker { id: None, .. } => (vec![false; digests.len()], false),
            Scope::Worker { id: Some(id), serves } => query(&*self.state, |m| {
                let running: BTreeSet<String> = m.tenants_running_on(id).intersection(serves).cloned().collect();
                let mut lagging = false;
                let has = digests
                    .iter()
                    .map(|d| {
                        let has = m.any_tenant_has_blob(&running, d) || self.worker_uploads.uploaded(id, d);
                        lagging |= !has && m.any_tenant_has_blob(serves, d);
                        has
                    })
                    .collect();
                (has, lagging)
            }),
        }
    }

    /// Records a verified upload as the tenant's. A worker's uploads are
    /// the worker's only (`worker_uploads.rs`): they become a tenant's when
    /// the result or cache commit of that tenant's step names them, the
    /// only tenant they belong to (a worker may run several tenants' steps
    /// at once).
    async fn record_upload(&self, scope: &Scope, digest: Digest) -> Result<(), Status> {
        let ns = match scope {
            Scope::Tenant(ns) => ns,
            Scope::Worker { id: Some(id), .. } => {
                self.worker_uploads.record(id, digest);
                return Ok(());
            }
            Scope::Worker { id: None, .. } => return Ok(()),
        };
        if self.has(scope, &[digest]).await[0] {
            return Ok(());
        }
        match self.state.apply(Command::OwnBlobs { namespace: ns.clone(), blobs: vec![digest] }).await {
            Ok(_) => Ok(()),
            Err(e @ StateError::NotLeader { .. }) => Err(Status::unavailable(format!("write: the upload is stored but {e}; upload through the leader"))),
            Err(e) => Err(Status::unavailable(format!("write: recording the upload: {e}"))),
        }
    }
}

/// The upload as a [`ByteStream`] that fails (so the store commits nothing)
/// if the bytes do not hash to `expected`; `verified` is set once all of
/// them were read and matched (what makes the upload proof of possession).
fn verified_upload(expected: Digest, first: Vec<u8>, rest: Streaming<pc::WriteChunk>, verified: Arc<AtomicBool>) -> ByteStream {
    struct St {
        rest: Streaming<pc::WriteChunk>,
        hasher: Hasher,
        pending: Option<Vec<u8>>,
        verified: Arc<AtomicBool>,
    }
    let too_long = move |h: &Hasher| StoreError::DigestMismatch { expected, actual: h.finish() };
    futures::stream::unfold(Some(St { rest, hasher: Hasher::new(), pending: Some(first), verified }), move |st| async move {
        let mut st = st?;
        let data = match st.pending.take() {
            Some(d) => d,
            None => match st.rest.message().await {
                Ok(Some(c)) => c.data,
                Ok(None) => {
                    let actual = st.hasher.finish();
                    return (actual != expected).then(|| (Err(StoreError::DigestMismatch { expected, actual }), None));
                }
                Err(s) => {
                    let e = StoreError::Backend { backend: "content upload", message: s.to_string(), retryable: true };
                    return Some((Err(e), None));
                }
            },
        };
        st.hasher.update(&data);
        if st.hasher.bytes_so_far() > expected.size() {
            return Some((Err(too_long(&st.hasher)), None));
        }
        if st.hasher.bytes_so_far() == expected.size() && st.hasher.finish() == expected {
            st.verified.store(true, Ordering::SeqCst);
        }
        Some((Ok(Bytes::from(data)), Some(st)))
    })
    .boxed()
}

/// The most digests one `FindMissing` call may ask about: a client asks in
/// batches (an image's layers, a context's chunks); more is refused so one
/// call cannot probe the store at scale.
pub const FIND_MISSING_MAX: usize = 10_000;

#[async_trait::async_trait]
impl Content for ContentService {
    async fn find_missing(&self, req: Request<pc::FindMissingRequest>) -> Result<Response<pc::FindMissingResponse>, Status> {
        let n = req.get_ref().digests.len();
        if n > FIND_MISSING_MAX {
            return Err(Status::invalid_argument(format!("find_missing: {n} digests, more than the limit of {FIND_MISSING_MAX} per call")));
        }
        let scope = self.scope(&req)?;
        let digests = req.into_inner().digests.iter().map(|d| parse_digest("find_missing", d)).collect::<Result<Vec<_>, _>>()?;
        let mut missing = self.store.find_missing(&digests).await.map_err(store_status)?;
        // Present in the store but not the caller's: missing to it too.
        let has = self.has(&scope, &digests).await;
        let absent: BTreeSet<Digest> = missing.iter().copied().collect();
        missing.extend(digests.iter().zip(has).filter(|(d, has)| !has && !absent.contains(d)).map(|(d, _)| *d));
        Ok(Response::new(pc::FindMissingResponse { missing: missing.iter().map(ToString::to_string).collect() }))
    }

    type ReadStream = EventStream<pc::ReadChunk>;

    async fn read(&self, req: Request<pc::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let scope = self.scope(&req)?;
        let r = req.into_inner();
        let digest = parse_digest("read", &r.digest)?;
        if !self.has(&scope, &[digest]).await[0] {
            // The very answer the store gives for a blob it lacks.
            return Err(store_status(StoreError::NotFound(digest)));
        }
        let range = ByteRange { offset: r.offset, length: (r.length != 0).then_some(r.length) };
        let stream = self.store.get(digest, range).await.map_err(store_status)?;
        let out = stream.flat_map(|item| {
            let msgs: Vec<Result<pc::ReadChunk, Status>> = match item {
                Ok(b) => split_chunks(b).map(|c| Ok(pc::ReadChunk { data: c.to_vec() })).collect(),
                Err(e) => vec![Err(store_status(e))],
            };
            futures::stream::iter(msgs)
        });
        Ok(Response::new(out.boxed()))
    }

    async fn write(&self, req: Request<Streaming<pc::WriteChunk>>) -> Result<Response<pc::WriteResponse>, Status> {
        let scope = self.scope(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("write: empty upload stream"))?;
        let digest = parse_digest("write", &first.digest)?;
        let verified = Arc::new(AtomicBool::new(false));
        let upload = verified_upload(digest, first.data, inbound, verified.clone());
        if self.store.find_missing(&[digest]).await.map_err(store_status)?.is_empty() {
            // Stored already (maybe by another tenant): the store would
            // not read the bytes, but the upload must still prove them.
            let mut upload = upload;
            while let Some(chunk) = upload.next().await {
                chunk.map_err(store_status)?;
            }
        } else {
            self.store.put(digest, upload).await.map_err(store_status)?;
        }
        if !verified.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!("write {digest}: the store took the blob without reading all of the upload; upload it again")));
        }
        self.record_upload(&scope, digest).await?;
        Ok(Response::new(pc::WriteResponse {}))
    }
}
