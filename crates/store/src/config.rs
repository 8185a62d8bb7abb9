//! Composing a store from configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    CompressedStore, ExistenceCacheStore, ExistenceIndex, FilesystemStore, LruExistenceIndex, RedisExistenceIndex,
    S3Config, S3Store, Secret, Store, StoreError, StoreResult, TieredExistenceIndex, VerifyingStore,
};

/// Where the embedded default keeps its blobs.
pub const DEFAULT_DIR: &str = "/var/lib/rbk/store";

/// One layer of a store stack; wrappers hold the layer below as `inner`.
///
/// Written as the `[store]` table of an rbk TOML file, outermost layer
/// first. The stack a farm runs, an existence cache shared through Redis in
/// front of verification, compression and S3:
///
/// ```
/// let toml = r#"
/// [store]
/// type = "existence_cache"
/// redis_url = "redis://127.0.0.1:6379"   # omit for an in-process cache only
/// ttl_secs = 600
///
/// [store.inner]
/// type = "verify"
///
/// [store.inner.inner]
/// type = "compress"
/// level = 3
///
/// [store.inner.inner.inner]
/// type = "s3"
/// bucket = "rbk-cache"
/// endpoint = "http://127.0.0.1:9000"      # omit for AWS itself
/// region = "us-east-1"
/// prefix = "farm-a"
/// "#;
/// let config = rbk_store::StoreConfig::from_toml(toml, "example.toml").unwrap();
/// assert_eq!(config.describe(), "existence_cache(lru+redis) > verify > compress(3) > s3(rbk-cache)");
/// ```
///
/// Secrets do not belong in the file: credentials come from the standard
/// AWS chain or from the environment (see [`StoreConfig::apply_env`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// Blobs as files under `path`: the embedded default and a worker's
    /// local cache.
    Filesystem {
        #[serde(default = "default_dir")]
        path: PathBuf,
    },
    /// An S3 bucket; every key of [`S3Config`] applies.
    S3(S3Config),
    /// zstd on the way in, refused past the digest's size on the way out.
    Compress {
        #[serde(default = "default_level")]
        level: i32,
        inner: Box<StoreConfig>,
    },
    /// blake3 checked on every put and every full read.
    Verify { inner: Box<StoreConfig> },
    /// Remembers which digests exist, in process and optionally in Redis.
    ExistenceCache {
        /// Shared cache for all nodes; the in-process LRU sits in front.
        #[serde(default)]
        redis_url: Option<Secret>,
        #[serde(default = "default_redis_prefix")]
        redis_prefix: String,
        /// Bound on each Redis call; past it, the store is asked instead.
        #[serde(default = "default_redis_timeout_ms")]
        redis_timeout_ms: u64,
        /// Entries in the in-process LRU.
        #[serde(default = "default_capacity")]
        capacity: usize,
        /// How long "exists" is believed. Garbage collection must only
        /// delete blobs unreferenced for longer than this.
        #[serde(default = "default_ttl_secs")]
        ttl_secs: u64,
        inner: Box<StoreConfig>,
    },
}

fn default_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DIR)
}
fn default_level() -> i32 {
    crate::DEFAULT_ZSTD_LEVEL
}
fn default_redis_prefix() -> String {
    "rbk:".into()
}
fn default_redis_timeout_ms() -> u64 {
    250
}
fn default_capacity() -> usize {
    1 << 20
}
fn default_ttl_secs() -> u64 {
    600
}

/// The file around the `[store]` table; other tables belong to other parts
/// of rbk and are ignored here.
#[derive(Deserialize)]
struct File {
    store: Option<StoreConfig>,
}

impl Default for StoreConfig {
    /// The embedded default: verified, compressed blobs on local disk.
    fn default() -> Self {
        Self::local(default_dir())
    }
}

