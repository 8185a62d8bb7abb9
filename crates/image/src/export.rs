use std::path::Path;

use crate::{Descriptor, ImageError, OciLayout, Result};

/// Writes the image `manifest` (and every blob it needs) from `layout` as an
/// OCI layout tar at `out` (what `skopeo copy oci-archive:` and `docker
/// load` of an OCI tar read), named `ref_name` in its `index.json`. The file
/// appears only once complete.
pub fn export_oci_archive(layout: &OciLayout, manifest: &Descriptor, ref_name: Option<&str>, out: &Path) -> Result<()> {
    let _ = (layout, manifest, ref_name, out);
    Err(ImageError::invalid("export_oci_archive", "not implemented yet"))
}

/// Writes the image as a `docker save`-style archive that `docker load`
/// accepts: `manifest.json`, `repositories`, the config as `<hex>.json`
/// and each layer uncompressed as `<diff_id hex>/layer.tar` (docker before
/// 25 cannot load compressed layers from an archive). `repo_tags` are
/// `name:tag` strings. The file appears only once complete.
pub fn export_docker_archive(layout: &OciLayout, manifest: &Descriptor, repo_tags: &[String], out: &Path) -> Result<()> {
    let _ = (layout, manifest, repo_tags, out);
    Err(ImageError::invalid("export_docker_archive", "not implemented yet"))
}
