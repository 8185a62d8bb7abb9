use std::path::{Path, PathBuf};

use crate::model::Descriptor;
use crate::{Compression, ImageError, OciDigest, OciLayout, Result};

/// How [`layer_from_upper`] writes a layer.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    pub compression: Compression,
    /// gzip level 0-9 (default 6 — docker's) or zstd level 1-19 (default 3).
    pub level: Option<u32>,
    /// Clamp every mtime to at most this (seconds since the epoch) for
    /// reproducible layers; usually from `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// Directory for the compressed blob file (same filesystem as the
    /// layout it will be moved into, ideally).
    pub out_dir: PathBuf,
}

impl LayerOptions {
    /// gzip, no clamping, the blob written into `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        LayerOptions { compression: Compression::Gzip, level: None, source_date_epoch: None, out_dir: out_dir.into() }
    }
}

/// A compressed layer blob on disk with every name it goes by.
///
/// Storing in rbk's content store is left to the caller
/// ([`Layer::put_into`]): the diff is CPU and disk work done under
/// `spawn_blocking`, the store is async network work, and callers want to
/// schedule the two separately (and skip the put when the blake3 digest is
/// already known to the store).
#[derive(Debug)]
pub struct Layer {
    /// The compressed blob (a temporary file deleted on drop unless moved
    /// with [`add_to_layout`](Self::add_to_layout) or [`keep`](Self::keep)).
    pub file: tempfile::TempPath,
    /// sha256 of the compressed blob: the OCI layer digest.
    pub digest: OciDigest,
    /// sha256 of the uncompressed tar: the config's diff_id.
    pub diff_id: OciDigest,
    /// blake3 of the compressed blob: its name in rbk's content store.
    pub blake3: rbk_store::Digest,
    /// Bytes of the compressed blob.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: String,
}

impl Layer {
    /// The manifest entry for this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest, self.size)
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Copies the blob into `layout` (by its sha256), checking it on the way.
    pub fn add_to_layout(&self, layout: &OciLayout) -> Result<()> {
        layout.add_blob_file(&self.file, Some((&self.digest, self.size)))?;
        Ok(())
    }

    /// Stores the blob in rbk's content store under [`blake3`](Self::blake3).
    pub async fn put_into(&self, store: &dyn rbk_store::Store) -> Result<()> {
        let _ = store;
        Err(ImageError::invalid("Layer::put_into", "not implemented yet"))
    }
}

/// Turns an overlayfs upper directory into an OCI layer: overlay whiteouts
/// (character device 0:0) become `.wh.<name>` entries and opaque directories
/// (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a
/// `.wh..wh..opq` entry; entries are sorted by path, user and group names
/// are left empty, mtimes are clamped to `source_date_epoch`, so the same
/// tree always gives the same bytes. Hard links within the tree are kept as
/// hard links. Extended attributes other than overlayfs' own are recorded
/// (PAX `SCHILY.xattr.*`), so file capabilities survive.
///
/// The upper dir must come from a mount with `redirect_dir=off` and
/// `metacopy=off` (rbk's worker mounts it so): with those on, an upper dir
/// does not hold complete files.
pub fn layer_from_upper(upper: &Path, opts: &LayerOptions) -> Result<Layer> {
    let _ = (upper, opts);
    Err(ImageError::invalid("layer_from_upper", "not implemented yet"))
}
