//! Layer blobs a worker needs to run a step: fetching a
//! layer blob from the content store into the local OCI layout, and
//! WORKDIR's directory-only layer.

use std::path::{Component, Path};

use rbk_image::{ImageError, LayerOptions, OciDigest, OciLayout};
use rbk_store::Store;

use crate::exec_error::{ExecError, Result};

/// Puts the layer blob `digest` (sha256, OCI name) into `layout` from the
/// store's blob `blake3`, unless the layout has it; checks that the bytes
/// are the layer they claim to be ([`OciLayout::add_blob_from_store`]).
/// `what` names the source in errors.
pub async fn fetch_blob(
    store: &dyn Store,
    layout: &OciLayout,
    digest: &str,
    blake3: &str,
    what: &str,
) -> Result<()> {
    let digest: OciDigest = digest
        .parse()
        .map_err(|e: rbk_image::ImageError| ExecError::LayerDigest { layer: what.to_owned(), field: "layer digest", value: digest.to_owned(), message: e.to_string() })?;
    if layout.has_blob(&digest) {
        return Ok(());
    }
    let b3: rbk_store::Digest = blake3
        .parse()
        .map_err(|e: rbk_store::DigestParseError| ExecError::LayerDigest { layer: what.to_owned(), field: "blake3", value: blake3.to_owned(), message: e.to_string() })?;
    layout.add_blob_from_store(store, b3, (&digest, b3.size()), &format!("blob {digest}")).await.map_err(|e| match e {
        ImageError::Store(e) => ExecError::Store(e),
        source @ (ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. }) => {
            ExecError::LayerMismatch { layer: digest.to_string(), blob: b3.to_string(), source }
        }
        e => ExecError::Image(e),
    })?;
    Ok(())
}

/// WORKDIR's layer: just the directory `path` (absolute, clean), built in
/// a scratch directory under `worker_dir`. `Err(message)` when the path
/// is not clean; the caller names the step.
pub async fn mkdir_layer(
    worker_dir: &Path,
    path: &str,
) -> Result<std::result::Result<rbk_image::Layer, String>> {
    let tmp = tempfile::tempdir_in(worker_dir).map_err(|e| ExecError::io(worker_dir, e))?;
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) && !rel.as_os_str().is_empty() {
        return Ok(Err(format!("WORKDIR {path}: not a clean absolute path")));
    }
    let dir = tmp.path().join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| ExecError::io(&dir, e))?;
    let opts = LayerOptions::new(worker_dir.join("tmp"));
    let upper = tmp.path().to_owned();
    let layer = tokio::task::spawn_blocking(move || rbk_image::layer_from_upper(&upper, &opts))
        .await
        .map_err(|source| ExecError::Task { what: format!("WORKDIR {path}"), source })??;
    drop(tmp);
    Ok(Ok(layer))
}


#[cfg(test)]
mod tests {
    use super::*;
    use rbk_store::{MemoryStore, StoreExt};

    /// Fetches the layer `b"layer bytes"` into a fresh layout from a store
    /// whose blob named for it holds `stored`.
    async fn fetch_layer_stored_as(stored: &'static [u8]) -> (tempfile::TempDir, OciLayout, OciDigest, rbk_store::Digest, Result<()>) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(tmp.path()).unwrap();
        let store = MemoryStore::default();
        let b3 = store.put_bytes(bytes::Bytes::from_static(stored)).await.unwrap();
        let sha = OciDigest::of(b"layer bytes");
        let fetched = fetch_blob(&store, &layout, &sha.to_string(), &b3.to_string(), "test").await;
        (tmp, layout, sha, b3, fetched)
    }

    #[tokio::test]
    async fn a_blob_is_fetched_into_the_layout_under_its_sha256() {
        let (_tmp, layout, sha, _, fetched) = fetch_layer_stored_as(b"layer bytes").await;
        fetched.unwrap();
        assert_eq!(layout.read_blob(&sha).unwrap(), b"layer bytes");
    }

    #[tokio::test]
    async fn a_store_blob_that_is_not_the_layer_is_refused_and_leaves_nothing() {
        let (_tmp, layout, sha, b3, fetched) = fetch_layer_stored_as(b"other bytes").await;
        let e = fetched.unwrap_err();
        assert!(e.to_string().contains(&b3.to_string()) && e.to_string().contains("not this layer"), "{e}");
        assert!(!layout.has_blob(&sha));
    }

    #[tokio::test]
    async fn workdir_paths_that_climb_out_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("tmp")).unwrap();
        let refused = mkdir_layer(tmp.path(), "/app/../../etc").await.unwrap();
        assert!(refused.unwrap_err().contains("not a clean absolute path"));
    }
}
