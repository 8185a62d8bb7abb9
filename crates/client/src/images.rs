//! The coordinator's `Images` service from the client: the farm resolves
//! and pulls `FROM` images and pushes results (issue #23), so `rbk submit`
//! sends references and image documents, never layers. Registry
//! credentials the client sends ride in the request for that call only.

use rbk_proto::images::images_client::ImagesClient;
use rbk_proto::images::{PushRequest, PushResponse, ResolveRequest, ResolveResponse};
use tonic::transport::Channel;

use crate::bearer::authorized;
use crate::error::BadToken;

/// Manifests and configs are at most a few MiB (registries cap manifests
/// at 4 MiB).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Token(#[from] BadToken),
    #[error("{url}: {message}")]
    Refused { url: String, message: String },
}

/// `Images` calls as one tenant.
#[derive(Clone)]
pub struct FarmImages {
    client: ImagesClient<Channel>,
    url: String,
    token: String,
}

impl std::fmt::Debug for FarmImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmImages").field("url", &self.url).finish_non_exhaustive()
    }
}

impl FarmImages {
    pub fn new(channel: Channel, url: &str, token: &str) -> Self {
        let client = ImagesClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        FarmImages { client, url: url.to_owned(), token: token.to_owned() }
    }

    fn refused(&self, s: tonic::Status) -> ImagesError {
        ImagesError::Refused { url: self.url.clone(), message: s.message().to_owned() }
    }

    pub async fn resolve(&self, req: ResolveRequest) -> Result<ResolveResponse, ImagesError> {
        let mut c = self.client.clone();
        c.resolve(authorized(req, &self.token)?).await.map(|r| r.into_inner()).map_err(|s| self.refused(s))
    }

    pub async fn push(&self, req: PushRequest) -> Result<PushResponse, ImagesError> {
        let mut c = self.client.clone();
        c.push(authorized(req, &self.token)?).await.map(|r| r.into_inner()).map_err(|s| self.refused(s))
    }
}
