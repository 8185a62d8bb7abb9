use std::fmt;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::StreamExt;
use serde::Deserialize;

use crate::{ByteRange, ByteStream, Digest, Store, StoreError, StoreResult};

const MIB: u64 = 1024 * 1024;
/// S3 refuses parts smaller than this, except the last.
const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3 refuses uploads of more parts than this.
const MAX_PARTS: u64 = 10_000;

/// A secret read from configuration or the environment. Its `Debug` form is
/// redacted so a logged configuration never carries it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Where and how to reach an S3 bucket. Every field but `bucket` has a
/// default that works against AWS itself with credentials from the standard
/// chain (environment, profile, instance metadata).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// For S3-compatible servers (MinIO, moto, Ceph): `http://host:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Falls back to the standard chain, then `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`). Defaults to on when an
    /// endpoint is given, since most self-hosted servers need it.
    #[serde(default)]
    pub force_path_style: Option<bool>,
    /// Keys are `<prefix>/blobs/<digest>`, so deployments can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// Static credentials; when absent the standard AWS chain is used.
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Blobs larger than this are sent as a multipart upload.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: u64,
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Parts of one upload in flight at once; memory use is this times
    /// `part_size` per concurrent upload.
    #[serde(default = "default_parallel_parts")]
    pub max_parallel_parts: usize,
    /// Concurrent HEAD requests one `find_missing` call may issue.
    #[serde(default = "default_parallel_heads")]
    pub max_parallel_heads: usize,
    /// Attempts per request (the first included) on throttling, 5xx,
    /// timeouts and connection failures, with exponential backoff + jitter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on one attempt of one request (one part, one small object, the
    /// headers of a GET); a server that stops answering fails in this time.
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
}

fn default_multipart_threshold() -> u64 {
    8 * MIB
}
fn default_part_size() -> u64 {
    8 * MIB
}
fn default_parallel_parts() -> usize {
    4
}
fn default_parallel_heads() -> usize {
    32
}
fn default_max_attempts() -> u32 {
    4
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    2_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_attempt_timeout_ms() -> u64 {
    60_000
}

impl S3Config {
    /// A configuration with every default, for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            endpoint: None,
            region: None,
            force_path_style: None,
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            multipart_threshold: default_multipart_threshold(),
            part_size: default_part_size(),
            max_parallel_parts: default_parallel_parts(),
            max_parallel_heads: default_parallel_heads(),
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            attempt_timeout_ms: default_attempt_timeout_ms(),
        }
    }

    /// Refuses values S3 or this store cannot work with, naming the field.
    pub fn validate(&self) -> StoreResult<()> {
        let bad = |field: &str, why: &str| Err(StoreError::Config(format!("s3.{field}: {why}")));
        if self.bucket.is_empty() {
            return bad("bucket", "must not be empty");
        }
        if self.part_size < MIN_PART_SIZE {
            return bad("part_size", "S3 requires parts of at least 5 MiB (5242880 bytes)");
        }
        if self.max_parallel_parts == 0 {
            return bad("max_parallel_parts", "must be at least 1");
        }
        if self.max_parallel_heads == 0 {
            return bad("max_parallel_heads", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad("access_key_id", "access_key_id and secret_access_key must be given together");
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return bad("endpoint", &format!("{e:?} must start with http:// or https://"));
        }
        Ok(())
    }

    /// Builds an SDK client from this configuration: the same client the
    /// store uses, also handy for tools that need raw access (benchmarks,
    /// tests that corrupt objects on purpose).
    pub async fn sdk_client(&self) -> StoreResult<Client> {
        self.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(self.max_attempts)
                    .with_initial_backoff(Duration::from_millis(self.initial_backoff_ms))
                    .with_max_backoff(Duration::from_millis(self.max_backoff_ms)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
                    .operation_attempt_timeout(Duration::from_millis(self.attempt_timeout_ms))
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(&id.0, &secret.0, None, None, "rbk-config"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.force_path_style.unwrap_or(self.endpoint.is_some()));
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(Client::from_conf(builder.build()))
    }
}

/// Blobs as objects in an S3 bucket, under `<prefix>/blobs/<digest>`.
///
/// Writes are conditional (`If-None-Match: *`): when several workers upload
/// the same digest at once, the first to finish wins and the others are told
/// "already there", which for content-addressed data is success. Large blobs
/// go up as multipart uploads, aborted on any failure so no partial object
/// ever becomes visible. Transient failures (throttling, 5xx, timeouts,
/// refused connections) are retried by the SDK with exponential backoff and
/// jitter; a server that is gone fails each call within the configured
/// connect/attempt timeouts times the attempt count, never hangs.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    config: std::sync::Arc<S3Config>,
    blob_prefix: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.config.bucket).field("prefix", &self.blob_prefix).finish()
    }
}

