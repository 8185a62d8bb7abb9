use crate::model::{Descriptor, History, ImageConfig, Manifest, from_json, media_type, to_json};
use crate::{ImageError, Layer, OciDigest, OciLayout, Platform, Result};

/// A single-platform image: its manifest and parsed config.
///
/// Build steps grow an image by [`push_layer`](Self::push_layer) and
/// [`push_history`](Self::push_history), edit `config.config` for ENV, CMD
/// and friends, then [`save`](Self::save) it into a layout, which gives it a
/// new manifest digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Where the manifest came from, or was last saved to.
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Image {
    /// An image with no layers (`FROM scratch`).
    pub fn scratch(platform: &Platform) -> Self {
        let config = ImageConfig::empty(platform);
        let config_bytes = to_json(&config);
        let manifest = Manifest::oci(Descriptor::for_bytes(media_type::OCI_CONFIG, &config_bytes), vec![]);
        Image { manifest_descriptor: Descriptor::for_bytes(media_type::OCI_MANIFEST, &to_json(&manifest)), manifest, config }
    }

    /// Parses a manifest and fetches its config with `read_blob`, checking
    /// that the layer list and the config's diff_ids agree.
    pub fn from_manifest_bytes(
        descriptor: Descriptor,
        manifest_bytes: &[u8],
        read_blob: impl FnOnce(&OciDigest) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let what = format!("manifest {}", descriptor.digest);
        let manifest: Manifest = from_json(manifest_bytes, &what)?;
        if manifest.schema_version != 2 {
            return Err(ImageError::invalid(what, format!("schemaVersion {} (only 2 is supported)", manifest.schema_version)));
        }
        let config_bytes = read_blob(&manifest.config.digest)?;
        let config: ImageConfig = from_json(&config_bytes, &format!("image config {}", manifest.config.digest))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::invalid(
                what,
                format!("lists {} layers but its config {} has {} diff_ids", manifest.layers.len(), manifest.config.digest, config.rootfs.diff_ids.len()),
            ));
        }
        Ok(Image { manifest_descriptor: descriptor, manifest, config })
    }

    /// Layer descriptors, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// Uncompressed layer digests, bottom first (same order as
    /// [`layers`](Self::layers)).
    pub fn diff_ids(&self) -> &[OciDigest] {
        &self.config.rootfs.diff_ids
    }

    /// Appends a layer made by a build step, with its history entry.
    pub fn push_layer(&mut self, layer: &Layer, mut history: History) {
        history.empty_layer = false;
        self.manifest.layers.push(layer.descriptor());
        self.config.rootfs.diff_ids.push(layer.diff_id);
        self.config.history.push(history);
    }

    /// Records a step that changed only the config (ENV, CMD, ...).
    pub fn push_history(&mut self, mut history: History) {
        history.empty_layer = true;
        self.config.history.push(history);
    }

    /// The config and manifest documents as they stand (the layers are
    /// named, their blobs are not needed) and the manifest's descriptor;
    /// the manifest's config descriptor is set to the config's. A farm
    /// push sends these and the layers stay in the store.
    pub fn encode(&mut self) -> (Vec<u8>, Vec<u8>, Descriptor) {
        let config_bytes = to_json(&self.config);
        let config_media_type = if self.manifest.media_type.as_deref() == Some(media_type::DOCKER_MANIFEST) {
            media_type::DOCKER_CONFIG
        } else {
            media_type::OCI_CONFIG
        };
        self.manifest.config = Descriptor::for_bytes(config_media_type, &config_bytes);
        let manifest_bytes = to_json(&self.manifest);
        let mt = self.manifest.media_type.clone().unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
        let mut desc = Descriptor::for_bytes(mt, &manifest_bytes);
        desc.platform = Some(Platform {
            architecture: self.config.architecture.clone(),
            os: self.config.os.clone(),
            variant: self.config.variant.clone(),
            os_version: None,
            os_features: vec![],
        });
        (config_bytes, manifest_bytes, desc)
    }

    /// Writes the config and manifest into `layout` (every layer blob must
    /// already be there), lists it in `index.json` under `ref_name`, and
    /// returns the new manifest descriptor.
    pub fn save(&mut self, layout: &OciLayout, ref_name: Option<&str>) -> Result<Descriptor> {
        for layer in &self.manifest.layers {
            if !layout.has_blob(&layer.digest) {
                return Err(ImageError::invalid(
                    format!("layer {}", layer.digest),
                    format!("is not in the layout {}; add it (Layer::add_to_layout) before saving the image", layout.root().display()),
                ));
            }
        }
        let (config_bytes, manifest_bytes, desc) = self.encode();
        layout.write_blob(&config_bytes)?;
        layout.write_blob(&manifest_bytes)?;
        layout.add_manifest(desc.clone(), ref_name)?;
        self.manifest_descriptor = desc.clone();
        Ok(desc)
    }
}
