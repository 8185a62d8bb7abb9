//! What a finished build writes besides its outputs, as `docker buildx
//! build` does: `--iidfile` (the image ID: the config's digest) and
//! `--metadata-file` (a JSON object with BuildKit's exporter-response
//! keys), for both `rbk build` and `rbk submit`.

use std::path::Path;

use anyhow::Context as _;
use rbk_image::Descriptor;
use rbk_plan::assemble::Assembled;

use crate::flags::DockerBuildFlags;

/// The image's config digest, from its manifest in the layout; `None` for
/// a multi-platform image index, which has no config of its own.
fn config_digest(image: &Assembled) -> anyhow::Result<Option<String>> {
    if rbk_image::media_type::is_index(&image.manifest.media_type) {
        return Ok(None);
    }
    let bytes = image.layout.read_blob(&image.manifest.digest)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("reading manifest {}", image.manifest.digest))?;
    manifest["config"]["digest"]
        .as_str()
        .map(|d| Some(d.to_owned()))
        .with_context(|| format!("manifest {} names no config digest", image.manifest.digest))
}

/// BuildKit's keys for an image result; `image.name` only when tagged,
/// `containerimage.config.digest` only for a single-platform image (as
/// BuildKit: an index has no config).
fn metadata(manifest: &Descriptor, config: Option<&str>, tags: &[String]) -> serde_json::Value {
    let mut m = serde_json::json!({
        "containerimage.digest": manifest.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": manifest.media_type,
            "digest": manifest.digest.to_string(),
            "size": manifest.size,
        },
    });
    if let Some(config) = config {
        m["containerimage.config.digest"] = config.into();
    }
    if !tags.is_empty() {
        m["image.name"] = tags.join(",").into();
    }
    m
}

fn write(path: &Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing the {what} {}", path.display()))
}

/// Writes `--iidfile` and `--metadata-file`, when given, for an image
/// assembled on this machine.
pub fn write_files_for(flags: &DockerBuildFlags, image: &Assembled, tags: &[String]) -> anyhow::Result<()> {
    if flags.iidfile.is_none() && flags.metadata_file.is_none() {
        return Ok(());
    }
    write_files(flags, &image.manifest, config_digest(image)?.as_deref(), tags)
}

/// Writes `--iidfile` and `--metadata-file`, when given, for the image
/// whose manifest is `manifest` and whose config has digest `config`
/// (an image the farm pushed is never on this machine). The image ID is
/// the config digest, or the index's own digest for a multi-platform
/// image (as buildx).
pub fn write_files(flags: &DockerBuildFlags, manifest: &Descriptor, config: Option<&str>, tags: &[String]) -> anyhow::Result<()> {
    if let Some(path) = &flags.iidfile {
        let id = config.map_or_else(|| manifest.digest.to_string(), str::to_owned);
        write(path, id.as_bytes(), "--iidfile")?;
    }
    if let Some(path) = &flags.metadata_file {
        let text = serde_json::to_string_pretty(&metadata(manifest, config, tags))?;
        write(path, text.as_bytes(), "--metadata-file")?;
    }
    Ok(())
}