impl S3Store {
    pub async fn new(config: S3Config) -> StoreResult<Self> {
        let client = config.sdk_client().await?;
        Ok(Self::with_client(client, config))
    }

    /// Uses an existing SDK client (its retry and timeout settings apply).
    pub fn with_client(client: Client, config: S3Config) -> Self {
        let prefix = config.prefix.trim_matches('/');
        let blob_prefix = if prefix.is_empty() { "blobs/".to_owned() } else { format!("{prefix}/blobs/") };
        Self { client, config: std::sync::Arc::new(config), blob_prefix }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The object key a blob is stored under.
    pub fn key(&self, digest: &Digest) -> String {
        format!("{}{digest}", self.blob_prefix)
    }

    fn error<E>(&self, op: &str, digest: Option<&Digest>, err: SdkError<E>) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        // The SDK has already retried what it could; what remains is still
        // worth a later try when the server was the problem (5xx, throttling)
        // or the network was, and not when the request itself was refused.
        let retryable = match &err {
            SdkError::ConstructionFailure(_) => false,
            SdkError::ServiceError(_) => status(&err).is_some_and(|s| s >= 500 || s == 429 || s == 408),
            _ => true,
        };
        let target = match digest {
            Some(d) => format!("s3://{}/{}", self.config.bucket, self.key(d)),
            None => format!("s3://{}/{}", self.config.bucket, self.blob_prefix),
        };
        let endpoint = self.config.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
        StoreError::Backend {
            backend: "s3",
            message: format!("{op} {target}{endpoint} failed: {}", error_chain(&err)),
            retryable,
        }
    }

    /// Reads from `data` until `buf` holds at least `want` bytes or the
    /// stream ends; returns whether the stream ended.
    async fn fill(data: &mut ByteStream, buf: &mut BytesMut, want: usize) -> StoreResult<bool> {
        while buf.len() < want {
            match data.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk?),
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    async fn put_single(&self, digest: &Digest, body: Bytes) -> StoreResult<()> {
        let result = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.key(digest))
            .if_none_match("*")
            .content_length(body.len() as i64)
            .body(SdkBody::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if already_exists(&e) => Ok(()),
            Err(e) => Err(self.error("PUT", Some(digest), e)),
        }
    }