impl StoreConfig {
    /// Verified, compressed blobs under `path`: no servers needed.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        StoreConfig::Verify {
            inner: Box::new(StoreConfig::Compress {
                level: default_level(),
                inner: Box::new(StoreConfig::Filesystem { path: path.into() }),
            }),
        }
    }

    /// Parses the `[store]` table of a TOML document; `source` names it in
    /// errors. A document without one gets the default.
    pub fn from_toml(text: &str, source: &str) -> StoreResult<Self> {
        let file: File = toml::from_str(text).map_err(|e| StoreError::Config(format!("{source}: {e}")))?;
        let config = file.store.unwrap_or_default();
        config.validate().map_err(|e| match e {
            StoreError::Config(m) => StoreError::Config(format!("{source}: {m}")),
            other => other,
        })?;
        Ok(config)
    }

    /// Reads a TOML file, then applies environment overrides.
    pub fn load(path: &Path) -> StoreResult<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Config(format!("reading {}: {e}", path.display())))?;
        let mut config = Self::from_toml(&text, &path.display().to_string())?;
        config.apply_env(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        config.validate()?;
        Ok(config)
    }

    /// Overrides from the environment, so secrets and per-host endpoints stay
    /// out of files: `RBK_STORE_DIR`; `RBK_S3_ENDPOINT`, `RBK_S3_BUCKET`,
    /// `RBK_S3_REGION`, `RBK_S3_PREFIX`; credentials from
    /// `RBK_S3_ACCESS_KEY_ID`/`RBK_S3_SECRET_ACCESS_KEY`, else
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; `RBK_REDIS_URL`. Each
    /// applies to every layer of its kind.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        match self {
            StoreConfig::Filesystem { path } => {
                if let Some(v) = env("RBK_STORE_DIR") {
                    *path = v.into();
                }
            }
            StoreConfig::S3(s3) => {
                if let Some(v) = env("RBK_S3_ENDPOINT") {
                    s3.endpoint = Some(v);
                }
                if let Some(v) = env("RBK_S3_BUCKET") {
                    s3.bucket = v;
                }
                if let Some(v) = env("RBK_S3_REGION") {
                    s3.region = Some(v);
                }
                if let Some(v) = env("RBK_S3_PREFIX") {
                    s3.prefix = v;
                }
                let id = env("RBK_S3_ACCESS_KEY_ID").or_else(|| env("AWS_ACCESS_KEY_ID"));
                let secret = env("RBK_S3_SECRET_ACCESS_KEY").or_else(|| env("AWS_SECRET_ACCESS_KEY"));
                if let (Some(id), Some(secret)) = (id, secret) {
                    s3.access_key_id = Some(Secret(id));
                    s3.secret_access_key = Some(Secret(secret));
                }
            }
            StoreConfig::ExistenceCache { redis_url, inner, .. } => {
                if let Some(v) = env("RBK_REDIS_URL") {
                    *redis_url = Some(Secret(v));
                }
                inner.apply_env(env);
            }
            StoreConfig::Compress { inner, .. } | StoreConfig::Verify { inner } => inner.apply_env(env),
        }
    }

    /// Checks values the types cannot, naming the offending field.
    pub fn validate(&self) -> StoreResult<()> {
        match self {
            StoreConfig::Filesystem { path } if path.as_os_str().is_empty() => {
                Err(StoreError::Config("filesystem.path: must not be empty".into()))
            }
            StoreConfig::Filesystem { .. } => Ok(()),
            StoreConfig::S3(s3) => s3.validate(),
            StoreConfig::Compress { level, inner } => {
                let range = zstd::compression_level_range();
                if !range.contains(level) {
                    return Err(StoreError::Config(format!(
                        "compress.level: {level} is outside zstd's range {}..={}",
                        range.start(),
                        range.end()
                    )));
                }
                inner.validate()
            }
            StoreConfig::Verify { inner } => inner.validate(),
            StoreConfig::ExistenceCache { capacity, ttl_secs, redis_timeout_ms, inner, .. } => {
                if *capacity == 0 {
                    return Err(StoreError::Config("existence_cache.capacity: must be at least 1".into()));
                }
                if *ttl_secs == 0 {
                    return Err(StoreError::Config("existence_cache.ttl_secs: must be at least 1".into()));
                }
                if *redis_timeout_ms == 0 {
                    return Err(StoreError::Config("existence_cache.redis_timeout_ms: must be at least 1".into()));
                }
                inner.validate()
            }
        }
    }

    /// A one-line summary of the stack, outermost first, for logs.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Filesystem { path } => format!("filesystem({})", path.display()),
            StoreConfig::S3(s3) => format!("s3({})", s3.bucket),
            StoreConfig::Compress { level, inner } => format!("compress({level}) > {}", inner.describe()),
            StoreConfig::Verify { inner } => format!("verify > {}", inner.describe()),
            StoreConfig::ExistenceCache { redis_url, inner, .. } => {
                let kind = if redis_url.is_some() { "lru+redis" } else { "lru" };
                format!("existence_cache({kind}) > {}", inner.describe())
            }
        }
    }
}

