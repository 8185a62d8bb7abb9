//! The worker's step contract: what a farm build sends through the
//! coordinator, which treats both as opaque bytes: a [`FarmStep`] is a `StepNode.payload` (planned by
//! `rbk submit`, executed by `rbk worker`), a [`FarmResult`] is a step
//! result's `config` (reported by the worker, kept in the action cache,
//! handed to dependent steps as their input and to the client in
//! `StepFinished`/`StepCached` to assemble the image).
//!
//! The split follows from what is known when: the planner knows every
//! image *config* statically (only base images and stage instructions
//! change it), so each step arrives fully mapped; only *layers* are
//! produced at run time, so results carry the cumulative layer list and a
//! step needs nothing but its direct dependencies' results.
//!
//! Everything a worker reads comes from the content store, named by blake3:
//! the client puts base-image layers there (once; `find_missing` first) and
//! the build context as a snapshot. Workers need no registry access.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// This machine's own platform, named as OCI names it (`linux/amd64`): a
/// worker's native platform (it may emulate others, see
/// [`crate::emulation`]) and a client's `BUILDPLATFORM` and default
/// target.
pub fn current_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

/// Version of the payload format; a worker refuses payloads it does not
/// know rather than misreading them.
pub const FARM_STEP_VERSION: u32 = 1;

/// One layer of an image by all its names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerDesc {
    /// sha256 of the compressed blob (OCI name), `sha256:<hex>`.
    pub digest: String,
    /// sha256 of the uncompressed tar, `sha256:<hex>`.
    pub diff_id: String,
    /// Where the blob is in the content store (`<blake3 hex>-<size>`).
    pub blake3: String,
    pub size: u64,
    pub media_type: String,
}

/// The image a step starts from (or a stage it reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageSource {
    /// No layers (`FROM scratch`).
    Scratch,
    /// A base image's layers, known when the client planned the build.
    Layers { layers: Vec<LayerDesc> },
    /// The output of another step of the same build: a dependency of this
    /// step, whose [`FarmResult`] arrives as an assignment input.
    Step { step_id: String },
}

/// What the worker does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Work {
    /// RUN or COPY/ADD, mapped with the image config the planner computed
    /// (env, user, workdir, shell already resolved).
    Step { step: crate::StepKind },
    /// WORKDIR's directory creation: a layer holding just `path`.
    Mkdir { path: String },
}

/// A step payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FarmStep {
    /// The build context's snapshot digest, when the step reads the context
    /// (COPY from it, or a bind mount of it).
    ///
    /// The first field on purpose: serialised, a payload reading the context
    /// starts `{"context":"<digest>"`, which is how the coordinator finds
    /// the one part of it that is not content-only (the manifest digest) and
    /// keys the step by the snapshot's tree digest plus the bytes after it
    /// (`rbk_coordinator::action_key`). Elsewhere it would still work, but
    /// every submit of an unchanged context would miss the action cache.
    #[serde(default)]
    pub context: Option<String>,
    pub version: u32,
    /// Progress label as BuildKit prints it (`[build 2/5] RUN ...`).
    pub label: String,
    /// Dockerfile path and line, for errors.
    pub file: String,
    pub line: usize,
    pub parent: ImageSource,
    pub work: Work,
    /// Cache-mount ids the step uses; the coordinator's grants say where
    /// each starts. Mount targets are inside `work`.
    #[serde(default)]
    pub cache_ids: Vec<String>,
    /// Other stages the step reads (`COPY --from`, `RUN --mount=from=`), by
    /// the source name the worker step uses (`rbk_plan::mapping::stage_source`).
    #[serde(default)]
    pub stages: BTreeMap<String, ImageSource>,
    /// The entitlements this step needs that the build was run with
    /// (`--allow`); the worker still refuses one its pool's policy does
    /// not allow. Empty (and absent from the bytes, so keys of ordinary
    /// steps do not change) for a step that needs none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<crate::Entitlement>,
}

/// A step result: the whole layer chain of the image after the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FarmResult {
    pub layers: Vec<LayerDesc>,
}
