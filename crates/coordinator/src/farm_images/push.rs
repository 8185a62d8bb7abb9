//! An image whose layers are in the store pushed to a registry from the
//! farm: the client sends the manifest and config it computed (so local
//! outputs and the pushed image have one digest) and each layer's blake3;
//! only layers the caller's tenant has are read, each checked against its
//! sha256 on its way to a scratch layout, and only those the destination
//! lacks are read at all.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use rbk_image::{Descriptor, ImageRef, Manifest, OciDigest, OciLayout, PushOptions, RegistryClient, media_type};
use rbk_proto::images::PushRequest;
use rbk_store::{ByteRange, Digest, Store};

use super::FarmImageError;

/// What a push did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub digest: Option<OciDigest>,
    pub uploaded: usize,
    pub skipped: usize,
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> FarmImageError {
    FarmImageError::Invalid { what: what.into(), reason: reason.into() }
}

/// Pushes `req`'s image under each of its names. `has`: whether the
/// caller's tenant has a store blob.
pub async fn push(client: &RegistryClient, store: &dyn Store, req: &PushRequest, has: impl Fn(&Digest) -> bool, scratch: &Path) -> Result<Pushed, FarmImageError> {
    if req.names.is_empty() {
        return Err(invalid("push", "no names to push to"));
    }
    if !media_type::is_manifest(&req.manifest_media_type) {
        return Err(invalid("manifest", format!("media type {:?} is not an image manifest", req.manifest_media_type)));
    }
    let manifest: Manifest = serde_json::from_slice(&req.manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    manifest.config.digest.verify(&OciDigest::of(&req.config), || "the config sent with the manifest".to_owned())?;
    let by_sha: HashMap<&str, &str> = req.layers.iter().map(|l| (l.digest.as_str(), l.blake3.as_str())).collect();
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let sha = l.digest.to_string();
        let b3: Digest = by_sha
            .get(sha.as_str())
            .ok_or_else(|| invalid(format!("layer {sha}"), "has no blake3 in the request"))?
            .parse()
            .map_err(|e| invalid(format!("layer {sha}"), format!("blake3: {e}")))?;
        if b3.size() != l.size {
            return Err(invalid(format!("layer {sha}"), format!("blake3 {b3} is not of {} bytes", l.size)));
        }
        if !has(&b3) {
            return Err(FarmImageError::NotOwned { digest: sha });
        }
        layers.push((l, b3));
    }
    let dests = req
        .names
        .iter()
        .map(|n| n.parse::<ImageRef>())
        .collect::<Result<Vec<_>, _>>()?;

    let dir = tempfile::tempdir_in(scratch).map_err(|e| FarmImageError::io(format!("a scratch directory in {}", scratch.display()), e))?;
    let layout = OciLayout::create(dir.path())?;
    layout.write_blob(&req.config)?;
    layout.write_blob(&req.manifest)?;
    for (l, b3) in &layers {
        // Every destination needs it, or it is not read at all.
        let mut needed = false;
        for d in &dests {
            needed |= !client.blob_exists(d, &l.digest).await?;
        }
        if needed {
            copy_blob(store, &layout, l, *b3).await?;
        }
    }
    let desc = Descriptor::for_bytes(req.manifest_media_type.clone(), &req.manifest);
    let mut out = Pushed { digest: Some(desc.digest), ..Pushed::default() };
    for d in &dests {
        let r = client.push(&layout, &desc, d, &PushOptions::default()).await?;
        out.uploaded += r.uploaded.len();
        out.skipped += r.skipped.len() + r.mounted.len();
    }
    Ok(out)
}

/// Streams store blob `b3` into `layout` as layer `l` (checked: it must
/// hash to the layer's sha256 and size, or nothing lands).
async fn copy_blob(store: &dyn Store, layout: &OciLayout, l: &Descriptor, b3: Digest) -> Result<(), FarmImageError> {
    let mut stream = store.get(b3, ByteRange::FULL).await?;
    let mut w = layout.blob_writer()?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        w.write_all(&chunk).map_err(|e| FarmImageError::io(format!("writing layer {} from store blob {b3}", l.digest), e))?;
    }
    w.commit(Some((&l.digest, l.size)))?;
    Ok(())
}
