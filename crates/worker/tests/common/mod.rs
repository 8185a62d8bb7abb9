//! Shared helpers for the worker's integration tests: a busybox base
//! image, an executor on runc or crun, and reading layers back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rbk_image::{Image, Layer, OciLayout};
use rbk_worker::{Executor, LayerRef, LogLine, LogSink, RuntimeKind, Step, StepInputs, StepOutput, WorkerConfig};

pub struct Base {
    pub dir: tempfile::TempDir,
    pub layout: OciLayout,
    pub image: Image,
}

impl Base {
    pub fn layers(&self) -> Vec<LayerRef> {
        layer_refs(&self.image)
    }
}

pub fn layer_refs(image: &Image) -> Vec<LayerRef> {
    image.layers().iter().zip(image.diff_ids()).map(|(d, id)| LayerRef { digest: d.digest, diff_id: *id }).collect()
}

/// A one-layer busybox image in a fresh local OCI layout.
pub fn busybox_base() -> Base {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "busybox:latest").unwrap();
    Base { dir, layout, image }
}

pub fn executor(kind: RuntimeKind) -> (tempfile::TempDir, Executor) {
    let state = tempfile::tempdir().unwrap();
    let program = match kind {
        RuntimeKind::Runc => rbk_testsupport::program("runc"),
        RuntimeKind::Crun => rbk_testsupport::program("crun"),
    };
    let ex = Executor::new(WorkerConfig::new(state.path(), kind, program)).unwrap();
    (state, ex)
}

/// A sink that keeps every line.
pub fn collect() -> (LogSink, Arc<Mutex<Vec<LogLine>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (Arc::new(move |line: &LogLine| l.lock().unwrap().push(line.clone())), lines)
}

pub fn step(base: &Base, json: serde_json::Value) -> Step {
    let mut v = json;
    v["base"] = serde_json::to_value(base.layers()).unwrap();
    serde_json::from_value(v).unwrap()
}

pub async fn run(ex: &Executor, base: &Base, json: serde_json::Value) -> StepOutput {
    run_with(ex, base, json, &StepInputs::default()).await
}

pub async fn run_with(ex: &Executor, base: &Base, json: serde_json::Value, inputs: &StepInputs) -> StepOutput {
    ex.execute(&step(base, json), &base.layout, inputs, rbk_worker::logs::discard()).await.unwrap()
}

/// A layer's entries: path (no leading `./`, no trailing `/`) → (type,
/// content, mode, uid, gid, link target).
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: Option<String>,
}

pub fn entries(layer: &Layer) -> BTreeMap<String, Entry> {
    entries_of_blob(layer.path())
}

pub fn entries_of_blob(path: &Path) -> BTreeMap<String, Entry> {
    use std::io::Read;
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(rbk_image::decompress(f).unwrap());
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_owned();
        let h = e.header().clone();
        let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(p, Entry { kind: h.entry_type(), data, mode: h.mode().unwrap(), uid: h.uid().unwrap(), gid: h.gid().unwrap(), link });
    }
    out
}

/// `base` plus `layer` on top, saved into the same layout.
pub fn extend(base: &Base, layer: &Layer) -> Image {
    layer.add_to_layout(&base.layout).unwrap();
    let mut image = base.image.clone();
    image.push_layer(layer, rbk_image::History { created_by: Some("test step".into()), ..Default::default() });
    image.save(&base.layout, None).unwrap();
    image
}

pub fn shell(cmd: &str) -> serde_json::Value {
    serde_json::json!({"kind": "run", "command": {"shell": cmd}})
}

/// Executes `json` on top of `image`'s layers (blobs in `layout`).
pub async fn run_on(ex: &Executor, layout: &OciLayout, image: &Image, json: serde_json::Value, inputs: &StepInputs) -> StepOutput {
    let mut v = json;
    v["base"] = serde_json::to_value(layer_refs(image)).unwrap();
    ex.execute(&serde_json::from_value(v).unwrap(), layout, inputs, rbk_worker::logs::discard()).await.unwrap()
}
