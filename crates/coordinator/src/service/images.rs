//! `Images`: the farm pulls base images and pushes results for the
//! caller's tenant (`farm_images/`, credentials by `registries.rs`).
//!
//! Tenants only (a worker token is refused). A pull grants the tenant the
//! layers the registry served it (`Command::OwnBlobs`, so the leader
//! answers; followers redirect like the Build service); a push reads only
//! layers the tenant has. At most `[registries] max_transfers` calls run at
//! once; more wait. Credentials a request carries live as long as the call:
//! nothing here logs, stores or replicates them.

use std::sync::Arc;

use rbk_image::ImageRef;
use rbk_proto::images::images_server::Images;
use rbk_proto::images::{PushRequest, PushResponse, ResolveRequest, ResolveResponse};
use rbk_store::{Digest, Store};
use tonic::{Request, Response, Status};

use crate::auth::tenant_of;
use crate::blob_owners::OWN_BATCH_MAX;
use crate::farm_images::memo::LayerMemo;
use crate::farm_images::{pull, push};
use crate::registries::RegistryAccess;
use crate::state::{Command, CoordinatorState, query};

pub(crate) struct ImagesService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) state: Arc<dyn CoordinatorState>,
    pub(crate) access: Arc<RegistryAccess>,
    pub(crate) memo: Arc<LayerMemo>,
}

impl ImagesService {
    fn has(&self, namespace: &str) -> impl Fn(&Digest) -> bool + '_ {
        let ns = namespace.to_owned();
        move |d| query(&*self.state, |m| m.tenant_has_blob(&ns, d))
    }

    async fn grant(&self, namespace: &str, blobs: &[Digest]) -> Result<(), Status> {
        for chunk in blobs.chunks(OWN_BATCH_MAX) {
            self.state
                .apply(Command::OwnBlobs { namespace: namespace.to_owned(), blobs: chunk.to_vec() })
                .await
                .map_err(|e| Status::unavailable(format!("recording the pulled layers: {e}")))?;
        }
        Ok(())
    }
}

fn reference(text: &str, field: &str) -> Result<ImageRef, Status> {
    text.parse().map_err(|e| Status::invalid_argument(format!("{field} {text:?}: {e}")))
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn resolve(&self, req: Request<ResolveRequest>) -> Result<Response<ResolveResponse>, Status> {
        let ns = tenant_of(&req)?;
        let req = req.into_inner();
        let r = reference(&req.reference, "reference")?;
        let client = self.access.client(&ns, &req.auth, &req.insecure_registries, &req.platform)?;
        let _slot = self.access.permit().await;
        let mut tried = Vec::new();
        let mut pulled = None;
        for source in self.access.pull_sources(&r) {
            match pull::resolve(&client, &*self.store, &self.memo, &source, self.has(&ns), &std::env::temp_dir()).await {
                Ok(p) => {
                    pulled = Some(p);
                    break;
                }
                Err(e) => {
                    if source.registry != r.registry {
                        tracing::warn!(mirror = %source.registry, reference = %req.reference, "pulling through the mirror failed, trying the next source: {e}");
                    }
                    tried.push(e);
                }
            }
        }
        // The registry's own error (the last source) is the one to show.
        let pulled = match pulled {
            Some(p) => p,
            None => return Err(Status::from(tried.pop().expect("the registry itself is always tried")).with_context(&req.reference)),
        };
        self.grant(&ns, &pulled.blobs).await?;
        tracing::info!(tenant = %ns, reference = %req.reference, layers = pulled.layers.len(), pulled = pulled.layers_pulled, bytes = pulled.bytes_pulled, "resolved a base image for a build");
        Ok(Response::new(ResolveResponse {
            manifest_media_type: pulled.manifest_media_type,
            manifest: pulled.manifest,
            config: pulled.config,
            layers: pulled.layers,
            layers_pulled: pulled.layers_pulled,
            bytes_pulled: pulled.bytes_pulled,
        }))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let ns = tenant_of(&req)?;
        let req = req.into_inner();
        for n in &req.names {
            reference(n, "name")?;
        }
        let client = self.access.client(&ns, &req.auth, &req.insecure_registries, "")?;
        let _slot = self.access.permit().await;
        let pushed = push::push(&client, &*self.store, &req, self.has(&ns), &std::env::temp_dir())
            .await
            .map_err(|e| Status::from(e).with_context(&req.names.join(",")))?;
        let digest = pushed.digest.map(|d| d.to_string()).unwrap_or_default();
        tracing::info!(tenant = %ns, names = %req.names.join(","), %digest, uploaded = pushed.uploaded, "pushed an image for a build");
        Ok(Response::new(PushResponse { digest, blobs_uploaded: pushed.uploaded as u32, blobs_skipped: pushed.skipped as u32 }))
    }
}

/// Adds what the call was about to a status message.
trait WithContext {
    fn with_context(self, what: &str) -> Self;
}

impl WithContext for Status {
    fn with_context(self, what: &str) -> Self {
        if self.message().contains(what) { self } else { Status::new(self.code(), format!("{what}: {}", self.message())) }
    }
}
