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

/// The builder name in a `buildx.build.ref`.
const BUILDER: &str = "rbk";

/// What was built and where, as `--metadata-file` describes it.
pub struct BuildRecord<'a> {
    /// The image manifest, or the index of a multi-platform image.
    pub manifest: &'a Descriptor,
    /// The config digest (`None` for an index, which has no config).
    pub config: Option<&'a str>,
    pub tags: &'a [String],
    /// Which farm built it: `farm` (`rbk submit`) or `local` (`rbk build`'s
    /// embedded one); the node part of `buildx.build.ref`.
    pub node: &'a str,
    /// The coordinator's build id; empty when nothing ran (the target is a
    /// base image with a new config), so no build ref is written.
    pub build_id: &'a str,
}

/// BuildKit's keys for an image result, as buildx writes them:
/// `buildx.build.ref` (`builder/node/ref`, here `rbk/farm/<build id>` or
/// `rbk/local/<build id>`), `containerimage.digest` and
/// `containerimage.descriptor` (with BuildKit's `config.digest`
/// annotation), `containerimage.config.digest` only for a single-platform
/// image (an index has no config), `image.name` only when tagged.
fn metadata(r: &BuildRecord<'_>) -> serde_json::Value {
    let manifest = r.manifest;
    let mut m = serde_json::json!({
        "containerimage.digest": manifest.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": manifest.media_type,
            "digest": manifest.digest.to_string(),
            "size": manifest.size,
        },
    });
    if let Some(config) = r.config {
        m["containerimage.config.digest"] = config.into();
        m["containerimage.descriptor"]["annotations"] = serde_json::json!({ "config.digest": config });
    }
    if !r.build_id.is_empty() {
        m["buildx.build.ref"] = format!("{BUILDER}/{}/{}", r.node, r.build_id).into();
    }
    let tags = r.tags;
    if !tags.is_empty() {
        m["image.name"] = tags.join(",").into();
    }
    m
}

fn write(path: &Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing the {what} {}", path.display()))
}

/// Writes `--iidfile` and `--metadata-file`, when given, for an image
/// assembled on this machine by build `build_id` of `node` (see
/// [`BuildRecord`]).
pub fn write_files_for(flags: &DockerBuildFlags, image: &Assembled, tags: &[String], node: &str, build_id: &str) -> anyhow::Result<()> {
    if flags.iidfile.is_none() && flags.metadata_file.is_none() {
        return Ok(());
    }
    let config = config_digest(image)?;
    write_files(flags, &BuildRecord { manifest: &image.manifest, config: config.as_deref(), tags, node, build_id })
}

/// Writes `--iidfile` and `--metadata-file`, when given, for the image
/// `record` describes (an image the farm pushed is never on this
/// machine). The image ID is the config digest, or the index's own digest
/// for a multi-platform image (as buildx).
pub fn write_files(flags: &DockerBuildFlags, record: &BuildRecord<'_>) -> anyhow::Result<()> {
    if let Some(path) = &flags.iidfile {
        let id = record.config.map_or_else(|| record.manifest.digest.to_string(), str::to_owned);
        write(path, id.as_bytes(), "--iidfile")?;
    }
    if let Some(path) = &flags.metadata_file {
        let text = serde_json::to_string_pretty(&metadata(record))?;
        write(path, text.as_bytes(), "--metadata-file")?;
    }
    Ok(())
}
