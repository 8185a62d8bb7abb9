//! `rbk submit` and the farm's `Images` service (issue #23): `FROM` images
//! the farm resolves and pulls into its store (the planner's
//! [`FarmBases`]), and `--push` / `-o type=registry` outputs the farm
//! pushes from its store. The client sends references and the image's
//! documents, never layers.
//!
//! Registry credentials: this user's docker config (`$DOCKER_CONFIG` or
//! `~/.docker/config.json`: `auths`, `credHelpers`, `credsStore`) is asked
//! for the registries a call names, and what it has is sent with that
//! call only (like `--secret` values: the coordinator keeps them in memory
//! for the call). Without any, the farm uses the tenant's credentials from
//! its own config (`[registries] auth_dir`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rbk_client::images::FarmImages;
use rbk_image::registry::DockerConfig;
use rbk_image::{Credentials, Image, ImageRef};
use rbk_plan::farm_bases::{FarmBase, FarmBases};
use rbk_proto::images::{Layer, PushRequest, PushResponse, RegistryAuth, ResolveRequest};
use rbk_worker::payload::LayerDesc;

/// The farm's Images service with this user's registry credentials.
pub struct SubmitImages {
    farm: FarmImages,
    docker: Option<Arc<DockerConfig>>,
    insecure: Vec<String>,
    /// Looked up once per registry (a helper runs once).
    found: Mutex<HashMap<String, Option<RegistryAuth>>>,
}

impl std::fmt::Debug for SubmitImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitImages").field("farm", &self.farm).field("docker", &self.docker).finish_non_exhaustive()
    }
}

fn layer(l: &LayerDesc) -> Layer {
    Layer { digest: l.digest.clone(), diff_id: l.diff_id.clone(), blake3: l.blake3.clone(), size: l.size, media_type: l.media_type.clone() }
}

impl SubmitImages {
    pub fn new(farm: FarmImages, insecure: &[String]) -> anyhow::Result<Self> {
        let docker = DockerConfig::load_default()?.map(Arc::new);
        Ok(SubmitImages { farm, docker, insecure: insecure.to_vec(), found: Mutex::default() })
    }

    /// This user's credentials for `registries` (those it has any for).
    async fn auth_for(&self, registries: impl IntoIterator<Item = String>) -> Result<Vec<RegistryAuth>, rbk_image::ImageError> {
        let mut out = Vec::new();
        for registry in registries {
            let known = self.found.lock().expect("lock").get(&registry).cloned();
            let auth = match known {
                Some(a) => a,
                None => {
                    let a = match &self.docker {
                        Some(config) => {
                            let (config, r) = (config.clone(), registry.clone());
                            let creds = tokio::task::spawn_blocking(move || config.credentials_for(&r))
                                .await
                                .map_err(|e| rbk_image::ImageError::Auth { registry: registry.clone(), reason: format!("credential lookup: {e}") })??;
                            sendable(&registry, creds)
                        }
                        None => None,
                    };
                    self.found.lock().expect("lock").insert(registry.clone(), a.clone());
                    a
                }
            };
            out.extend(auth);
        }
        Ok(out)
    }

    /// Pushes `image` (its layers in the farm's store) under `names`;
    /// returns the pushed digest.
    pub async fn push(&self, image: &mut Image, layers: &[LayerDesc], names: &[String]) -> anyhow::Result<PushResponse> {
        let mut hosts = Vec::new();
        for n in names {
            let r: ImageRef = n.parse().with_context(|| format!("--push {n}"))?;
            hosts.push(r.registry);
        }
        let (config, manifest, desc) = image.encode();
        let req = PushRequest {
            names: names.to_vec(),
            manifest,
            manifest_media_type: desc.media_type,
            config,
            layers: layers.iter().map(layer).collect(),
            auth: self.auth_for(hosts).await?,
            insecure_registries: self.insecure.clone(),
        };
        Ok(self.farm.push(req).await.with_context(|| format!("pushing {} from the farm", names.join(", ")))?)
    }
}

/// A credential as the request carries it (`None`: anonymous).
fn sendable(registry: &str, c: Credentials) -> Option<RegistryAuth> {
    let base = RegistryAuth { registry: registry.to_owned(), ..RegistryAuth::default() };
    match c {
        Credentials::Anonymous => None,
        Credentials::Basic { username, password } => Some(RegistryAuth { username, password, ..base }),
        Credentials::IdentityToken { username, token } => Some(RegistryAuth { username, identity_token: token, ..base }),
    }
}

#[async_trait::async_trait]
impl FarmBases for SubmitImages {
    async fn resolve(&self, reference: &str, platform: &str) -> Result<FarmBase, String> {
        let r: ImageRef = reference.parse().map_err(|e: rbk_image::ImageError| e.to_string())?;
        let auth = self.auth_for([r.registry.clone()]).await.map_err(|e| e.to_string())?;
        let req = ResolveRequest { reference: reference.to_owned(), platform: platform.to_owned(), auth, insecure_registries: self.insecure.clone() };
        let got = self.farm.resolve(req).await.map_err(|e| e.to_string())?;
        Ok(FarmBase {
            manifest_media_type: got.manifest_media_type,
            manifest: got.manifest,
            config: got.config,
            layers: got
                .layers
                .into_iter()
                .map(|l| LayerDesc { digest: l.digest, diff_id: l.diff_id, blake3: l.blake3, size: l.size, media_type: l.media_type })
                .collect(),
            layers_pulled: got.layers_pulled,
            bytes_pulled: got.bytes_pulled,
        })
    }
}
