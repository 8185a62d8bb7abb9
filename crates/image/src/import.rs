use std::path::Path;

use crate::{Image, ImageError, OciLayout, Platform, Result};

/// Imports an image from an OCI layout — a directory or a tar of one — into
/// `layout`, checking every blob's digest. `ref_name` picks an image by its
/// `org.opencontainers.image.ref.name` annotation (needed when the source
/// holds several); an index is followed to `platform`'s manifest. The
/// image is listed in `layout` under `ref_name` when given.
pub fn import_oci(src: &Path, ref_name: Option<&str>, platform: &Platform, layout: &OciLayout) -> Result<Image> {
    let _ = (src, ref_name, platform, layout);
    Err(ImageError::invalid("import_oci", "not implemented yet"))
}

/// Imports an image from a `docker save` archive into `layout`. `repo_tag`
/// picks one of the archive's `RepoTags` (needed when it holds several
/// images). Layers stay uncompressed, as docker wrote them
/// (`application/vnd.docker.image.rootfs.diff.tar`), so their digests equal
/// their diff_ids; the manifest is a Docker schema 2 manifest.
pub fn import_docker_archive(src: &Path, repo_tag: Option<&str>, layout: &OciLayout) -> Result<Image> {
    let _ = (src, repo_tag, layout);
    Err(ImageError::invalid("import_docker_archive", "not implemented yet"))
}
