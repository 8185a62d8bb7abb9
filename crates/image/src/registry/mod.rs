//! A client for the OCI distribution API (any registry: Docker Hub, GHCR,
//! the CNCF `registry`).

mod auth;
mod docker_config;

pub use auth::{Challenge, parse_www_authenticate};
pub use docker_config::DockerConfig;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode, header};

use crate::model::{Index, Manifest, from_json, media_type};
use crate::{Descriptor, Image, ImageError, ImageRef, OciDigest, OciLayout, Platform, Result};

/// Manifests larger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Layers fetched at once during a pull.
const PARALLEL_BLOBS: usize = 3;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Who to be at a registry.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// Sent as HTTP Basic to registries that ask for it, and to token
    /// servers when a registry asks for a bearer token.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in a docker config, or a
    /// credential helper's `<token>` answer), exchanged at the registry's
    /// token server for a bearer token.
    IdentityToken { username: String, token: String },
}

impl std::fmt::Debug for Credentials {
    // Never print a password, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken { username, .. } => write!(f, "IdentityToken({username}, <redacted>)"),
        }
    }
}

/// How [`RegistryClient::push`] may save work.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories on the destination registry that may already hold the
    /// blobs (e.g. the base image's): blobs missing from the destination are
    /// first offered as cross-repository mounts from these.
    pub mount_from: Vec<String>,
    /// Upload blobs larger than this in chunks of this size (PATCH with
    /// Content-Range); `None` uploads each blob in one PUT.
    pub chunk_size: Option<u64>,
}

/// What a push did, blob by blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub manifest_digest: Option<OciDigest>,
    /// Blobs the registry already had (HEAD said so).
    pub skipped: Vec<OciDigest>,
    /// Blobs the registry linked from another repository.
    pub mounted: Vec<OciDigest>,
    /// Blobs whose bytes were sent.
    pub uploaded: Vec<OciDigest>,
}

/// Talks to registries. Cheap to clone; holds a connection pool and the
/// `Authorization` headers it has earned (per registry and scope).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    credentials: HashMap<String, Credentials>,
    /// Asked for registries `credentials` does not name, on their first
    /// 401 (so a helper runs only for registries that want credentials).
    docker_config: Option<Arc<DockerConfig>>,
    insecure: HashSet<String>,
    platform: Platform,
    auth: Arc<Mutex<HashMap<(String, String), String>>>,
}

/// The access a request needs; bearer tokens are issued per scope.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
}

impl RegistryClient {
    /// A client with no credentials that picks linux/amd64 from indexes.
    pub fn new() -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("rbk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Http { url: "(client setup)".into(), source: e })?;
        Ok(RegistryClient { http, credentials: HashMap::new(), docker_config: None, insecure: HashSet::new(), platform: Platform::linux_amd64(), auth: Default::default() })
    }

    /// Uses `credentials` for `registry` (as written in references, e.g.
    /// `ghcr.io` or `127.0.0.1:5000`).
    pub fn with_credentials(mut self, registry: &str, credentials: Credentials) -> Self {
        self.credentials.insert(registry.to_owned(), credentials);
        self
    }

    /// Looks up registries without explicit credentials in `config`
    /// (its `auths`, credential helpers and `credsStore`).
    pub fn with_docker_config(mut self, config: DockerConfig) -> Self {
        self.docker_config = Some(Arc::new(config));
        self
    }

    /// The credentials for `registry`: explicit ones, else the docker
    /// config's (which may run a credential helper), else anonymous.
    async fn credentials_for(&self, registry: &str) -> Result<Credentials> {
        if let Some(c) = self.credentials.get(registry) {
            return Ok(c.clone());
        }
        let Some(config) = self.docker_config.clone() else { return Ok(Credentials::Anonymous) };
        let registry = registry.to_owned();
        tokio::task::spawn_blocking(move || config.credentials_for(&registry))
            .await
            .map_err(|e| ImageError::invalid("credential lookup", e.to_string()))?
    }

    /// Speaks plain HTTP to `registry`. Loopback registries are insecure
    /// without this; every other registry needs it to skip TLS.
    pub fn with_insecure(mut self, registry: &str) -> Self {
        self.insecure.insert(registry.to_owned());
        self
    }

