//! A `FROM` reference resolved at its registry with the caller's
//! credentials, its layers put into the store once.
//!
//! The manifest and config are fetched every time (they are small, and
//! fetching them is how the registry says the caller may read the image).
//! Each layer is then either
//!
//! - known ([`LayerMemo`]) and in the store: the caller's tenant gets it if
//!   it has it already, or once a `HEAD` with its credentials shows the
//!   registry serves that layer in that repository (so a manifest of the
//!   caller's own naming another tenant's private layer grants nothing);
//! - or fetched from the registry (checked against its sha256 while it is
//!   streamed to a scratch file), hashed with blake3 and put into the store.

use std::path::Path;

use futures::StreamExt;
use rbk_image::{Image, ImageRef, OciLayout, RegistryClient};
use rbk_proto::images::Layer;
use rbk_store::{Digest, Hasher, Store, StoreError};

use super::FarmImageError;
use super::memo::LayerMemo;

/// A resolved base: what the client plans with.
#[derive(Debug)]
pub struct Pulled {
    pub manifest_media_type: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
    pub layers_pulled: u32,
    pub bytes_pulled: u64,
    /// The layers' store digests, for the caller's tenant to have.
    pub blobs: Vec<Digest>,
}

/// Resolves `reference` and puts its missing layers into `store`. `has`:
/// whether the caller's tenant has a blob already. `scratch`: a directory
/// for layers in flight (each removed once in the store).
pub async fn resolve(
    client: &RegistryClient,
    store: &dyn Store,
    memo: &LayerMemo,
    reference: &ImageRef,
    has: impl Fn(&Digest) -> bool,
    scratch: &Path,
) -> Result<Pulled, FarmImageError> {
    let (desc, manifest, _index) = client.fetch_manifest(reference).await?;
    let dir = tempfile::tempdir_in(scratch).map_err(|e| FarmImageError::io(format!("a scratch directory in {}", scratch.display()), e))?;
    let layout = OciLayout::create(dir.path())?;
    let parsed: rbk_image::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| FarmImageError::Invalid { what: format!("manifest of {reference}"), reason: e.to_string() })?;
    client.pull_blob(reference, &parsed.config, &layout).await?;
    let config = layout.read_blob(&parsed.config.digest)?;
    let image = Image::from_manifest_bytes(desc, &manifest, |_| Ok(config.clone()))?;

    let known: Vec<Option<Digest>> = image.layers().iter().map(|l| memo.get(&l.digest)).collect();
    let wanted: Vec<Digest> = known.iter().flatten().copied().collect();
    let missing = store.find_missing(&wanted).await?;
    let mut out = Pulled {
        manifest_media_type: image.manifest_descriptor.media_type.clone(),
        manifest: manifest.clone(),
        config: config.clone(),
        layers: Vec::new(),
        layers_pulled: 0,
        bytes_pulled: 0,
        blobs: Vec::new(),
    };
    for ((l, diff_id), known) in image.layers().iter().zip(image.diff_ids()).zip(known) {
        let blake3 = match known.filter(|b| !missing.contains(b)) {
            Some(b) => {
                if !has(&b) && !client.blob_exists(reference, &l.digest).await? {
                    return Err(FarmImageError::NotServed { reference: reference.to_string(), digest: l.digest.to_string() });
                }
                b
            }
            None => {
                client.pull_blob(reference, l, &layout).await?;
                let path = layout.blob_path(&l.digest);
                let b = put_file(store, &path).await?;
                let _ = std::fs::remove_file(&path);
                memo.insert(l.digest, b);
                out.layers_pulled += 1;
                out.bytes_pulled += l.size;
                b
            }
        };
        out.blobs.push(blake3);
        out.layers.push(Layer {
            digest: l.digest.to_string(),
            diff_id: diff_id.to_string(),
            blake3: blake3.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        });
    }
    Ok(out)
}

/// Chunk size for hashing and storing a pulled layer.
const CHUNK: usize = 1 << 20;

/// Puts the file at `path` into the store under its blake3 (hashed in a
/// first pass, streamed in a second: memory stays at one chunk).
async fn put_file(store: &dyn Store, path: &Path) -> Result<Digest, FarmImageError> {
    use tokio::io::AsyncReadExt;
    let what = || format!("pulled layer {}", path.display());
    let mut f = tokio::fs::File::open(path).await.map_err(|e| FarmImageError::io(what(), e))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await.map_err(|e| FarmImageError::io(what(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finish();
    if store.find_missing(&[digest]).await?.is_empty() {
        return Ok(digest);
    }
    let f = tokio::fs::File::open(path).await.map_err(|e| FarmImageError::io(what(), e))?;
    let context = what();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, CHUNK)
        .map(move |r| r.map_err(|e| StoreError::io(digest, context.clone(), e)))
        .boxed();
    store.put(digest, stream).await?;
    Ok(digest)
}
