//! `Content`: blobs for callers without S3 credentials (clients, workers
//! told to use the coordinator). Uploads are verified against their digest
//! before the store commits them.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rbk_proto::content::content_server::Content;
use rbk_proto::content::{self as pc};
use rbk_store::{ByteRange, ByteStream, Digest, Hasher, Store, StoreError};
use tonic::{Request, Response, Status, Streaming};

use super::EventStream;
use rbk_proto::chunks::split_chunks;
use crate::wire::parse_digest;

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
}

/// The upload as a [`ByteStream`] that fails (so the store commits nothing)
/// if the bytes do not hash to `expected`.
fn verified_upload(expected: Digest, first: Vec<u8>, rest: Streaming<pc::WriteChunk>) -> ByteStream {
    struct St {
        rest: Streaming<pc::WriteChunk>,
        hasher: Hasher,
        pending: Option<Vec<u8>>,
    }
    let too_long = move |h: &Hasher| StoreError::DigestMismatch { expected, actual: h.finish() };
    futures::stream::unfold(Some(St { rest, hasher: Hasher::new(), pending: Some(first) }), move |st| async move {
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
        let digests = req.into_inner().digests.iter().map(|d| parse_digest("find_missing", d)).collect::<Result<Vec<_>, _>>()?;
        let missing = self.store.find_missing(&digests).await.map_err(store_status)?;
        Ok(Response::new(pc::FindMissingResponse { missing: missing.iter().map(ToString::to_string).collect() }))
    }

    type ReadStream = EventStream<pc::ReadChunk>;

    async fn read(&self, req: Request<pc::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let digest = parse_digest("read", &r.digest)?;
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
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("write: empty upload stream"))?;
        let digest = parse_digest("write", &first.digest)?;
        self.store.put(digest, verified_upload(digest, first.data, inbound)).await.map_err(store_status)?;
        Ok(Response::new(pc::WriteResponse {}))
    }
}
