//! The farm pulls base images and pushes results (issue #23): the work
//! behind `service/images.rs`, over the store and a registry client
//! (`registries.rs`).
//!
//! - [`pull`]: a `FROM` reference resolved at its registry, and its layers
//!   put into the store once (a pull-through cache keyed by digest);
//! - [`push`]: an image whose layers are in the store pushed to a registry;
//! - [`memo`]: which store blob (blake3) holds which layer (sha256).
//!
//! Who may see what stays `blob_owners.rs`'s rule: a pull grants the
//! caller's tenant the layers only once the registry served them to the
//! caller's credentials, and a push sends only layers the tenant has.

pub mod memo;
pub mod pull;
pub mod push;

use rbk_image::ImageError;
use rbk_store::StoreError;

/// What can go wrong pulling or pushing on the farm. Messages name the
/// reference, layer or registry; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum FarmImageError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("layer {digest}: the caller's tenant does not have it in the farm's store")]
    NotOwned { digest: String },
    #[error("{reference}: the registry does not serve layer {digest} to these credentials")]
    NotServed { reference: String, digest: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl FarmImageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FarmImageError::Io { context: context.into(), source }
    }
}

impl From<FarmImageError> for tonic::Status {
    fn from(e: FarmImageError) -> Self {
        use tonic::Status;
        let m = e.to_string();
        match &e {
            FarmImageError::Invalid { .. } | FarmImageError::Image(ImageError::Reference { .. } | ImageError::DigestFormat(_)) => Status::invalid_argument(m),
            FarmImageError::Image(ImageError::Auth { .. }) | FarmImageError::NotServed { .. } => Status::permission_denied(m),
            FarmImageError::NotOwned { .. } => Status::not_found(m),
            FarmImageError::Image(ImageError::Registry { status: 404, .. }) => Status::not_found(m),
            FarmImageError::Image(ImageError::Http { .. } | ImageError::Registry { .. }) => Status::unavailable(m),
            FarmImageError::Store(StoreError::Backend { retryable: true, .. }) => Status::unavailable(m),
            _ => Status::internal(m),
        }
    }
}
