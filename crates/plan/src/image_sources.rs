//! Images a build reads files from: `FROM <image>`, and `COPY --from=<image>`
//! and `RUN --mount=type=bind|cache,from=<image>` (BuildKit treats such a
//! `--from` as an implicit `FROM <image>` stage).
//!
//! Every one is resolved the same way as a `FROM` (the frontend's
//! `resolve_base`: a `--base-image` layout, else the registry, a tag to the
//! digest it names now, a pinned `@sha256:` as is), its layers go into the
//! content store with the bases', and a step that reads it names it among
//! its [`FarmStep::stages`](rbk_worker::payload::FarmStep::stages) as
//! [`ImageSource::Layers`]: the worker mounts it read-only as it mounts
//! another stage's rootfs, so farm workers need no registry. The source's
//! name carries the manifest digest, so the step's key follows the image's
//! content, not its tag.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rbk_dockerfile as df;
use rbk_image::Image;
use rbk_worker::payload::{ImageSource, LayerDesc};

/// Every image the graph's steps read, `FROM`s first, each once: its
/// reference and the platform a `FROM --platform=` names (`None`: the
/// target platform, as for every `--from=<image>`).
pub(crate) fn references(graph: &df::Graph) -> Vec<(&str, Option<&str>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let froms = graph.steps.iter().filter_map(|s| match &s.kind {
        df::StepKind::Image { reference, platform, .. } => Some((reference.as_str(), platform.as_deref())),
        _ => None,
    });
    let sources = graph.steps.iter().flat_map(|s| read_by(&s.kind)).map(|(r, _)| (r, None));
    for r in froms.chain(sources) {
        if seen.insert(r) {
            out.push(r);
        }
    }
    out
}

/// The images a step reads files from (`--from=<image>`), as (reference,
/// resolved digest).
pub(crate) fn read_by(kind: &df::StepKind) -> Vec<(&str, Option<&str>)> {
    let mut froms: Vec<&df::FromRef> = Vec::new();
    match kind {
        df::StepKind::Copy(c) => froms.push(&c.from),
        df::StepKind::Run(r) => {
            for m in &r.mounts {
                match m {
                    df::Mount::Bind { from, .. } => froms.push(from),
                    df::Mount::Cache { from: Some((from, _)), .. } => froms.push(from),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    froms
        .into_iter()
        .filter_map(|f| match f {
            df::FromRef::Image { reference, digest } => Some((reference.as_str(), digest.as_deref())),
            _ => None,
        })
        .collect()
}

/// The worker's name for an image's rootfs (`Source::Stage`): by digest
/// when resolved, so two tags of one image are one source.
pub fn source_name(reference: &str, digest: Option<&str>) -> String {
    match digest {
        Some(d) => format!("image@{d}"),
        None => format!("image:{reference}"),
    }
}

/// The `stages` entries for the images `kind` reads: each image's layers
/// as the store holds them (`layers`, by the frontend's `base_key` for
/// the `target` platform).
pub(crate) fn stage_entries(
    kind: &df::StepKind,
    layers: &HashMap<String, Vec<LayerDesc>>,
    target: &str,
) -> Result<BTreeMap<String, ImageSource>, String> {
    let mut out = BTreeMap::new();
    for (reference, digest) in read_by(kind) {
        let l = layers.get(&crate::frontend::base_key(reference, None, target)).ok_or_else(|| format!("image {reference}"))?;
        let source = if l.is_empty() { ImageSource::Scratch } else { ImageSource::Layers { layers: l.clone() } };
        out.insert(source_name(reference, digest), source);
    }
    Ok(out)
}

/// One progress line per image read by `--from=<image>` (BuildKit's
/// implicit stage): `FROM <reference>@<digest>`, each once (`images` by
/// the frontend's `base_key` for the `target` platform).
pub(crate) fn from_lines(graph: &df::Graph, images: &HashMap<String, Image>, target: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut lines = Vec::new();
    for (reference, _) in graph.steps.iter().flat_map(|s| read_by(&s.kind)) {
        if !seen.insert(reference) {
            continue;
        }
        match images.get(&crate::frontend::base_key(reference, None, target)) {
            Some(i) if !reference.contains('@') => lines.push(format!("FROM {reference}@{}", i.manifest_descriptor.digest)),
            _ => lines.push(format!("FROM {reference}")),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(df: &str) -> df::Graph {
        let dir = tempfile::tempdir().unwrap();
        let digests = std::collections::BTreeMap::from([("tools:1".to_owned(), "sha256:abc".to_owned())]);
        df::build_graph(df, &df::BuildOptions::default(), &df::FsContext::new(dir.path()), &digests).unwrap()
    }

    #[test]
    fn an_image_read_by_copy_and_by_a_bind_mount_is_resolved_once_after_the_froms() {
        let g = graph("FROM base:2\nCOPY --from=tools:1 /a /a\nRUN --mount=type=bind,from=tools:1,target=/t true\n");
        assert_eq!(references(&g), [("base:2", None), ("tools:1", None)]);
    }
}
