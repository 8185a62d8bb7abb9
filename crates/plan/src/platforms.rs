//! Multi-platform builds (`--platform linux/amd64,linux/arm64`): the
//! platform list, and one graph out of one per platform (the planner merges
//! the rest of the plans; `assemble` makes the image index).
//!
//! Each platform is planned on its own (its `TARGETARCH`, its bases out of
//! multi-platform indexes), with node ids prefixed by the platform
//! (`linux-arm64.s4`). Merging keeps one node per `(key, platform)`: a step
//! two platforms plan identically — a cross-compiling stage on
//! `FROM --platform=$BUILDPLATFORM` that does not read `TARGETARCH` — runs
//! once, natively, and both platforms' later steps read its result.

use std::collections::{BTreeMap, HashMap};

use rbk_image::Platform;
use rbk_proto::build::StepNode;
use rbk_worker::payload::{FarmStep, ImageSource};

use crate::error::{BuildError, Result};

/// `--platform` values (each may be comma-separated), normalised and
/// without repeats, in the order given; this machine's platform when none.
pub fn parse_platforms(specs: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for spec in specs {
        for p in spec.split(',').map(str::trim) {
            if p.is_empty() {
                return Err(BuildError::PlatformSpec { spec: spec.clone(), problem: "an empty platform in the list".into() });
            }
            let name = Platform::parse(p, "--platform")?.to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    if out.is_empty() {
        out.push(rbk_worker::payload::current_platform());
    }
    Ok(out)
}

/// The node-id prefix of a platform's steps (`linux-arm64.`).
pub fn node_prefix(platform: &str) -> String {
    format!("{}.", platform.replace('/', "-"))
}

/// A progress label (`[build 2/3] RUN …`) naming the platform it runs for
/// (`[linux/arm64 build 2/3] RUN …`), as BuildKit's multi-platform
/// progress does.
pub(crate) fn with_platform(label: &str, platform: &str) -> String {
    match label.strip_prefix('[') {
        Some(rest) if !platform.is_empty() => format!("[{platform} {rest}"),
        _ => label.to_owned(),
    }
}

/// One graph out of per-platform graphs (in `--platform` order): the
/// first platform's nodes, then each later platform's that no earlier node
/// with the same `(key, platform)` stands for, with references to the
/// dropped ones (deps, the payload's parent and stages) renamed. Returns
/// the merged nodes and, per input graph, the ids it renamed (for its
/// final image's source). Progress labels name each node's platform.
pub(crate) fn merge_steps(graphs: Vec<Vec<StepNode>>) -> Result<(Vec<StepNode>, Vec<HashMap<String, String>>)> {
    let mut steps: Vec<StepNode> = Vec::new();
    let mut kept: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut renames = Vec::new();
    for graph in graphs {
        let mut renamed: HashMap<String, String> = HashMap::new();
        for mut node in graph {
            if let Some(id) = kept.get(&(node.key.clone(), node.platform.clone())) {
                renamed.insert(node.id.clone(), id.clone());
                continue;
            }
            if node.deps.iter().any(|d| renamed.contains_key(d)) {
                for d in &mut node.deps {
                    if let Some(to) = renamed.get(d) {
                        *d = to.clone();
                    }
                }
                node.deps.sort();
                node.deps.dedup();
                let mut payload: FarmStep = serde_json::from_slice(&node.payload)
                    .map_err(|source| BuildError::BadPayload { step_id: node.id.clone(), source })?;
                rename_source(&mut payload.parent, &renamed);
                payload.stages.values_mut().for_each(|s| rename_source(s, &renamed));
                node.payload =
                    serde_json::to_vec(&payload).map_err(|source| BuildError::EncodePayload { step: node.name.clone(), source })?;
            }
            node.name = with_platform(&node.name, &node.platform);
            kept.insert((node.key.clone(), node.platform.clone()), node.id.clone());
            steps.push(node);
        }
        renames.push(renamed);
    }
    Ok((steps, renames))
}

/// `source` with a step id renamed by [`merge_steps`].
pub(crate) fn rename_source(source: &mut ImageSource, renamed: &HashMap<String, String>) {
    if let ImageSource::Step { step_id } = source
        && let Some(to) = renamed.get(step_id)
    {
        *step_id = to.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_read_comma_separated_normalised_and_once() {
        let specs = vec!["linux/amd64,linux/aarch64".to_owned(), "linux/arm64/v8".to_owned()];
        assert_eq!(parse_platforms(&specs).unwrap(), vec!["linux/amd64", "linux/arm64"]);
        assert_eq!(parse_platforms(&[]).unwrap(), vec![rbk_worker::payload::current_platform()]);
    }

    #[test]
    fn a_bad_platform_list_is_refused_naming_it() {
        let err = parse_platforms(&["linux/amd64,".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("--platform linux/amd64,") && err.contains("empty"), "{err}");
        let err = parse_platforms(&["linux/amd64,darwin/arm64".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("darwin/arm64"), "{err}");
    }

    #[test]
    fn progress_labels_name_the_platform() {
        assert_eq!(with_platform("[build 2/3] RUN make", "linux/arm64"), "[linux/arm64 build 2/3] RUN make");
        assert_eq!(with_platform("[1/2] FROM busybox", "linux/amd64"), "[linux/amd64 1/2] FROM busybox");
    }
}