/// Builds the configured stack. Connects to nothing that may be down:
/// S3 and Redis are reached on first use.
///
/// Every stack built here checks what it reads against the digest: one
/// configured without a `verify` layer (the coordinator's plain
/// `dir = ...`, a bare `s3` table) gets one outermost. A disk that rots or a
/// body cut short then surfaces as [`StoreError::Corrupt`], never as bytes
/// handed on under a name they do not hash to.
pub async fn build_store(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    config.validate()?;
    let store = Box::pin(build(config)).await?;
    if config.verifies() { Ok(store) } else { Ok(Arc::new(VerifyingStore::new(store))) }
}

impl StoreConfig {
    /// Whether some layer of the stack is a `verify` layer.
    pub fn verifies(&self) -> bool {
        match self {
            StoreConfig::Verify { .. } => true,
            StoreConfig::Filesystem { .. } | StoreConfig::S3(_) => false,
            StoreConfig::Compress { inner, .. } | StoreConfig::ExistenceCache { inner, .. } => inner.verifies(),
        }
    }
}

async fn build(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Filesystem { path } => Arc::new(FilesystemStore::open(path).await?),
        StoreConfig::S3(s3) => Arc::new(S3Store::new(s3.clone()).await?),
        StoreConfig::Compress { level, inner } => Arc::new(CompressedStore::new(Box::pin(build(inner)).await?, *level)?),
        StoreConfig::Verify { inner } => Arc::new(VerifyingStore::new(Box::pin(build(inner)).await?)),
        StoreConfig::ExistenceCache { redis_url, redis_prefix, redis_timeout_ms, capacity, ttl_secs, inner } => {
            let ttl = Duration::from_secs(*ttl_secs);
            let lru: Arc<dyn ExistenceIndex> = Arc::new(LruExistenceIndex::new(*capacity, ttl)?);
            let index = match redis_url {
                Some(url) => {
                    let timeout = Duration::from_millis(*redis_timeout_ms);
                    let redis = Arc::new(RedisExistenceIndex::new(&url.0, redis_prefix, ttl, timeout)?);
                    Arc::new(TieredExistenceIndex::new(vec![lru, redis]))
                }
                None => lru,
            };
            Arc::new(ExistenceCacheStore::new(Box::pin(build(inner)).await?, index))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;
    use bytes::Bytes;

    #[test]
    fn a_document_without_a_store_table_gets_the_local_default() {
        let c = StoreConfig::from_toml("[other]\nx = 1\n", "rbk.toml").unwrap();
        assert_eq!(c, StoreConfig::default());
        assert_eq!(c.describe(), "verify > compress(3) > filesystem(/var/lib/rbk/store)");
    }

    #[test]
    fn an_unknown_field_is_named_with_the_file() {
        let err = StoreConfig::from_toml("[store]\ntype = \"s3\"\nbucket = \"b\"\nbucekt = \"c\"\n", "farm.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("farm.toml") && err.contains("bucekt"), "{err}");
    }

    #[test]
    fn an_unknown_store_type_is_named() {
        let err = StoreConfig::from_toml("[store]\ntype = \"ftp\"\n", "farm.toml").unwrap_err().to_string();
        assert!(err.contains("ftp"), "{err}");
    }

    #[test]
    fn a_missing_inner_store_is_named() {
        let err = StoreConfig::from_toml("[store]\ntype = \"verify\"\n", "farm.toml").unwrap_err().to_string();
        assert!(err.contains("inner"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let toml = "[store]\ntype = \"compress\"\nlevel = 40\ninner = { type = \"filesystem\", path = \"/x\" }\n";
        let err = StoreConfig::from_toml(toml, "farm.toml").unwrap_err().to_string();
        assert!(err.contains("farm.toml") && err.contains("compress.level"), "{err}");
    }

    #[test]
    fn inline_tables_compose_and_defaults_fill_in() {
        let toml = r#"
            [store]
            type = "verify"
            inner = { type = "compress", inner = { type = "s3", bucket = "b", endpoint = "http://h:1" } }
        "#;
        let c = StoreConfig::from_toml(toml, "t").unwrap();
        let StoreConfig::Verify { inner } = &c else { panic!("{c:?}") };
        let StoreConfig::Compress { level, inner } = &**inner else { panic!("{c:?}") };
        assert_eq!(*level, 3);
        let StoreConfig::S3(s3) = &**inner else { panic!("{c:?}") };
        assert_eq!(s3.multipart_threshold, 8 << 20);
        assert_eq!(s3.force_path_style, None);
    }

    #[test]
    fn the_environment_overrides_endpoints_and_supplies_secrets() {
        let mut c = StoreConfig::from_toml(
            "[store]\ntype = \"existence_cache\"\ninner = { type = \"s3\", bucket = \"b\" }\n",
            "t",
        )
        .unwrap();
        let env = |k: &str| match k {
            "RBK_S3_ENDPOINT" => Some("http://10.0.0.1:9000".to_owned()),
            "AWS_ACCESS_KEY_ID" => Some("id".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_owned()),
            "RBK_REDIS_URL" => Some("redis://r:6379".to_owned()),
            _ => None,
        };
        c.apply_env(&env);
        let StoreConfig::ExistenceCache { redis_url, inner, .. } = &c else { panic!() };
        assert_eq!(redis_url.as_ref().unwrap().0, "redis://r:6379");
        let StoreConfig::S3(s3) = &**inner else { panic!() };
        assert_eq!(s3.endpoint.as_deref(), Some("http://10.0.0.1:9000"));
        assert_eq!(s3.secret_access_key.as_ref().unwrap().0, "secret");
        assert!(!format!("{c:?}").contains("secret\""), "secrets leak into Debug: {c:?}");
    }

    #[tokio::test]
    async fn a_plain_filesystem_store_from_configuration_refuses_a_corrupt_blob() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::from_toml(&format!("[store]\ntype = \"filesystem\"\npath = {:?}\n", dir.path()), "t").unwrap();
        assert!(!config.verifies());
        let store = build_store(&config).await.unwrap();
        let d = store.put_bytes(Bytes::from_static(b"hello world")).await.unwrap();
        let path = FilesystemStore::open(dir.path()).await.unwrap().blob_path(&d);
        std::fs::write(&path, b"hello w0rld").unwrap();
        let err = store.get_bytes(d).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
    }

    #[tokio::test]
    async fn a_plain_filesystem_store_refuses_a_truncated_ranged_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = build_store(&StoreConfig::Filesystem { path: dir.path().into() }).await.unwrap();
        let d = store.put_bytes(Bytes::from_static(b"0123456789")).await.unwrap();
        let path = FilesystemStore::open(dir.path()).await.unwrap().blob_path(&d);
        std::fs::write(&path, b"01234").unwrap();
        let err = store.get_range_bytes(d, crate::ByteRange::new(2, 6)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { digest, .. } if digest == d), "{err:?}");
    }

    #[tokio::test]
    async fn the_default_stack_builds_and_round_trips_without_servers() {
        let dir = tempfile::tempdir().unwrap();
        let store = build_store(&StoreConfig::local(dir.path())).await.unwrap();
        let d = store.put_bytes(Bytes::from(vec![7u8; 100_000])).await.unwrap();
        assert_eq!(store.get_bytes(d).await.unwrap(), vec![7u8; 100_000]);
        // Compressed on disk.
        let on_disk = std::fs::metadata(FilesystemStore::open(dir.path()).await.unwrap().blob_path(&d)).unwrap().len();
        assert!(on_disk < 1000, "{on_disk} bytes on disk");
    }
}
