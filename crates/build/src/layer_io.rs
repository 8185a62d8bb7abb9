//! Layer blobs a worker needs, shared by the embedded driver
//! ([`crate::solve`]) and farm workers ([`crate::farm_exec`]): fetching a
//! layer blob from the content store into the local OCI layout, and
//! WORKDIR's directory-only layer.

use std::path::{Component, Path};

use rbk_image::{LayerOptions, OciDigest, OciLayout};
use rbk_store::{Store, StoreExt};

use crate::error::{BuildError, Result};

/// Puts the layer blob `digest` (sha256, OCI name) into `layout` from the
/// store's blob `blake3`, unless the layout has it; checks that the bytes
/// are the layer they claim to be. `what` names the source in errors.
pub async fn fetch_blob(
    store: &dyn Store,
    layout: &OciLayout,
    digest: &str,
    blake3: &str,
    what: &str,
) -> Result<()> {
    let digest: OciDigest = digest
        .parse()
        .map_err(|e| BuildError::other(what, format!("layer digest {digest}: {e}")))?;
    if layout.has_blob(&digest) {
        return Ok(());
    }
    let b3: rbk_store::Digest = blake3
        .parse()
        .map_err(|e| BuildError::other(what, format!("blake3 {blake3}: {e}")))?;
    let bytes = store.get_bytes(b3).await?;
    let got = layout.write_blob(&bytes)?;
    if got != digest {
        return Err(BuildError::other(
            format!("layer {digest}"),
            format!("the store's blob {b3} hashes to {got}"),
        ));
    }
    Ok(())
}

/// WORKDIR's layer: just the directory `path` (absolute, clean), built in
/// a scratch directory under `worker_dir`. `Err(message)` when the path
/// is not clean; the caller names the step.
pub async fn mkdir_layer(
    worker_dir: &Path,
    path: &str,
) -> Result<std::result::Result<rbk_image::Layer, String>> {
    let tmp = tempfile::tempdir_in(worker_dir).map_err(|e| BuildError::io(worker_dir, e))?;
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) && !rel.as_os_str().is_empty() {
        return Ok(Err(format!("WORKDIR {path}: not a clean absolute path")));
    }
    let dir = tmp.path().join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
    let opts = LayerOptions::new(worker_dir.join("tmp"));
    let upper = tmp.path().to_owned();
    let layer = tokio::task::spawn_blocking(move || rbk_image::layer_from_upper(&upper, &opts))
        .await
        .map_err(|e| BuildError::other(format!("WORKDIR {path}"), e))??;
    drop(tmp);
    Ok(Ok(layer))
}

