//! Base images the farm resolves and pulls (`rbk submit`, issue #23): the
//! planner sends a `FROM` reference and gets back the manifest and config
//! (for keys and the image config) and each layer's digests, the layers
//! already in the farm's store. The client never downloads a base layer.
//! `rbk-client`'s `images` module is the gRPC side.

use rbk_worker::payload::LayerDesc;

/// A base image as the farm resolved it.
#[derive(Debug, Clone)]
pub struct FarmBase {
    pub manifest_media_type: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// Bottom first, as the manifest lists them, with their blake3 in the
    /// store.
    pub layers: Vec<LayerDesc>,
    /// Layers the farm fetched from the registry for this call (0 when its
    /// pull-through cache had them all), and their bytes.
    pub layers_pulled: u32,
    pub bytes_pulled: u64,
}

/// Resolves a `FROM` reference on the farm.
#[async_trait::async_trait]
pub trait FarmBases: Send + Sync + std::fmt::Debug {
    /// `platform` as `os/arch`; the error names the reference and why.
    async fn resolve(&self, reference: &str, platform: &str) -> Result<FarmBase, String>;
}
