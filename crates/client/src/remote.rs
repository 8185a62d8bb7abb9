//! A [`Store`] over the coordinator's Content service, for clients and
//! external workers that hold no S3 credentials.
//!
//! Deleting and listing are not offered remotely: blobs belong to the farm,
//! and only the coordinator's garbage collection evicts them.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rbk_proto::content::content_client::ContentClient;
use rbk_proto::content::{FindMissingRequest, ReadRequest, WriteChunk};
use rbk_store::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use rbk_proto::chunks::split_chunks;

use crate::tls::ClientTls;

/// Digests per FindMissing call, to stay well under message size limits.
const FIND_BATCH: usize = 10_000;

#[derive(Clone)]
pub struct RemoteStore {
    channel: Channel,
    auth: MetadataValue<tonic::metadata::Ascii>,
    url: String,
    /// A worker's id, sent as `rbk-worker-id`: the coordinator shows a
    /// worker the blobs of the tenants whose steps run on it, and a worker
    /// sharing a pool token is known by the id it registered with.
    worker_id: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("RemoteStore").field("url", &self.url).finish_non_exhaustive()
    }
}

fn backend(message: String, retryable: bool) -> StoreError {
    StoreError::Backend { backend: "remote content service", message, retryable }
}

impl RemoteStore {
    /// Connects to a coordinator at `url` (for example `http://10.0.0.1:7070`).
    pub async fn connect(tls: &ClientTls, url: &str, token: &str) -> StoreResult<Self> {
        let endpoint = tls.endpoint(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let channel = endpoint.connect().await.map_err(|e| backend(format!("connecting to {url}: {e}"), true))?;
        Self::new(channel, url, token)
    }

    pub fn new(channel: Channel, url: &str, token: &str) -> StoreResult<Self> {
        let auth = format!("Bearer {token}").parse().map_err(|_| StoreError::Config("token has characters a header cannot carry".into()))?;
        Ok(Self { channel, auth, url: url.to_owned(), worker_id: None })
    }

    /// This store's calls come from worker `id` (see the field).
    pub fn for_worker(mut self, id: &str) -> StoreResult<Self> {
        self.worker_id = Some(id.parse().map_err(|_| StoreError::Config(format!("worker id {id:?} has characters a header cannot carry")))?);
        Ok(self)
    }

    fn client(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", self.auth.clone());
        if let Some(id) = &self.worker_id {
            r.metadata_mut().insert("rbk-worker-id", id.clone());
        }
        r
    }

    fn error(&self, digest: Option<Digest>, range: ByteRange, s: Status) -> StoreError {
        match (s.code(), digest) {
            (Code::NotFound, Some(d)) => StoreError::NotFound(d),
            (Code::OutOfRange, Some(d)) => StoreError::InvalidRange { digest: d, offset: range.offset, length: range.length, size: d.size() },
            (Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted, _) => {
                backend(format!("{}: {}", self.url, s.message()), true)
            }
            _ => backend(format!("{}: {:?}: {}", self.url, s.code(), s.message()), false),
        }
    }
}

#[async_trait::async_trait]
impl Store for RemoteStore {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let mut missing = Vec::new();
        for batch in digests.chunks(FIND_BATCH) {
            let req = FindMissingRequest { digests: batch.iter().map(ToString::to_string).collect() };
            let resp = self.client().find_missing(self.request(req)).await.map_err(|s| self.error(None, ByteRange::FULL, s))?;
            for d in resp.into_inner().missing {
                missing.push(d.parse().map_err(|e| backend(format!("{}: answered a bad digest: {e}", self.url), false))?);
            }
        }
        Ok(missing)
    }

    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        // A local read error ends the upload early; the server then sees
        // bytes that do not hash to `digest` and stores nothing.
        let failed: Arc<Mutex<Option<StoreError>>> = Arc::default();
        let slot = failed.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteChunk>(4);
        let pump = tokio::spawn(async move {
            let mut data = data;
            if tx.send(WriteChunk { digest: digest.to_string(), data: Vec::new() }).await.is_err() {
                return;
            }
            while let Some(item) = data.next().await {
                match item {
                    Ok(b) => {
                        for c in split_chunks(b) {
                            if tx.send(WriteChunk { digest: String::new(), data: c.to_vec() }).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let result = self.client().write(self.request(stream)).await;
        let _ = pump.await;
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        result.map(drop).map_err(|s| match s.code() {
            Code::InvalidArgument => backend(format!("{}: refused blob {digest}: {}", self.url, s.message()), false),
            _ => self.error(Some(digest), ByteRange::FULL, s),
        })
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let req = ReadRequest { digest: digest.to_string(), offset: range.offset, length: range.length.unwrap_or(0) };
        if range.length == Some(0) {
            // The wire form reads 0 as "to the end"; an empty range needs no call
            // beyond checking it is valid.
            range.resolve(&digest, digest.size())?;
            if !self.find_missing(&[digest]).await?.is_empty() {
                return Err(StoreError::NotFound(digest));
            }
            return Ok(futures::stream::empty().boxed());
        }
        let this = self.clone();
        let stream = self.client().read(self.request(req)).await.map_err(|s| self.error(Some(digest), range, s))?.into_inner();
        Ok(stream
            .map(move |item| item.map(|c| bytes::Bytes::from(c.data)).map_err(|s| this.error(Some(digest), range, s)))
            .boxed())
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        Err(backend(format!("cannot delete {digest}: the content service offers no delete; the coordinator's GC evicts blobs"), false))
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        Err(backend("the content service offers no listing; garbage collection runs on the coordinator".into(), false))
    }

    /// No pages either: the collector runs where the store is (the
    /// coordinator leader), never through the content service.
    async fn list_page(&self, _after: Option<Digest>, _limit: usize) -> StoreResult<rbk_store::ListPage> {
        Err(backend("the content service offers no listing; garbage collection runs on the coordinator".into(), false))
    }
}