    async fn put_multipart(&self, digest: &Digest, mut buf: BytesMut, mut data: ByteStream) -> StoreResult<()> {
        let key = self.key(digest);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", Some(digest), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        if upload_id.is_empty() {
            return Err(StoreError::Backend {
                backend: "s3",
                message: format!("CreateMultipartUpload s3://{}/{key} returned no upload id", self.config.bucket),
                retryable: true,
            });
        }
        let result = self.upload_parts(digest, &key, &upload_id, &mut buf, &mut data).await;
        let parts = match result {
            Ok(parts) => parts,
            Err(e) => {
                self.abort(&key, &upload_id).await;
                return Err(e);
            }
        };
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .if_none_match("*")
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            Err(e) if already_exists(&e) => {
                self.abort(&key, &upload_id).await;
                Ok(())
            }
            Err(e) => {
                self.abort(&key, &upload_id).await;
                Err(self.error("CompleteMultipartUpload", Some(digest), e))
            }
        }
    }

    /// Streams `buf` then the rest of `data` up as parts, keeping at most
    /// `max_parallel_parts` in flight.
    async fn upload_parts(
        &self,
        digest: &Digest,
        key: &str,
        upload_id: &str,
        buf: &mut BytesMut,
        data: &mut ByteStream,
    ) -> StoreResult<Vec<CompletedPart>> {
        // Very large blobs need larger parts to stay under S3's part limit;
        // the digest's size bounds what a wrapper below compression writes.
        let part_size = self.config.part_size.max(digest.size().div_ceil(MAX_PARTS - 100)) as usize;
        // Parts upload on their own tasks so they progress while the next
        // part is read from `data`; dropping the set (on error) cancels them.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        let mut part_number = 0i32;
        let mut ended = false;
        loop {
            if !ended && buf.len() < part_size {
                ended = Self::fill(data, buf, part_size).await?;
            }
            let take = if buf.len() >= part_size { part_size } else if ended { buf.len() } else { 0 };
            if take > 0 {
                part_number += 1;
                let body = buf.split_to(take).freeze();
                let (this, digest, key, upload_id) = (self.clone(), *digest, key.to_owned(), upload_id.to_owned());
                in_flight.spawn(async move { this.upload_part(&digest, &key, &upload_id, part_number, body).await });
            }
            let idle = take == 0 && ended;
            if in_flight.len() >= self.config.max_parallel_parts || (idle && !in_flight.is_empty()) {
                if let Some(joined) = in_flight.join_next().await {
                    let part = joined.map_err(|e| StoreError::Backend {
                        backend: "s3",
                        message: format!("uploading a part of blob {digest}: task failed: {e}"),
                        retryable: false,
                    })?;
                    done.push(part?);
                }
            } else if idle {
                break;
            }
        }
        done.sort_by_key(|p: &CompletedPart| p.part_number());
        Ok(done)
    }

    async fn upload_part(
        &self,
        digest: &Digest,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        let len = body.len() as i64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(len)
            .body(SdkBody::from(body))
            .send()
            .await
            .map_err(|e| self.error(&format!("UploadPart {part_number}"), Some(digest), e))?;
        Ok(CompletedPart::builder().part_number(part_number).set_e_tag(out.e_tag().map(str::to_owned)).build())
    }

    /// Best effort: an upload left behind is invisible (never completed) and
    /// a bucket lifecycle rule reaps it; we still try so storage is not held.
    async fn abort(&self, key: &str, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(bucket = %self.config.bucket, key, "aborting multipart upload failed: {}", error_chain(&e));
        }
    }

    /// The stored size of a blob, or `None` when absent.
    async fn head(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        match self.client.head_object().bucket(&self.config.bucket).key(self.key(digest)).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error("HEAD", Some(digest), e)),
        }
    }
}

/// `outer: cause: root cause`, each level once: readable where the SDK's
/// own context dump is a page of debug output.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A conditional write lost to an object already there (412), or raced one
/// still being written (409 ConditionalRequestConflict, where the other
/// writer's identical bytes are about to land).
fn already_exists<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    status(err) == Some(412) || err.as_service_error().and_then(|e| e.code()) == Some("PreconditionFailed")
}

/// A GET's body, resumed where it broke off.
///
/// The SDK retries a request until its headers arrive; a body that breaks
/// part way (a reset connection, a proxy that cuts it short) is past its
/// reach. Blobs never change under their name, so the rest can be asked
/// for with a range starting at the first byte not yet delivered, up to
/// `max_attempts - 1` times per body. What the reader sees is the blob's
/// bytes once each, in order, or an error; `VerifyingStore` above still
/// checks the whole.
struct Resuming {
    store: S3Store,
    digest: Digest,
    body: Option<SdkBody>,
    /// Offset in the stored object of the next byte to deliver.
    next: u64,
    /// One past the last byte this read covers; `None` when the server did
    /// not say, and a broken body cannot be resumed.
    end: Option<u64>,
    resumes_left: u32,
    backoff: Duration,
}

