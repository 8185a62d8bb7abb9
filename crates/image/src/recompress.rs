//! An image with its layers in another compression: what BuildKit's
//! exporters do for `compression=gzip|zstd|uncompressed` (with
//! `compression-level`, and `force-compression` for layers the build did
//! not make).
//!
//! A layer is recompressed by streaming its blob through the decompressor
//! its magic bytes call for and the wanted compressor into a new blob of
//! the layout (the diff_id stays: the tar is the same bytes). Only the
//! manifest and the layer descriptors change; a converted image always gets
//! OCI media types (Docker's have no zstd).

use std::fs::File;
use std::io::{self, BufReader, Read};

use crate::diff::Compressor;
use crate::error::IoContext;
use crate::model::media_type;
use crate::{Compression, Descriptor, OciDigest, OciLayout, Platform, Result, decompress};

/// What to recompress to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recompress {
    pub compression: Compression,
    /// gzip 0-9, zstd 1-19 (each compressor's default when `None`).
    pub level: Option<u32>,
}

/// How a blob is compressed, by its first bytes.
fn blob_compression(path: &std::path::Path) -> Result<Compression> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).ctx(|| format!("reading {}", path.display()))? {
            0 => break,
            k => n += k,
        }
    }
    Ok(Compression::detect(&head[..n]))
}

/// Writes the layer `desc` of `layout` compressed as `to` into the layout;
/// returns its descriptor (the same one when it already is).
fn recompress_layer(layout: &OciLayout, desc: &Descriptor, to: Recompress) -> Result<Descriptor> {
    let path = layout.blob_path(&desc.digest);
    if blob_compression(&path)? == to.compression && to.level.is_none() {
        let mut d = desc.clone();
        d.media_type = to.compression.oci_layer_media_type().to_owned();
        return Ok(d);
    }
    let f = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
    let mut tar = decompress(BufReader::new(f)).ctx(|| format!("reading layer {}", desc.digest))?;
    let mut out = Compressor::new(layout.blob_writer()?, to.compression, to.level).ctx(|| "starting the compressor".to_owned())?;
    io::copy(&mut tar, &mut out).ctx(|| format!("recompressing layer {}", desc.digest))?;
    let writer = out.finish().ctx(|| format!("finishing layer {}", desc.digest))?;
    let (digest, size) = writer.commit(None)?;
    Ok(Descriptor::new(to.compression.oci_layer_media_type(), digest, size))
}

/// Saves a copy of the image `manifest` whose layers are compressed as
/// `to`, except those `keep` names (BuildKit leaves layers it did not make
/// as they are unless `force-compression=true`); returns the new manifest's
/// descriptor. The image is otherwise the same (config, diff_ids, history).
pub fn recompress_image(
    layout: &OciLayout,
    manifest: &Descriptor,
    to: Recompress,
    keep: &dyn Fn(&OciDigest) -> bool,
) -> Result<Descriptor> {
    let mut image = layout.load_image(manifest, &Platform::linux_amd64())?;
    let mut layers = Vec::with_capacity(image.manifest.layers.len());
    for l in &image.manifest.layers {
        layers.push(if keep(&l.digest) { l.clone() } else { recompress_layer(layout, l, to)? });
    }
    if layers != image.manifest.layers {
        image.manifest.layers = layers;
        image.manifest.media_type = Some(media_type::OCI_MANIFEST.to_owned());
        for l in &mut image.manifest.layers {
            l.media_type = match l.media_type.as_str() {
                media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP.to_owned(),
                media_type::DOCKER_LAYER => media_type::OCI_LAYER.to_owned(),
                other => other.to_owned(),
            };
        }
    }
    image.save(layout, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{History, Image, LayerOptions, layer_from_upper};

    /// A layout holding a one-layer (gzip) image: the layout's directory,
    /// the layout, the manifest and the image.
    fn one_layer_image() -> (tempfile::TempDir, OciLayout, Descriptor, Image) {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("hello"), "hello ".repeat(1000)).unwrap();
        let layer = layer_from_upper(root.path(), &LayerOptions::new(layout.root().join("blobs/sha256"))).unwrap();
        layer.add_to_layout(&layout).unwrap();
        let mut image = Image::scratch(&Platform::linux_amd64());
        image.push_layer(&layer, History::default());
        let m = image.save(&layout, None).unwrap();
        (dir, layout, m, image)
    }

    #[test]
    fn every_compression_keeps_the_diff_id_and_names_its_media_type() {
        let (_dir, layout, m, before) = one_layer_image();
        for c in [Compression::Zstd, Compression::None, Compression::Gzip] {
            let d = recompress_image(&layout, &m, Recompress { compression: c, level: Some(1) }, &|_| false).unwrap();
            let after = layout.load_image(&d, &Platform::linux_amd64()).unwrap();
            assert_eq!(after.diff_ids(), before.diff_ids(), "{c:?}");
            assert_eq!(after.layers()[0].media_type, c.oci_layer_media_type());
            assert_eq!(blob_compression(&layout.blob_path(&after.layers()[0].digest)).unwrap(), c);
        }
    }

    #[test]
    fn kept_layers_are_not_recompressed() {
        let (_dir, layout, m, before) = one_layer_image();
        let d = recompress_image(&layout, &m, Recompress { compression: Compression::Zstd, level: None }, &|_| true).unwrap();
        let after = layout.load_image(&d, &Platform::linux_amd64()).unwrap();
        assert_eq!(after.layers(), before.layers());
    }
}
