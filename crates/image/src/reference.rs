use std::fmt;
use std::str::FromStr;

use crate::{ImageError, OciDigest, Result};

/// Docker Hub's name in references, and the host its API answers on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference, `[registry/]repository[:tag][@digest]`, with
/// Docker's defaults applied so `busybox` means
/// `docker.io/library/busybox:latest`: users type references the way they
/// do for `docker pull`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<OciDigest>,
}

impl ImageRef {
    /// The tag or digest to ask the registry for: the digest when pinned
    /// (it cannot move), else the tag, else `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host the registry API answers on (Docker Hub's differs from its
    /// name in references).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }

    /// Loopback registries speak plain HTTP unless told otherwise, as
    /// dockerd does; every other registry must use HTTPS.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
            _ => &self.registry,
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.")
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef { tag: Some(tag.to_owned()), digest: None, ..self.clone() }
    }

    /// The same repository pinned to a digest.
    pub fn with_digest(&self, digest: OciDigest) -> ImageRef {
        ImageRef { digest: Some(digest), ..self.clone() }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::Reference { reference: s.to_owned(), reason: reason.to_owned() };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<OciDigest>().map_err(|_| bad("digest must be sha256:<64 hex digits>"))?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => (first.to_owned(), p),
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        // A tag is a ':' after the last '/', so a registry port is not one.
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
            _ => (path, None),
        };
        if repo.is_empty() {
            return Err(bad("repository is empty"));
        }
        let repo_ok = repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        });
        if !repo_ok {
            return Err(bad("repository path components must be lowercase letters, digits, '.', '_' or '-'"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
            }
        }
        let repository = if registry == DOCKER_HUB && !repo.contains('/') { format!("library/{repo}") } else { repo.to_owned() };
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(ImageRef { registry, repository, tag, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_means_docker_hub_library_latest() {
        let r: ImageRef = "busybox".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        let r: ImageRef = "127.0.0.1:5000/team/app".parse().unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "team/app", Some("latest")));
        assert!(r.is_loopback());
        assert!("localhost/app:1".parse::<ImageRef>().unwrap().is_loopback());
    }

    #[test]
    fn digest_pins_the_reference() {
        let d = OciDigest::of(b"x");
        let r: ImageRef = format!("ghcr.io/o/r:v1@{d}").parse().unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), d.to_string());
        let r: ImageRef = format!("ghcr.io/o/r@{d}").parse().unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn malformed_references_are_refused_with_the_reason() {
        for s in ["", "UPPER/case", "a//b", "repo:bad tag", "repo@sha256:zz", "repo:"] {
            let e = s.parse::<ImageRef>().unwrap_err().to_string();
            assert!(e.contains(&format!("{s:?}")), "{e}");
        }
    }
}
