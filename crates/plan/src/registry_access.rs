//! The registry client for images the client side of a build pulls and
//! pushes itself (`rbk build`, `--base-image`-free `FROM`s under
//! `rbk submit --client-side-images`): credentials from the docker config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `auths`,
//! `credHelpers`, `credsStore`) and the insecure registries given.

use rbk_image::RegistryClient;
use rbk_image::registry::DockerConfig;

use crate::error::Result;

/// A registry client with this user's docker credentials.
pub fn registry_client(insecure_registries: &[String]) -> Result<RegistryClient> {
    let mut client = RegistryClient::new()?;
    if let Some(config) = DockerConfig::load_default()? {
        client = client.with_docker_config(config);
    }
    for i in insecure_registries {
        client = client.with_insecure(i);
    }
    Ok(client)
}
