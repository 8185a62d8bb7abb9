//! What the caller decides about a build, and how base images are resolved.

use std::collections::BTreeMap;

use crate::dockerignore::Dockerignore;

/// What the caller decides about a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's name, for error messages.
    pub file_name: String,
    /// `--target`: build this stage (by name) instead of the last one.
    pub target: Option<String>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The platform built for, `os/arch[/variant]` (`TARGETPLATFORM`).
    pub target_platform: String,
    /// The platform building (`BUILDPLATFORM`).
    pub build_platform: String,
    /// Cache mount ids are prefixed with this, so that one project can never
    /// read or poison another's cache.
    pub namespace: String,
    /// The ignore file (see [`Dockerignore::load`]).
    pub dockerignore: Dockerignore,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            file_name: "Dockerfile".into(),
            target: None,
            build_args: BTreeMap::new(),
            target_platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
            namespace: "default".into(),
            dockerignore: Dockerignore::default(),
        }
    }
}

/// Maps a base image reference to its manifest digest, so that keys change
/// when a tag moves. Without one, keys use the reference string.
pub trait BaseResolver {
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Option<String>;

    /// The image config's environment, so that `ENV PATH=/x:$PATH` and the
    /// like expand as Docker expands them, and RUN sees the full env. When
    /// unknown (`None`), image variables expand as unset, except `$PATH`,
    /// which takes Docker's default.
    fn env(&self, _reference: &str, _platform: Option<&str>) -> Option<Vec<(String, String)>> {
        None
    }

    /// The content digest (`sha256:<hex>`) an `ADD <http(s) url>` without
    /// `--checksum` fetches in this build, re-validated by the caller on
    /// every build. `None`: unknown, the key holds only the URL (what
    /// `rbk graph` shows without `--resolve`).
    fn url(&self, _url: &str) -> Option<String> {
        None
    }

    /// The commit an `ADD <git url>` (`URL#ref:subdir`) resolves to in this
    /// build. `None`: unknown, the key holds only the URL.
    fn git(&self, _url: &str) -> Option<String> {
        None
    }

    /// The image config's `OnBuild` triggers (instruction text each), run
    /// first in a stage built on the image. `None` when unknown.
    fn onbuild(&self, _reference: &str, _platform: Option<&str>) -> Option<Vec<String>> {
        None
    }
}

impl BaseResolver for BTreeMap<String, String> {
    fn resolve(&self, reference: &str, _platform: Option<&str>) -> Option<String> {
        self.get(reference).cloned()
    }
}

/// No resolver: every base image is keyed by its reference.
impl BaseResolver for () {
    fn resolve(&self, _: &str, _: Option<&str>) -> Option<String> {
        None
    }
}