    /// Picks `platform` from image indexes.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    fn repo_url(&self, r: &ImageRef) -> String {
        let scheme = if self.insecure.contains(&r.registry) || r.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", r.api_host(), r.repository)
    }

    /// Sends a request, answering a 401 with the credentials or token the
    /// challenge asks for and trying once more. `make` builds the request
    /// (it is called again for the retry, so a body can be re-read).
    async fn send(
        &self,
        r: &ImageRef,
        access: Access,
        extra_pull_repos: &[String],
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let mut scopes = vec![format!("repository:{}:{}", r.repository, if access == Access::Push { "pull,push" } else { "pull" })];
        scopes.extend(extra_pull_repos.iter().map(|repo| format!("repository:{repo}:pull")));
        let key = (r.registry.clone(), scopes.join(" "));
        let cached = self.auth.lock().expect("auth cache lock").get(&key).cloned();
        let mut req = make(&self.http)?;
        if let Some(h) = &cached {
            req = req.header(header::AUTHORIZATION, h);
        }
        let resp = self.execute(req).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let url = resp.url().to_string();
        let challenge_text = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        if challenge_text.is_empty() {
            return Err(ImageError::Auth { registry: r.registry.clone(), reason: format!("{url} answered 401 without a WWW-Authenticate challenge") });
        }
        let challenges = parse_www_authenticate(&challenge_text)?;
        let auth = self.answer(r, &challenges, &scopes).await?;
        self.auth.lock().expect("auth cache lock").insert(key, auth.clone());
        let resp = self.execute(make(&self.http)?.header(header::AUTHORIZATION, auth)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(ImageError::Auth { registry: r.registry.clone(), reason: format!("{url} refused the credentials (401)") });
        }
        Ok(resp)
    }

    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let req = req.build().map_err(|e| ImageError::Http { url: e.url().map(|u| u.to_string()).unwrap_or_default(), source: e })?;
        let url = req.url().to_string();
        self.http.execute(req).await.map_err(|e| ImageError::Http { url, source: e })
    }

    /// Produces the `Authorization` value a challenge asks for.
    async fn answer(&self, r: &ImageRef, challenges: &[Challenge], scopes: &[String]) -> Result<String> {
        let creds = self.credentials_for(&r.registry).await?;
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = c.params.get("realm").ok_or_else(|| ImageError::Auth { registry: r.registry.clone(), reason: "bearer challenge without a realm".into() })?;
            let mut url = reqwest::Url::parse(realm)
                .map_err(|e| ImageError::Auth { registry: r.registry.clone(), reason: format!("token realm {realm:?} is not a URL: {e}") })?;
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = c.params.get("service") {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            let req = match &creds {
                Credentials::Basic { username, password } => self.http.get(url.clone()).basic_auth(username, Some(password)),
                Credentials::Anonymous => self.http.get(url.clone()),
                // Docker's OAuth2 flow: the refresh token for an access token.
                Credentials::IdentityToken { token, .. } => {
                    let mut form = reqwest::Url::parse("http://form.invalid/").expect("a constant URL");
                    {
                        let mut q = form.query_pairs_mut();
                        q.append_pair("grant_type", "refresh_token").append_pair("refresh_token", token).append_pair("client_id", "rbk");
                        if let Some(s) = c.params.get("service") {
                            q.append_pair("service", s);
                        }
                        q.append_pair("scope", &scopes.join(" "));
                    }
                    let mut post = url.clone();
                    post.set_query(None);
                    self.http
                        .post(post)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.query().unwrap_or_default().to_owned())
                }
            };
            let resp = self.execute(req).await?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| ImageError::Http { url: url.to_string(), source: e })?;
            if !status.is_success() {
                return Err(ImageError::Auth {
                    registry: r.registry.clone(),
                    reason: format!("token server {} answered HTTP {}: {}", url.as_str().split('?').next().unwrap_or(""), status.as_u16(), snippet(&body)),
                });
            }
            #[derive(serde::Deserialize)]
            struct TokenResponse {
                token: Option<String>,
                access_token: Option<String>,
            }
            let t: TokenResponse = from_json(&body, &format!("token response from {realm}"))?;
            let token = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| ImageError::Auth {
                registry: r.registry.clone(),
                reason: format!("token response from {realm} holds no token"),
            })?;
            return Ok(format!("Bearer {token}"));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match creds {
                Credentials::Basic { username, password } => {
                    Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))))
                }
                Credentials::Anonymous => Err(ImageError::Auth { registry: r.registry.clone(), reason: "the registry wants a username and password; none configured".into() }),
                Credentials::IdentityToken { .. } => {
                    Err(ImageError::Auth { registry: r.registry.clone(), reason: "the registry wants a username and password; the configured identity token works only with token servers".into() })
                }
            };
        }
        Err(ImageError::Auth {
            registry: r.registry.clone(),
            reason: format!("unsupported authentication scheme(s): {}", challenges.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>().join(", ")),
        })
    }

    /// Fetches a manifest or index by tag or digest; returns media type and
    /// bytes after checking the digest (when the reference pins one, and
    /// against the registry's `Docker-Content-Digest`).
    async fn get_manifest_raw(&self, r: &ImageRef, reference: &str, expected: Option<&OciDigest>) -> Result<(String, Vec<u8>)> {
        let url = format!("{}/manifests/{reference}", self.repo_url(r));
        let resp = self.send(r, Access::Pull, &[], |c| Ok(c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT))).await?;
        let resp = check(resp, &url).await?;
        let header_digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<OciDigest>().ok());
        let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.split(';').next().unwrap_or("").trim().to_owned());
        if resp.content_length().is_some_and(|n| n as usize > MAX_MANIFEST_BYTES) {
            return Err(ImageError::invalid(format!("manifest {url}"), format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let bytes = resp.bytes().await.map_err(|e| ImageError::Http { url: url.clone(), source: e })?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ImageError::invalid(format!("manifest {url}"), format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let actual = OciDigest::of(&bytes);
        if let Some(want) = expected {
            want.verify(&actual, || format!("manifest {url}"))?;
        }
        if let Some(h) = header_digest {
            h.verify(&actual, || format!("manifest {url} (Docker-Content-Digest header)"))?;
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let probe: Probe = from_json(&bytes, &format!("manifest {url}"))?;
        let mt = probe
            .media_type
            .or(content_type.filter(|c| media_type::is_manifest(c) || media_type::is_index(c)))
            .ok_or_else(|| ImageError::invalid(format!("manifest {url}"), "no mediaType in the document or the Content-Type header"))?;
        Ok((mt, bytes.to_vec()))
    }

    /// Fetches the manifest `reference` names, resolving an index to this
    /// client's platform. Returns the manifest's descriptor and bytes, and
    /// the index's when there was one.
    pub async fn fetch_manifest(&self, reference: &ImageRef) -> Result<(Descriptor, Vec<u8>, Option<(Descriptor, Vec<u8>)>)> {
        let (mt, bytes) = self.get_manifest_raw(reference, &reference.reference(), reference.digest.as_ref()).await?;
        if media_type::is_index(&mt) {
            let index: Index = from_json(&bytes, &format!("index {reference}"))?;
            let index_desc = Descriptor::for_bytes(mt, &bytes);
            let chosen = index.select(&self.platform, &format!("index {reference}"))?.clone();
            let (cmt, cbytes) = self.get_manifest_raw(reference, &chosen.digest.to_string(), Some(&chosen.digest)).await?;
            if !media_type::is_manifest(&cmt) {
                return Err(ImageError::invalid(format!("manifest {} of {reference}", chosen.digest), format!("unsupported media type {cmt:?}")));
            }
            let mut desc = Descriptor::for_bytes(cmt, &cbytes);
            desc.platform = chosen.platform;
            return Ok((desc, cbytes, Some((index_desc, bytes))));
        }
        if !media_type::is_manifest(&mt) {
            return Err(ImageError::invalid(format!("manifest of {reference}"), format!("unsupported media type {mt:?}")));
        }
        Ok((Descriptor::for_bytes(mt, &bytes), bytes, None))
    }

    /// Pulls `reference` into `layout`: manifest, config and every layer
    /// blob not already there, each streamed to a temporary file and
    /// checked against its digest and size before it becomes visible. The
    /// image is listed in `index.json` under its reference string.
    pub async fn pull(&self, reference: &ImageRef, layout: &OciLayout) -> Result<Image> {
        let (desc, bytes, _index) = self.fetch_manifest(reference).await?;
        let manifest: Manifest = from_json(&bytes, &format!("manifest {}", desc.digest))?;
        self.pull_blob(reference, &manifest.config, layout).await?;
        futures::stream::iter(manifest.layers.iter())
            .map(|l| self.pull_blob(reference, l, layout))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        layout.write_blob(&bytes)?;
        let image = Image::from_manifest_bytes(desc.clone(), &bytes, |d| layout.read_blob(d))?;
        layout.add_manifest(desc, Some(&reference.to_string()))?;
        Ok(image)
    }

    /// Streams one blob of `reference`'s repository into `layout` (a no-op
    /// when it is already there).
    pub async fn pull_blob(&self, reference: &ImageRef, blob: &Descriptor, layout: &OciLayout) -> Result<()> {
        if layout.has_blob(&blob.digest) {
            return Ok(());
        }
        let url = format!("{}/blobs/{}", self.repo_url(reference), blob.digest);
        let resp = self.send(reference, Access::Pull, &[], |c| Ok(c.get(&url))).await?;
        let resp = check(resp, &url).await?;
        let mut w = layout.blob_writer()?;
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Http { url: url.clone(), source: e })?;
            got += chunk.len() as u64;
            if got > blob.size {
                return Err(ImageError::SizeMismatch { what: format!("blob {url}"), expected: blob.size, actual: got });
            }
            w.write_all(&chunk).map_err(|e| ImageError::io(format!("writing blob {} into {}", blob.digest, layout.root().display()), e))?;
        }
        w.commit(Some((&blob.digest, blob.size))).map_err(|e| match e {
            ImageError::DigestMismatch { expected, actual, .. } => ImageError::DigestMismatch { what: format!("blob {url}"), expected, actual },
            ImageError::SizeMismatch { expected, actual, .. } => ImageError::SizeMismatch { what: format!("blob {url}"), expected, actual },
            e => e,
        })?;
        Ok(())
    }

    /// Whether the repository of `reference` holds `digest`.
    pub async fn blob_exists(&self, reference: &ImageRef, digest: &OciDigest) -> Result<bool> {
        self.blob_exists_as(reference, digest, Access::Pull).await
    }

    async fn blob_exists_as(&self, reference: &ImageRef, digest: &OciDigest, access: Access) -> Result<bool> {
        let url = format!("{}/blobs/{digest}", self.repo_url(reference));
        let resp = self.send(reference, access, &[], |c| Ok(c.head(&url))).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            // Any other status is an error; `check` turns it into one.
            _ => check(resp, &url).await.map(|_| true),
        }
    }

    /// Pushes the image `manifest` (a manifest or an index) from `layout`
    /// to `dest`: blobs the registry has are skipped (HEAD), others are
    /// mounted from `opts.mount_from` when the registry allows, else
    /// uploaded; manifests go last so the tag never points at missing
    /// blobs. The manifest is tagged with `dest`'s tag, or put by digest.
    pub async fn push(&self, layout: &OciLayout, manifest: &Descriptor, dest: &ImageRef, opts: &PushOptions) -> Result<PushReport> {
        let mut report = PushReport::default();
        let bytes = layout.read_blob(&manifest.digest)?;
        if media_type::is_index(&manifest.media_type) {
            let index: Index = from_json(&bytes, &format!("index {}", manifest.digest))?;
            for child in &index.manifests {
                if media_type::is_manifest(&child.media_type) && layout.has_blob(&child.digest) {
                    let child_bytes = layout.read_blob(&child.digest)?;
                    self.push_manifest_blobs(layout, &child_bytes, &child.digest, dest, opts, &mut report).await?;
                    self.put_manifest(dest, &child.digest.to_string(), &child.media_type, &child_bytes).await?;
                }
            }
        } else {
            self.push_manifest_blobs(layout, &bytes, &manifest.digest, dest, opts, &mut report).await?;
        }
        let reference = match (&dest.tag, &dest.digest) {
            (Some(t), _) => t.clone(),
            (None, _) => manifest.digest.to_string(),
        };
        if let Some(d) = &dest.digest {
            d.verify(&manifest.digest, || format!("pushing to {dest}: the image"))?;
        }
        self.put_manifest(dest, &reference, &manifest.media_type, &bytes).await?;
        report.manifest_digest = Some(manifest.digest);
        Ok(report)
    }

    async fn push_manifest_blobs(
        &self,
        layout: &OciLayout,
        bytes: &[u8],
        digest: &OciDigest,
        dest: &ImageRef,
        opts: &PushOptions,
        report: &mut PushReport,
    ) -> Result<()> {
        let m: Manifest = from_json(bytes, &format!("manifest {digest}"))?;
        for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
            if self.blob_exists_as(dest, &blob.digest, Access::Push).await? {
                report.skipped.push(blob.digest);
                continue;
            }
            if !layout.has_blob(&blob.digest) {
                return Err(ImageError::invalid(format!("blob {}", blob.digest), format!("is not in {} and not at {}", layout.root().display(), dest.name())));
            }
            let mut upload_url = None;
            for from in &opts.mount_from {
                if from == &dest.repository {
                    continue;
                }
                let url = format!("{}/blobs/uploads/?mount={}&from={}", self.repo_url(dest), blob.digest, from);
                let resp = self.send(dest, Access::Push, std::slice::from_ref(from), |c| Ok(c.post(&url).header(header::CONTENT_LENGTH, 0))).await?;
                match resp.status() {
                    StatusCode::CREATED => {
                        report.mounted.push(blob.digest);
                        break;
                    }
                    StatusCode::ACCEPTED => {
                        // The registry could not mount and opened an upload instead.
                        upload_url = Some(location(&resp, &url)?);
                        break;
                    }
                    _ => {
                        check(resp, &url).await?;
                    }
                }
            }
            if report.mounted.last() == Some(&blob.digest) {
                continue;
            }
            let upload_url = match upload_url {
                Some(u) => u,
                None => self.start_upload(dest).await?,
            };
            self.upload(dest, layout, blob, upload_url, opts.chunk_size).await?;
            report.uploaded.push(blob.digest);
        }
        Ok(())
    }

    async fn start_upload(&self, dest: &ImageRef) -> Result<String> {
        let url = format!("{}/blobs/uploads/", self.repo_url(dest));
        let resp = self.send(dest, Access::Push, &[], |c| Ok(c.post(&url).header(header::CONTENT_LENGTH, 0))).await?;
        let resp = check(resp, &url).await?;
        location(&resp, &url)
    }

    async fn upload(&self, dest: &ImageRef, layout: &OciLayout, blob: &Descriptor, mut url: String, chunk: Option<u64>) -> Result<()> {
        let path = layout.blob_path(&blob.digest);
        let with_digest = |u: &str| format!("{u}{}digest={}", if u.contains('?') { '&' } else { '?' }, blob.digest);
        match chunk {
            Some(size) if size > 0 && blob.size > size => {
                let mut offset = 0u64;
                while offset < blob.size {
                    let len = size.min(blob.size - offset);
                    let data = read_range(&path, offset, len)?;
                    let u = url.clone();
                    let resp = self
                        .send(dest, Access::Push, &[], |c| {
                            Ok(c.request(Method::PATCH, &u)
                                .header(header::CONTENT_TYPE, "application/octet-stream")
                                .header(header::CONTENT_RANGE, format!("{}-{}", offset, offset + len - 1))
                                .header(header::CONTENT_LENGTH, len)
                                .body(data.clone()))
                        })
                        .await?;
                    let resp = check(resp, &u).await?;
                    url = location(&resp, &u)?;
                    offset += len;
                }
                let u = with_digest(&url);
                let resp = self.send(dest, Access::Push, &[], |c| Ok(c.put(&u).header(header::CONTENT_LENGTH, 0))).await?;
                check(resp, &u).await?;
            }
            _ => {
                let u = with_digest(&url);
                let resp = self
                    .send(dest, Access::Push, &[], |c| {
                        let f = std::fs::File::open(&path).map_err(|e| ImageError::io(format!("opening blob {}", path.display()), e))?;
                        let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 1 << 20);
                        Ok(c.put(&u)
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .header(header::CONTENT_LENGTH, blob.size)
                            .body(reqwest::Body::wrap_stream(stream)))
                    })
                    .await?;
                check(resp, &u).await?;
            }
        }
        Ok(())
    }

    async fn put_manifest(&self, dest: &ImageRef, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let url = format!("{}/manifests/{reference}", self.repo_url(dest));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(dest, Access::Push, &[], |c| Ok(c.put(&url).header(header::CONTENT_TYPE, media_type).body(body.clone())))
            .await?;
        check(resp, &url).await?;
        Ok(())
    }
}

fn read_range(path: &std::path::Path, offset: u64, len: u64) -> Result<bytes::Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| ImageError::io(format!("opening blob {}", path.display()), e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| ImageError::io(format!("seeking in blob {}", path.display()), e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| ImageError::io(format!("reading blob {}", path.display()), e))?;
    Ok(buf.into())
}

/// The absolute URL in a response's `Location` header.
fn location(resp: &reqwest::Response, url: &str) -> Result<String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ImageError::invalid(format!("registry response from {url}"), "no Location header"))?;
    let joined = resp.url().join(loc).map_err(|e| ImageError::invalid(format!("registry response from {url}"), format!("Location {loc:?}: {e}")))?;
    Ok(joined.to_string())
}

/// Turns a non-success response into an error carrying the registry's
/// message.
async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    Err(ImageError::Registry { url: url.to_owned(), status, body: snippet(&body) })
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.len() > 400 { format!("{}…", &s[..s.floor_char_boundary(400)]) } else { s.to_owned() }
}