fn body_stream(store: &S3Store, digest: Digest, body: SdkBody, start: u64, len: Option<u64>) -> ByteStream {
    let state = Resuming {
        store: store.clone(),
        digest,
        body: Some(body),
        next: start,
        end: len.map(|l| start.saturating_add(l)),
        resumes_left: store.config.max_attempts.saturating_sub(1),
        backoff: Duration::from_millis(store.config.initial_backoff_ms),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let body = st.body.as_mut()?;
            let failure = match body.next().await {
                Some(Ok(chunk)) => {
                    // Never more than the range: a server that sends extra is
                    // cut off here and caught by the length checks above.
                    st.next += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                None => return None,
                Some(Err(e)) => error_chain(&e),
            };
            let Some(end) = st.end else {
                st.body = None;
                let message = format!("reading blob {}: {failure} (length unknown, cannot resume)", st.digest);
                return Some((Err(StoreError::Backend { backend: "s3", message, retryable: true }), st));
            };
            if st.next >= end {
                // Everything arrived; the error came after the last byte.
                return None;
            }
            if st.resumes_left == 0 {
                st.body = None;
                let message = format!("reading blob {}: {failure} (after {} resumed reads)", st.digest, st.store.config.max_attempts - 1);
                return Some((Err(StoreError::Backend { backend: "s3", message, retryable: true }), st));
            }
            st.resumes_left -= 1;
            tracing::warn!(blob = %st.digest, at = st.next, "s3 body broke off ({failure}); resuming with a ranged GET");
            tokio::time::sleep(st.backoff).await;
            st.backoff = (st.backoff * 2).min(Duration::from_millis(st.store.config.max_backoff_ms));
            let range = format!("bytes={}-{}", st.next, end - 1);
            let key = st.store.key(&st.digest);
            match st.store.client.get_object().bucket(&st.store.config.bucket).key(key).range(range).send().await {
                Ok(out) => st.body = Some(out.body),
                Err(e) => {
                    st.body = None;
                    let err = if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || status(&e) == Some(404) {
                        StoreError::NotFound(st.digest)
                    } else {
                        st.store.error("GET (resuming)", Some(&st.digest), e)
                    };
                    return Some((Err(err), st));
                }
            }
        }
    })
    .boxed()
}

