//! A client for the OCI distribution API (any registry: Docker Hub, GHCR,
//! the CNCF `registry`).

mod auth;

pub use auth::{Challenge, parse_www_authenticate};

use std::collections::{HashMap, HashSet};

use crate::{Descriptor, Image, ImageError, ImageRef, OciDigest, OciLayout, Platform, Result};

/// Who to be at a registry.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// Sent as HTTP Basic to registries that ask for it, and to token
    /// servers when a registry asks for a bearer token.
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    // Never print a password, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
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
/// bearer tokens it has been given.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    credentials: HashMap<String, Credentials>,
    insecure: HashSet<String>,
    platform: Platform,
    tokens: std::sync::Arc<std::sync::Mutex<HashMap<(String, String), String>>>,
}

impl RegistryClient {
    /// A client with no credentials that picks linux/amd64 from indexes.
    pub fn new() -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("rbk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Http { url: "(client setup)".into(), source: e })?;
        Ok(RegistryClient {
            http,
            credentials: HashMap::new(),
            insecure: HashSet::new(),
            platform: Platform::linux_amd64(),
            tokens: Default::default(),
        })
    }

    /// Uses `credentials` for `registry` (as written in references, e.g.
    /// `ghcr.io` or `127.0.0.1:5000`).
    pub fn with_credentials(mut self, registry: &str, credentials: Credentials) -> Self {
        self.credentials.insert(registry.to_owned(), credentials);
        self
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

    /// Fetches the manifest `reference` names, resolving an index to this
    /// client's platform; returns its descriptor and bytes (digest
    /// checked).
    pub async fn fetch_manifest(&self, reference: &ImageRef) -> Result<(Descriptor, Vec<u8>)> {
        let _ = reference;
        Err(ImageError::invalid("fetch_manifest", "not implemented yet"))
    }

    /// Pulls `reference` into `layout`: manifest, config and every layer
    /// blob not already there, each streamed to a temporary file and
    /// checked against its digest and size before it becomes visible. The
    /// image is listed in `index.json` under its reference string.
    pub async fn pull(&self, reference: &ImageRef, layout: &OciLayout) -> Result<Image> {
        let _ = (reference, layout);
        Err(ImageError::invalid("pull", "not implemented yet"))
    }

    /// Streams one blob of `reference`'s repository into `layout` (a no-op
    /// when it is already there).
    pub async fn pull_blob(&self, reference: &ImageRef, blob: &Descriptor, layout: &OciLayout) -> Result<()> {
        let _ = (reference, blob, layout);
        Err(ImageError::invalid("pull_blob", "not implemented yet"))
    }

    /// Whether the repository of `reference` holds `digest`.
    pub async fn blob_exists(&self, reference: &ImageRef, digest: &OciDigest) -> Result<bool> {
        let _ = (reference, digest);
        Err(ImageError::invalid("blob_exists", "not implemented yet"))
    }

    /// Pushes the image `manifest` from `layout` to `dest`: blobs the
    /// registry has are skipped (HEAD), others are mounted from
    /// `opts.mount_from` when the registry allows, else uploaded; the
    /// manifest goes last so the tag never points at missing blobs.
    pub async fn push(&self, layout: &OciLayout, manifest: &Descriptor, dest: &ImageRef, opts: &PushOptions) -> Result<PushReport> {
        let _ = (layout, manifest, dest, opts);
        Err(ImageError::invalid("push", "not implemented yet"))
    }
}
