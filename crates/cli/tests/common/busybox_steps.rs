//! RUN steps on the busybox test image, as the planner would send them to
//! a farm: the base layer put into the farm's store, and step nodes whose
//! payload runs a shell script on it.

#![allow(dead_code)]

use std::path::Path;

use rbk_proto::build as pb;
use rbk_store::Digest;
use rbk_worker::payload::{FARM_STEP_VERSION, FarmStep, ImageSource, LayerDesc, Work};
use rbk_worker::{Command, Mount, MountKind, RunStep, StepKind};

/// Builds the busybox test image under `dir` and puts its layer into a
/// store through `put` (as `rbk submit` does with base images).
pub async fn busybox_base<F, Fut>(dir: &Path, put: F) -> LayerDesc
where
    F: FnOnce(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Digest>,
{
    let layout = rbk_image::OciLayout::create(dir.join("base")).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "busybox").unwrap();
    let l = &image.layers()[0];
    let blob = std::fs::read(layout.blob_path(&l.digest)).unwrap();
    let blake3 = put(blob).await;
    LayerDesc {
        digest: l.digest.to_string(),
        diff_id: image.diff_ids()[0].to_string(),
        blake3: blake3.to_string(),
        size: l.size,
        media_type: l.media_type.clone(),
    }
}

/// `RUN [--mount=type=cache,id=CACHE,target=/cache] sh -c SCRIPT` on
/// `base`, with `PATH=/bin`; `cache` is (id, sharing).
pub fn busybox_run(base: &LayerDesc, id: &str, key: &str, script: &str, cache: Option<(&str, &str)>) -> pb::StepNode {
    let mut mounts = vec![];
    let mut cache_ids = vec![];
    let mut cache_mounts = vec![];
    if let Some((cid, sharing)) = cache {
        mounts.push(Mount {
            target: "/cache".into(),
            kind: MountKind::Cache { id: cid.into(), subdir: String::new(), readonly: false, mode: 0o755, uid: 0, gid: 0, seed: None },
        });
        cache_ids.push(cid.to_owned());
        cache_mounts.push(pb::CacheMount { id: cid.into(), sharing: sharing.into() });
    }
    let step = FarmStep {
        version: FARM_STEP_VERSION,
        label: format!("[{id}] RUN {script}"),
        file: "Dockerfile".into(),
        line: 2,
        parent: ImageSource::Layers { layers: vec![base.clone()] },
        work: Work::Step {
            step: StepKind::Run(RunStep { env: vec!["PATH=/bin".into()], mounts, ..RunStep::new(Command::Shell(script.into())) }),
        },
        cache_ids,
        context: None,
        stages: Default::default(),
        allow: Vec::new(),
    };
    pb::StepNode {
        id: id.into(),
        key: key.into(),
        cache_mounts,
        payload: serde_json::to_vec(&step).unwrap(),
        name: format!("RUN {script}"),
        ..Default::default()
    }
}
