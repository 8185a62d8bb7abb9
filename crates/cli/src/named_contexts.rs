//! `--build-context NAME=SOURCE`: named contexts, as `docker buildx build`
//! takes them. Each becomes what `FROM NAME` loads (and, through the same
//! base-image path, `COPY --from=NAME` where the planner takes images
//! there):
//!
//! - `docker-image://REF`: the image REF is pulled instead of NAME;
//! - `oci-layout://DIR[:TAG]`: the image in that OCI layout;
//! - a local directory, or a git URL (fetched as a git context is): an
//!   image of one layer holding the directory's files (mtimes cleared, so
//!   an unchanged directory gives the same layer and keys), as BuildKit
//!   makes a local named context a stage's filesystem.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use rbk_image::{History, Image, LayerOptions, OciLayout, Platform, layer_from_upper};

use crate::git_context::{self, GitUrl};

/// What keeps named contexts in place while the build runs (git
/// checkouts' locks).
#[derive(Default)]
pub struct NamedContexts {
    _checkouts: Vec<git_context::Checkout>,
}

/// The reference name of a synthesized context image in its layout.
const REF_NAME: &str = "context";

/// Resolves every `--build-context` into `base_images` (`FROM NAME` → an
/// OCI layout `DIR[:REF]`, or `docker-image://REF`).
pub fn resolve(specs: &[String], work_dir: &Path, base_images: &mut BTreeMap<String, String>) -> anyhow::Result<NamedContexts> {
    let mut held = NamedContexts::default();
    for spec in specs {
        let (name, source) = spec.split_once('=').with_context(|| format!("--build-context {spec}: expected NAME=SOURCE"))?;
        if name.is_empty() || source.is_empty() {
            bail!("--build-context {spec}: expected NAME=SOURCE");
        }
        let value = if let Some(reference) = source.strip_prefix(rbk_plan::IMAGE_ALIAS) {
            reference.parse::<rbk_image::ImageRef>().with_context(|| format!("--build-context {spec}: {reference:?} is not an image reference"))?;
            source.to_owned()
        } else if let Some(layout) = source.strip_prefix("oci-layout://") {
            if layout.contains('@') {
                bail!("--build-context {spec}: oci-layout://DIR@DIGEST is not supported yet; name the image by tag (oci-layout://DIR:TAG)");
            }
            layout.to_owned()
        } else if git_context::is_git_url(source) {
            let checkout = tokio::task::block_in_place(|| git_context::fetch(&GitUrl::parse(source)?, work_dir))?;
            let value = directory_image(name, &checkout.dir, work_dir)?;
            held._checkouts.push(checkout);
            value
        } else if source.contains("://") {
            bail!("--build-context {spec}: expected a directory, docker-image://REF, oci-layout://DIR[:TAG] or a git URL");
        } else {
            let dir = Path::new(source);
            if !dir.is_dir() {
                bail!("--build-context {spec}: {source} is not a directory");
            }
            directory_image(name, dir, work_dir)?
        };
        if base_images.insert(name.to_owned(), value).is_some() {
            bail!("--build-context {name}: named twice (or also a --base-image)");
        }
    }
    Ok(held)
}

/// An image of one layer holding `dir`'s files, in a layout of its own
/// under `work_dir/named/NAME`; returns its `DIR:REF`.
fn directory_image(name: &str, dir: &Path, work_dir: &Path) -> anyhow::Result<String> {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let root = work_dir.join("named").join(format!("{safe}-{}", &blake3::hash(name.as_bytes()).to_hex().as_str()[..8]));
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let layout = OciLayout::create(&root)?;
    let blobs = root.join("blobs/sha256");
    let layer = layer_from_upper(dir, &LayerOptions { source_date_epoch: Some(0), ..LayerOptions::new(&blobs) })
        .with_context(|| format!("--build-context {name}: packing {}", dir.display()))?;
    layer.add_to_layout(&layout)?;
    let mut image = Image::scratch(&Platform::linux_amd64());
    image.push_layer(&layer, History { created_by: Some(format!("--build-context {name}")), ..Default::default() });
    image.save(&layout, Some(REF_NAME))?;
    Ok(format!("{}:{REF_NAME}", root.display()))
}
