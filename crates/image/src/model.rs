//! The JSON documents of an image: descriptors, manifests, indexes and the
//! image config, for both OCI and Docker schema 2 media types (the two are
//! field-for-field the same; only the media type strings differ).
//!
//! Fields rbk does not model are kept in `extra` so a document read and
//! written back loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ImageError, OciDigest, Result};

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Media types that name a single-platform manifest.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }
    /// Media types that name a multi-platform index.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// Points at a blob: what it is, its digest and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: OciDigest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: OciDigest, size: u64) -> Self {
        Descriptor { media_type: media_type.into(), digest, size, urls: vec![], annotations: BTreeMap::new(), platform: None, artifact_type: None }
    }

    /// The descriptor of a JSON document held in memory.
    pub fn for_bytes(media_type: impl Into<String>, bytes: &[u8]) -> Self {
        Self::new(media_type, OciDigest::of(bytes), bytes.len() as u64)
    }
}

/// The OS and CPU an image runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl Platform {
    /// The default when picking from an index: rbk's workers are linux/amd64.
    pub fn linux_amd64() -> Self {
        Platform { architecture: "amd64".into(), os: "linux".into(), variant: None, os_version: None, os_features: vec![] }
    }

    /// Whether an index entry for `other` can run here. A missing variant on
    /// either side matches any (most indexes omit `v8` for arm64).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A single-platform image: its config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// An OCI manifest for a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config,
            layers,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// A list of manifests, one per platform (OCI index or Docker manifest list);
/// also the `index.json` of an OCI layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Index {
    pub fn empty() -> Self {
        Index { schema_version: 2, media_type: Some(media_type::OCI_INDEX.into()), manifests: vec![], annotations: BTreeMap::new(), extra: BTreeMap::new() }
    }

    /// The manifest for `platform`, or an error listing what is offered.
    pub fn select(&self, platform: &Platform, what: &str) -> Result<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| media_type::is_manifest(&d.media_type) && d.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| ImageError::NoPlatform {
                what: what.to_owned(),
                wanted: platform.to_string(),
                available: self
                    .manifests
                    .iter()
                    .map(|d| d.platform.as_ref().map_or_else(|| "(no platform)".to_owned(), |p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The image config blob: how to run the image and what its layers are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// A config for an image with no layers yet, for `platform`.
    pub fn empty(platform: &Platform) -> Self {
        ImageConfig {
            created: None,
            author: None,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: ContainerConfig::default(),
            rootfs: RootFs { kind: "layers".into(), diff_ids: vec![] },
            history: vec![],
            extra: BTreeMap::new(),
        }
    }
}

/// How a container of the image runs (the `config` member). Docker's
/// extensions (healthcheck, shell, onbuild) are included because users
/// coming from `docker build` expect them to survive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: OptionString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

type OptionString = Option<String>;

impl ContainerConfig {
    /// The value of `name` in `Env`, if set.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.as_ref()?.iter().rev().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    /// Sets `name=value` in `Env`, replacing an earlier value.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        env.retain(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) != name);
        env.push(format!("{name}={value}"));
    }
}

/// Docker's HEALTHCHECK; durations are nanoseconds, as Docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The uncompressed digests of the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<OciDigest>,
}

/// One step of how the image was built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for steps that made no layer (ENV, CMD, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Parses a JSON document, naming `what` in the error.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::json(what.to_owned(), e))
}

/// Serialises a document the way rbk writes every blob: compact JSON, so the
/// same document always has the same digest.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("image documents always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_round_trips_without_losing_unknown_fields() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Healthcheck":{"Test":["CMD","true"],"Interval":1000},"StopSignal":"SIGKILL","Custom":1},"rootfs":{"type":"layers","diff_ids":[]},"container":"abc"}"#;
        let c: ImageConfig = from_json(json, "config").unwrap();
        assert_eq!(c.config.env_var("PATH"), Some("/bin"));
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGKILL"));
        let back: serde_json::Value = serde_json::from_slice(&to_json(&c)).unwrap();
        assert_eq!(back["container"], "abc");
        assert_eq!(back["config"]["Custom"], 1);
        assert_eq!(back["config"]["Healthcheck"]["Interval"], 1000);
    }

    #[test]
    fn index_selection_names_what_is_offered() {
        let mut idx = Index::empty();
        let mut d = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"{}");
        d.platform = Some(Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()), os_version: None, os_features: vec![] });
        idx.manifests.push(d);
        let err = idx.select(&Platform::linux_amd64(), "index x").unwrap_err().to_string();
        assert!(err.contains("linux/arm64/v8") && err.contains("linux/amd64"), "{err}");
    }
}