/// Parses the total from a `Content-Range: bytes a-b/total` header.
fn range_total(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/').and_then(|(_, total)| total.parse().ok())
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let heads = futures::stream::iter(digests.to_vec())
            .map(|d| {
                let this = self.clone();
                async move { (d, this.head(&d).await) }
            })
            .buffered(self.config.max_parallel_heads);
        let results: Vec<_> = heads.collect().await;
        let mut missing = Vec::new();
        for (d, r) in results {
            if r?.is_none() {
                missing.push(d);
            }
        }
        Ok(missing)
    }

    async fn put(&self, digest: Digest, mut data: ByteStream) -> StoreResult<()> {
        let threshold = self.config.multipart_threshold as usize;
        let mut buf = BytesMut::new();
        let ended = Self::fill(&mut data, &mut buf, threshold.saturating_add(1)).await?;
        if ended && buf.len() <= threshold {
            self.put_single(&digest, buf.freeze()).await
        } else {
            self.put_multipart(&digest, buf, data).await
        }
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        if range.length == Some(0) {
            // S3 cannot express an empty range; check existence and bounds.
            let size = self.head(&digest).await?.ok_or(StoreError::NotFound(digest))?;
            range.resolve(&digest, size)?;
            return Ok(futures::stream::empty().boxed());
        }
        let mut req = self.client.get_object().bucket(&self.config.bucket).key(self.key(&digest));
        if !range.is_full() {
            let spec = match range.length {
                Some(len) => format!("bytes={}-{}", range.offset, range.offset.saturating_add(len) - 1),
                None => format!("bytes={}-", range.offset),
            };
            req = req.range(spec);
        }
        match req.send().await {
            Ok(out) => {
                if let (Some(len), Some(total)) = (range.length, out.content_range().and_then(range_total)) {
                    // S3 clamps a range running past the end; we refuse it.
                    range.resolve(&digest, total)?;
                    debug_assert!(range.offset + len <= total);
                }
                let len = out.content_length().and_then(|l| u64::try_from(l).ok());
                Ok(body_stream(self, digest, out.body, range.offset, len))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || status(&e) == Some(404) => {
                Err(StoreError::NotFound(digest))
            }
            Err(e) if status(&e) == Some(416) => {
                // Offset at or past the end: an empty read when exactly at
                // the end, otherwise out of range.
                let size = self.head(&digest).await?.ok_or(StoreError::NotFound(digest))?;
                range.resolve(&digest, size)?;
                Ok(futures::stream::empty().boxed())
            }
            Err(e) => Err(self.error("GET", Some(&digest), e)),
        }
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.key(&digest))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("DELETE", Some(&digest), e))
    }

    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<crate::ListPage> {
        let limit = limit.clamp(1, 1000);
        let mut start_after = after.map(|d| self.key(&d));
        let mut page = crate::ListPage::default();
        // Keys that are not digests are skipped; a page of only those is
        // followed by the next, so a caller never mistakes it for the end.
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.config.bucket).prefix(&self.blob_prefix).max_keys(limit as i32);
            if let Some(k) = &start_after {
                req = req.start_after(k);
            }
            let out = req.send().await.map_err(|e| self.error("ListObjectsV2", None, e))?;
            for obj in out.contents() {
                let Some(digest) = obj.key().and_then(|k| k.strip_prefix(&self.blob_prefix)).and_then(|n| n.parse::<Digest>().ok()) else {
                    continue;
                };
                let modified = obj.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                let stored_bytes = obj.size().unwrap_or(0).max(0) as u64;
                page.blobs.push(crate::ListedBlob { digest, stored_bytes, modified });
            }
            let truncated = out.is_truncated().unwrap_or(false);
            if !truncated {
                return Ok(page);
            }
            if let Some(last) = page.blobs.last() {
                page.next_after = Some(last.digest);
                return Ok(page);
            }
            match out.contents().last().and_then(|o| o.key()) {
                Some(k) => start_after = Some(k.to_owned()),
                None => return Ok(page),
            }
        }
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&self.blob_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", None, e))?;
            for obj in page.contents() {
                // Keys that do not parse as a digest are not ours; skip them.
                if let Some(d) = obj.key().and_then(|k| k.strip_prefix(&self.blob_prefix)).and_then(|n| n.parse().ok()) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_deployment_prefix() {
        let mut c = S3Config::new("b");
        c.prefix = "/team-a/".into();
        let client = Client::from_conf(
            aws_sdk_s3::Config::builder().behavior_version(BehaviorVersion::latest()).region(Region::new("x")).build(),
        );
        let s = S3Store::with_client(client.clone(), c);
        let d = Digest::of(b"x");
        assert_eq!(s.key(&d), format!("team-a/blobs/{d}"));
        let s = S3Store::with_client(client, S3Config::new("b"));
        assert_eq!(s.key(&d), format!("blobs/{d}"));
    }

    #[test]
    fn config_refuses_parts_below_the_s3_minimum_naming_the_field() {
        let mut c = S3Config::new("b");
        c.part_size = MIB;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("s3.part_size"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut c = S3Config::new("b");
        c.access_key_id = Some(Secret("AKIDSECRET".into()));
        c.secret_access_key = Some(Secret("verysecret".into()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("verysecret") && !shown.contains("AKIDSECRET"), "{shown}");
    }

    #[test]
    fn content_range_total_is_parsed() {
        assert_eq!(range_total("bytes 0-9/100"), Some(100));
        assert_eq!(range_total("bytes */100"), Some(100));
        assert_eq!(range_total("garbage"), None);
    }
}
