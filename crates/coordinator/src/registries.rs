//! The registries the farm pulls base images from and pushes results to
//! (issue #23; `service/images.rs`), and whose credentials it uses.
//!
//! ```toml
//! [registries]
//! auth_dir = "registry-auth"   # <tenant>.json: a docker config per tenant
//!                              # (`auths`, `credHelpers`, `credsStore`);
//!                              # relative to the config file
//! insecure = ["registry.internal:5000"]  # plain HTTP (loopback always is)
//! max_transfers = 4            # pulls and pushes at once
//! [registries.mirrors]         # pulls try these first, in order, then the
//! "docker.io" = ["mirror.internal:5000"]  # registry itself (pushes never)
//! ```
//!
//! Credentials for a call come from the request (a client's own, sent for
//! that call) first, then the tenant's file. The file is read at each call,
//! so a changed Kubernetes Secret applies to the next pull or push without
//! a restart. Credentials live in memory for the call only: never logged
//! (`Credentials`' and `RegistryAuth`'s Debug redact), stored, replicated
//! or put in Redis.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbk_image::registry::DockerConfig;
use rbk_image::{Credentials, Platform, RegistryClient};
use rbk_proto::images::RegistryAuth;
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::farm_images::FarmImageError;

fn default_max_transfers() -> usize {
    4
}

/// `[registries]` of the coordinator config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesSection {
    /// A directory of `<tenant>.json` docker configs; absent: tenants use
    /// the credentials their clients send, or none.
    #[serde(default)]
    pub auth_dir: Option<PathBuf>,
    /// Registries spoken to over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Pulls and pushes the coordinator runs at once; more wait.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    /// Registry host → mirror hosts pulls try first (a mirror serves the
    /// same repository names; the registry's credentials are not sent to
    /// it, the mirror's own are, if the tenant has any).
    #[serde(default)]
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for RegistriesSection {
    fn default() -> Self {
        RegistriesSection { auth_dir: None, insecure: vec![], max_transfers: default_max_transfers(), mirrors: Default::default() }
    }
}

impl RegistriesSection {
    /// Makes `auth_dir` relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(d) = &mut self.auth_dir {
            *d = base.join(&*d);
        }
    }
}

/// Registry clients for tenants, and the bound on transfers at once.
#[derive(Debug)]
pub struct RegistryAccess {
    config: RegistriesSection,
    transfers: Semaphore,
}

impl Default for RegistryAccess {
    fn default() -> Self {
        Self::new(RegistriesSection::default())
    }
}

/// A tenant name usable as a file name (`<tenant>.json`).
fn plain_name(tenant: &str) -> bool {
    !tenant.is_empty() && !tenant.starts_with('.') && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl RegistryAccess {
    pub fn new(config: RegistriesSection) -> Self {
        let transfers = Semaphore::new(config.max_transfers.max(1));
        RegistryAccess { config, transfers }
    }

    /// Waits for a transfer slot (`max_transfers`).
    pub async fn permit(&self) -> SemaphorePermit<'_> {
        self.transfers.acquire().await.expect("the semaphore is never closed")
    }

    /// Where to pull `r` from, in order: its registry's mirrors, then the
    /// registry.
    pub fn pull_sources(&self, r: &rbk_image::ImageRef) -> Vec<rbk_image::ImageRef> {
        let mirrors = self.config.mirrors.get(&r.registry).into_iter().flatten();
        mirrors.map(|m| rbk_image::ImageRef { registry: m.clone(), ..r.clone() }).chain(std::iter::once(r.clone())).collect()
    }

    /// The tenant's docker config file, if the operator gave it one.
    fn tenant_config(&self, tenant: &str) -> Result<Option<DockerConfig>, FarmImageError> {
        let Some(dir) = &self.config.auth_dir else { return Ok(None) };
        if !plain_name(tenant) {
            return Ok(None);
        }
        let path = dir.join(format!("{tenant}.json"));
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(DockerConfig::load(&path)?))
    }

    /// A client for `tenant`: credentials `sent` by its client first, then
    /// its docker config file; `insecure` adds to the configured list.
    pub fn client(&self, tenant: &str, sent: &[RegistryAuth], insecure: &[String], platform: &str) -> Result<RegistryClient, FarmImageError> {
        let mut client = RegistryClient::new()?;
        if let Some(config) = self.tenant_config(tenant)? {
            client = client.with_docker_config(config);
        }
        for a in sent {
            client = client.with_credentials(&a.registry, credentials(a));
        }
        for i in self.config.insecure.iter().chain(insecure) {
            client = client.with_insecure(i);
        }
        if !platform.is_empty() {
            client = client.with_platform(parse_platform(platform)?);
        }
        Ok(client)
    }
}

/// A client-sent credential as the registry client's.
pub fn credentials(a: &RegistryAuth) -> Credentials {
    if !a.identity_token.is_empty() {
        Credentials::IdentityToken { username: a.username.clone(), token: a.identity_token.clone() }
    } else if a.username.is_empty() && a.password.is_empty() {
        Credentials::Anonymous
    } else {
        Credentials::Basic { username: a.username.clone(), password: a.password.clone() }
    }
}

/// `os/arch[/variant]`.
fn parse_platform(p: &str) -> Result<Platform, FarmImageError> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: (*os).to_owned(),
            architecture: (*arch).to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
            os_version: None,
            os_features: vec![],
        }),
        _ => Err(FarmImageError::Invalid { what: "platform".into(), reason: format!("{p:?} is not os/arch[/variant]") }),
    }
}

/// Shared by the images service.
pub type SharedRegistryAccess = Arc<RegistryAccess>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_name_that_could_leave_the_directory_has_no_file() {
        assert!(plain_name("team-a"));
        assert!(!plain_name("../etc/passwd") && !plain_name(".hidden") && !plain_name("a/b") && !plain_name(""));
    }

    #[test]
    fn sent_credentials_become_basic_or_token() {
        let a = RegistryAuth { registry: "r".into(), username: "u".into(), password: "p".into(), identity_token: String::new() };
        assert!(matches!(credentials(&a), Credentials::Basic { .. }));
        let t = RegistryAuth { identity_token: "t".into(), ..a };
        assert!(matches!(credentials(&t), Credentials::IdentityToken { .. }));
    }

    #[test]
    fn pulls_try_the_mirrors_first_then_the_registry() {
        let mut config = RegistriesSection::default();
        config.mirrors.insert("docker.io".into(), vec!["mirror.internal:5000".into()]);
        let access = RegistryAccess::new(config);
        let r: rbk_image::ImageRef = "busybox:1".parse().unwrap();
        let hosts: Vec<String> = access.pull_sources(&r).iter().map(|s| s.to_string()).collect();
        assert_eq!(hosts, ["mirror.internal:5000/library/busybox:1", "docker.io/library/busybox:1"]);
        let other: rbk_image::ImageRef = "ghcr.io/a/b:1".parse().unwrap();
        assert_eq!(access.pull_sources(&other).len(), 1);
    }

    #[test]
    fn a_platform_that_is_not_os_slash_arch_is_refused() {
        assert_eq!(parse_platform("linux/arm64/v8").unwrap().variant.as_deref(), Some("v8"));
        assert!(parse_platform("amd64").is_err());
    }
}
