//! The driver: Dockerfile → graph → steps executed in dependency order on
//! the embedded worker, with the action cache, cache-mount heads, and the
//! final image assembled and exported.
//!
//! Sequential and in one process: this is `rbk build`, not the farm. The
//! order is the graph's (dependencies first), so independent stages run one
//! after the other here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbk_dockerfile as df;
use rbk_image::{
    Descriptor, History, Image, ImageRef, LayerOptions, OciDigest, OciLayout, Platform,
    RegistryClient,
};
use rbk_store::{FilesystemStore, Store, StoreExt};
use rbk_worker::{Executor, LayerRef, LogLine, RuntimeKind, StepInputs, WorkerConfig};

use crate::cache_mounts::CacheDirs;
use crate::error::{BuildError, Result};
use crate::mapping;
use crate::progress::Progress;
use crate::state::{ActionResult, State};

/// The namespace cache ids are scoped to on the embedded default (one
/// user, one machine); the farm takes it from the caller's token.
pub const LOCAL_NAMESPACE: &str = "local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An OCI image layout as a tar archive.
    Oci,
    /// A `docker load` archive.
    Docker,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub kind: OutputKind,
    pub dest: PathBuf,
}

/// Everything `rbk build` is asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context: PathBuf,
    /// Default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Run every step (the action cache is neither read nor trusted);
    /// cache mounts keep their contents, as in BuildKit.
    pub no_cache: bool,
    pub outputs: Vec<BuildOutput>,
    /// Holds `coordinator/` (action cache, cache heads), and by default
    /// `worker/` and `store/`.
    pub state_dir: PathBuf,
    /// The worker's local state (layers, cache dirs, image blobs); a new
    /// directory here is a fresh worker.
    pub worker_dir: Option<PathBuf>,
    /// The content store directory (layers and cache-mount snapshots).
    pub store_dir: Option<PathBuf>,
    /// Base images from OCI layout directories instead of a registry:
    /// `FROM <name>` loads `DIR` (or `DIR:REF_NAME`).
    pub base_images: BTreeMap<String, String>,
    /// Registries reached over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    pub runtime: RuntimeKind,
    pub runtime_program: PathBuf,
}

impl BuildRequest {
    /// runc from PATH, no outputs, state in `state_dir`.
    pub fn new(context: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        BuildRequest {
            context: context.into(),
            dockerfile: None,
            tags: vec![],
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            outputs: vec![],
            state_dir: state_dir.into(),
            worker_dir: None,
            store_dir: None,
            base_images: BTreeMap::new(),
            insecure_registries: vec![],
            runtime: RuntimeKind::Runc,
            runtime_program: PathBuf::from("runc"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The final image's manifest digest.
    pub manifest_digest: OciDigest,
    pub steps: usize,
    pub cached: usize,
    pub executed: usize,
    /// Bytes fetched from the store to warm cache mounts.
    pub cache_bytes_restored: u64,
}

fn layer_refs(image: &Image) -> Vec<LayerRef> {
    image
        .layers()
        .iter()
        .zip(image.diff_ids())
        .map(|(d, id)| LayerRef {
            digest: d.digest,
            diff_id: *id,
        })
        .collect()
}

fn push_result(image: &mut Image, r: &ActionResult, created_by: &str) -> Result<()> {
    let digest: OciDigest = r.digest.parse().map_err(|e| {
        BuildError::other("action cache", format!("layer digest {}: {e}", r.digest))
    })?;
    let diff_id: OciDigest = r
        .diff_id
        .parse()
        .map_err(|e| BuildError::other("action cache", format!("diff_id {}: {e}", r.diff_id)))?;
    image
        .manifest
        .layers
        .push(Descriptor::new(r.media_type.clone(), digest, r.size));
    image.config.rootfs.diff_ids.push(diff_id);
    image.config.history.push(History {
        created_by: Some(created_by.to_owned()),
        ..Default::default()
    });
    Ok(())
}

/// Applies what the Dockerfile set (ENV, CMD, ...) over the image's config.
fn apply_config(image: &mut Image, stage: &df::Stage) {
    let c = &stage.config;
    let cc = &mut image.config.config;
    for (k, v) in &c.env {
        cc.set_env(k, v);
    }
    if let Some(w) = &c.workdir {
        cc.working_dir = Some(w.clone());
    }
    if let Some(u) = &c.user {
        cc.user = Some(u.clone());
    }
    if let Some(e) = &c.entrypoint {
        cc.entrypoint = Some(e.clone());
    }
    if let Some(cmd) = &c.cmd {
        cc.cmd = Some(cmd.clone());
    }
    if !c.labels.is_empty() {
        cc.labels
            .get_or_insert_with(BTreeMap::new)
            .extend(c.labels.clone());
    }
    for p in &c.exposed_ports {
        cc.exposed_ports
            .get_or_insert_with(BTreeMap::new)
            .insert(p.clone(), serde_json::json!({}));
    }
    for v in &c.volumes {
        cc.volumes
            .get_or_insert_with(BTreeMap::new)
            .insert(v.clone(), serde_json::json!({}));
    }
    if let Some(s) = &c.stop_signal {
        cc.stop_signal = Some(s.clone());
    }
    if let Some(s) = &c.shell {
        cc.shell = Some(s.clone());
    }
    if !c.onbuild.is_empty() {
        cc.on_build = Some(c.onbuild.clone());
    }
    if let Some(m) = &c.maintainer {
        image.config.author = Some(m.clone());
    }
}

/// Copies the context paths the graph kept (after `.dockerignore`) into
/// `dest`, so that the worker's COPY cannot see an ignored file.
fn stage_context(graph: &df::Graph, context: &Path, dest: &Path) -> Result<()> {
    let mut paths = BTreeSet::new();
    for s in &graph.steps {
        if let df::StepKind::Copy(c) = &s.kind {
            for src in &c.sources {
                if let df::CopySource::Context { paths: p, .. } = src {
                    paths.extend(p.iter().cloned());
                }
            }
        }
    }
    for rel in paths {
        if Path::new(&rel)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(BuildError::io(
                context.join(&rel),
                "context path leaves the context",
            ));
        }
        let (src, dst) = (context.join(&rel), dest.join(&rel));
        let meta = std::fs::symlink_metadata(&src).map_err(|e| BuildError::io(&src, e))?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
        }
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| BuildError::io(&dst, e))?;
            std::fs::set_permissions(&dst, meta.permissions())
                .map_err(|e| BuildError::io(&dst, e))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| BuildError::io(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| BuildError::io(&dst, e))?;
        } else if meta.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| BuildError::io(&src, e))?;
        }
        // Devices, fifos and sockets are not staged: reading one could
        // block forever or never end (`/dev/zero`), and a build context
        // has no business carrying them.
    }
    Ok(())
}

/// Loads `FROM` images: from `--base-image` layouts, else from registries.
async fn resolve_base(req: &BuildRequest, reference: &str, layout: &OciLayout) -> Result<Image> {
    if let Some(spec) = req.base_images.get(reference) {
        let (dir, ref_name) = match spec.rsplit_once(':') {
            Some((d, r)) if Path::new(d).is_dir() => (d.to_owned(), Some(r.to_owned())),
            _ => (spec.clone(), None),
        };
        let src = OciLayout::open(&dir)?;
        let desc = src.find(ref_name.as_deref())?;
        let image = src.load_image(&desc, &Platform::linux_amd64())?;
        for l in image.layers() {
            if !layout.has_blob(&l.digest) {
                layout.add_blob_file(&src.blob_path(&l.digest), Some((&l.digest, l.size)))?;
            }
        }
        return Ok(image);
    }
    let r: ImageRef = reference
        .parse()
        .map_err(|e| BuildError::other(format!("FROM {reference}"), e))?;
    let mut client = RegistryClient::new()?;
    for i in &req.insecure_registries {
        client = client.with_insecure(i);
    }
    Ok(client.pull(&r, layout).await?)
}

/// The pulled base images, which the frontend asks for digests (keys) and
/// environments (`$PATH` and friends expand as Docker expands them).
#[derive(Default)]
struct Bases(HashMap<String, Image>);

impl df::BaseResolver for Bases {
    fn resolve(&self, reference: &str, _platform: Option<&str>) -> Option<String> {
        self.0
            .get(reference)
            .map(|i| i.manifest_descriptor.digest.to_string())
    }

    fn env(&self, reference: &str, _platform: Option<&str>) -> Option<Vec<(String, String)>> {
        let env = self
            .0
            .get(reference)?
            .config
            .config
            .env
            .clone()
            .unwrap_or_default();
        Some(
            env.iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map_or((kv.clone(), String::new()), |(k, v)| {
                            (k.to_owned(), v.to_owned())
                        })
                })
                .collect(),
        )
    }
}

struct Label {
    text: String,
    file: String,
    line: usize,
}

fn label(graph: &df::Graph, step: &df::Step, file: &str) -> Label {
    let stage = &graph.stages[step.stage];
    let i = stage
        .steps
        .iter()
        .position(|s| *s == step.id)
        .map_or(0, |i| i + 1);
    let n = stage.steps.len();
    let text = match (&stage.name, step.stage == graph.target) {
        (Some(name), _) => format!("[{name} {i}/{n}] {}", step.instruction),
        (None, true) => format!("[{i}/{n}] {}", step.instruction),
        (None, false) => format!("[stage-{} {i}/{n}] {}", step.stage, step.instruction),
    };
    Label {
        text,
        file: file.to_owned(),
        line: step.pos.line,
    }
}

impl Label {
    fn unsupported(&self, message: String) -> BuildError {
        BuildError::Unsupported {
            step: self.text.clone(),
            file: self.file.clone(),
            line: self.line,
            message,
        }
    }
}

/// Runs the build. Progress goes to `progress`; the image is saved in the
/// worker's layout (under the first tag) and written to every output.
pub async fn build(req: &BuildRequest, mut progress: Progress) -> Result<BuildResult> {
    let file = req
        .dockerfile
        .clone()
        .unwrap_or_else(|| req.context.join("Dockerfile"));
    let bytes = std::fs::read(&file).map_err(|e| BuildError::io(&file, e))?;
    let text =
        String::from_utf8(bytes).map_err(|_| BuildError::io(&file, "not valid UTF-8 text"))?;
    let file_name = file.display().to_string();
    let opts = df::BuildOptions {
        file_name: file_name.clone(),
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        namespace: LOCAL_NAMESPACE.into(),
        dockerignore: df::Dockerignore::load(&file, &req.context)?.unwrap_or_default(),
        ..df::BuildOptions::default()
    };
    let ctx = df::FsContext::new(&req.context);
    // First pass to learn the base images; keys then use their digests.
    let unresolved = df::build_graph(&text, &opts, &ctx, &())?;

    // Absolute, because these paths reach the OCI runtime's bundle.
    let abs = |p: PathBuf| std::path::absolute(&p).map_err(|e| BuildError::io(&p, e));
    let state_dir = abs(req.state_dir.clone())?;
    let worker_dir = abs(req
        .worker_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("worker")))?;
    let store_dir = abs(req
        .store_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("store")))?;
    let layout = OciLayout::create(worker_dir.join("images"))?;
    let store: Arc<dyn Store> = Arc::new(FilesystemStore::open(&store_dir).await?);
    let mut state = State::open(&state_dir.join("coordinator"))?;
    let caches = CacheDirs::new(worker_dir.join("caches"));

    let mut bases = Bases::default();
    for s in &unresolved.steps {
        if let df::StepKind::Image { reference, .. } = &s.kind
            && !bases.0.contains_key(reference)
        {
            let image = resolve_base(req, reference, &layout).await?;
            bases.0.insert(reference.clone(), image);
        }
    }
    let graph = df::build_graph(&text, &opts, &ctx, &bases)?;
    let bases = bases.0;
    progress.set_total(graph.steps.len());

    let executor = Executor::new(WorkerConfig::new(
        &worker_dir,
        req.runtime,
        &req.runtime_program,
    ))?;
    let staged = tempfile::tempdir_in(&worker_dir).map_err(|e| BuildError::io(&worker_dir, e))?;
    stage_context(&graph, &req.context, staged.path())?;

    let mut images: Vec<Option<Image>> =
        vec![None; graph.steps.iter().map(|s| s.id + 1).max().unwrap_or(0)];
    let mut result = BuildResult {
        manifest_digest: OciDigest::of(b""),
        steps: graph.steps.len(),
        cached: 0,
        executed: 0,
        cache_bytes_restored: 0,
    };
    for (n, step) in graph.steps.iter().enumerate() {
        let n = n + 1;
        let l = label(&graph, step, &file_name);
        let t0 = Instant::now();
        let parent = || -> Result<Image> {
            step.parent
                .and_then(|p| images.get(p).cloned().flatten())
                .ok_or_else(|| {
                    BuildError::other(
                        l.text.clone(),
                        "the step's parent has no result (graph order)",
                    )
                })
        };
        let image = match &step.kind {
            df::StepKind::Image { reference, .. } => {
                progress.resolved(n, &l.text, t0.elapsed());
                bases[reference].clone()
            }
            df::StepKind::Scratch => {
                progress.resolved(n, &l.text, t0.elapsed());
                Image::scratch(&Platform::linux_amd64())
            }
            df::StepKind::Stage { stage } => {
                let mut image = parent()?;
                apply_config(&mut image, &graph.stages[*stage]);
                progress.resolved(n, &l.text, t0.elapsed());
                image
            }
            kind => {
                let mut image = parent()?;
                let key = step.key.hex();
                let hit = if req.no_cache {
                    None
                } else {
                    state.data.actions.get(&key).cloned()
                };
                if let Some(r) = hit {
                    ensure_blob(&*store, &layout, &r).await?;
                    push_result(&mut image, &r, &step.instruction)?;
                    progress.cached(n, &l.text);
                    result.cached += 1;
                } else {
                    progress.started(n, &l.text);
                    let (r, note) = execute(
                        &ExecCtx {
                            graph: &graph,
                            images: &images,
                            executor: &executor,
                            layout: &layout,
                            store: &store,
                            caches: &caches,
                            context: staged.path(),
                            worker_dir: &worker_dir,
                            progress: &progress,
                        },
                        &mut state,
                        &image,
                        kind,
                        n,
                        &l,
                        &mut result,
                    )
                    .await?;
                    state.data.actions.insert(key, r.clone());
                    state.save()?;
                    push_result(&mut image, &r, &step.instruction)?;
                    progress.done(n, &l.text, t0.elapsed(), &note);
                    result.executed += 1;
                }
                image
            }
        };
        if images.len() <= step.id {
            images.resize(step.id + 1, None);
        }
        images[step.id] = Some(image);
    }

    let stage = &graph.stages[graph.target];
    let last = *stage
        .steps
        .last()
        .ok_or_else(|| BuildError::other("target stage", "has no steps"))?;
    let mut image = images[last]
        .clone()
        .ok_or_else(|| BuildError::other("target stage", "has no result"))?;
    apply_config(&mut image, stage);
    let desc = image.save(&layout, req.tags.first().map(String::as_str))?;
    for out in &req.outputs {
        match out.kind {
            OutputKind::Oci => rbk_image::export_oci_archive(
                &layout,
                &desc,
                req.tags.first().map(String::as_str),
                &out.dest,
            )?,
            OutputKind::Docker => {
                rbk_image::export_docker_archive(&layout, &desc, &req.tags, &out.dest)?
            }
        }
    }
    result.manifest_digest = desc.digest;
    progress.summary(graph.steps.len(), true);
    progress.note(&format!(" => writing image {}", desc.digest));
    Ok(result)
}

/// Puts a cached layer's blob into the worker's layout, from the store.
async fn ensure_blob(store: &dyn Store, layout: &OciLayout, r: &ActionResult) -> Result<()> {
    let digest: OciDigest = r.digest.parse().map_err(|e| {
        BuildError::other("action cache", format!("layer digest {}: {e}", r.digest))
    })?;
    if layout.has_blob(&digest) {
        return Ok(());
    }
    let b3: rbk_store::Digest = r
        .blake3
        .parse()
        .map_err(|e| BuildError::other("action cache", format!("blake3 {}: {e}", r.blake3)))?;
    let bytes = store.get_bytes(b3).await?;
    let got = layout.write_blob(&bytes)?;
    if got != digest {
        return Err(BuildError::other(
            format!("layer {digest}"),
            format!("the store's blob {b3} hashes to {got}"),
        ));
    }
    Ok(())
}

struct ExecCtx<'a> {
    graph: &'a df::Graph,
    images: &'a [Option<Image>],
    executor: &'a Executor,
    layout: &'a OciLayout,
    store: &'a Arc<dyn Store>,
    caches: &'a CacheDirs,
    context: &'a Path,
    worker_dir: &'a Path,
    progress: &'a Progress,
}

fn stage_image<'a>(cx: &ExecCtx<'a>, stage: usize) -> Option<&'a Image> {
    let last = *cx.graph.stages[stage].steps.last()?;
    cx.images.get(last)?.as_ref()
}

/// Runs one step that makes a layer; returns its action result and a note
/// for the progress line.
async fn execute(
    cx: &ExecCtx<'_>,
    state: &mut State,
    image: &Image,
    kind: &df::StepKind,
    n: usize,
    l: &Label,
    result: &mut BuildResult,
) -> Result<(ActionResult, String)> {
    let mut note = String::new();
    let layer = match kind {
        df::StepKind::Mkdir { path, .. } => {
            let tmp = tempfile::tempdir_in(cx.worker_dir)
                .map_err(|e| BuildError::io(cx.worker_dir, e))?;
            let rel = Path::new(path.trim_start_matches('/'));
            if rel.components().any(|c| !matches!(c, Component::Normal(_)))
                && !rel.as_os_str().is_empty()
            {
                return Err(l.unsupported(format!("WORKDIR {path}: not a clean absolute path")));
            }
            let dir = tmp.path().join(rel);
            std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
            let opts = LayerOptions::new(cx.worker_dir.join("tmp"));
            let upper = tmp.path().to_owned();
            tokio::task::spawn_blocking(move || rbk_image::layer_from_upper(&upper, &opts))
                .await
                .map_err(|e| BuildError::other(l.text.clone(), e))??
        }
        df::StepKind::Run(_) | df::StepKind::Copy(_) => {
            let mut inputs = StepInputs {
                context: Some(cx.context.to_owned()),
                ..StepInputs::default()
            };
            let mut stage_deps = BTreeSet::new();
            let (wkind, cache_ids) = match kind {
                df::StepKind::Run(run) => {
                    let (r, ids) = mapping::run_step(&image.config.config, run)
                        .map_err(|m| l.unsupported(m))?;
                    for m in &run.mounts {
                        if let df::Mount::Bind {
                            from: df::FromRef::Stage { stage, .. },
                            ..
                        } = m
                        {
                            stage_deps.insert(*stage);
                        }
                    }
                    (rbk_worker::StepKind::Run(r), ids)
                }
                df::StepKind::Copy(c) => {
                    if let df::FromRef::Stage { stage, .. } = &c.from {
                        stage_deps.insert(*stage);
                    }
                    (
                        rbk_worker::StepKind::Copy(
                            mapping::copy_step(c).map_err(|m| l.unsupported(m))?,
                        ),
                        vec![],
                    )
                }
                _ => unreachable!("matched above"),
            };
            let mut rootfs = Vec::new();
            for s in stage_deps {
                let img = stage_image(cx, s).ok_or_else(|| {
                    BuildError::other(l.text.clone(), format!("stage {s} has no result yet"))
                })?;
                let r = cx
                    .executor
                    .mount_readonly(&layer_refs(img), cx.layout)
                    .await?;
                inputs
                    .stages
                    .insert(mapping::stage_source(s), r.path().to_owned());
                rootfs.push(r);
            }
            let mut restored = 0;
            for id in &cache_ids {
                restored += cx
                    .caches
                    .prepare(cx.store, &state.data, id)
                    .await?
                    .bytes_restored;
                inputs.caches.insert(id.clone(), cx.caches.dir(id));
            }
            result.cache_bytes_restored += restored;
            if !cache_ids.is_empty() {
                note = format!(" (cache: {restored} B restored)");
            }
            let step = rbk_worker::Step {
                base: layer_refs(image),
                kind: wkind,
            };
            let p = cx.progress.clone();
            let sink: rbk_worker::LogSink = Arc::new(move |line: &LogLine| p.log(n, &line.line));
            let out = cx.executor.execute(&step, cx.layout, &inputs, sink).await?;
            drop(rootfs);
            // Cache mounts keep what the step wrote even when it fails (as
            // in BuildKit): commit before looking at the outcome.
            for id in &cache_ids {
                cx.caches
                    .commit(cx.store, &mut state.data, LOCAL_NAMESPACE, id)
                    .await?;
            }
            state.save()?;
            match out.layer {
                Some(layer) if out.succeeded() => layer,
                _ => {
                    let why = if out.timed_out {
                        "killed at its time limit".to_owned()
                    } else {
                        format!("exit code {}", out.exit_code)
                    };
                    cx.progress.failed(n, &l.text, &out.tail);
                    cx.progress.summary(n - 1, false);
                    return Err(BuildError::StepFailed {
                        step: l.text.clone(),
                        file: l.file.clone(),
                        line: l.line,
                        why,
                        tail: out.tail,
                    });
                }
            }
        }
        _ => unreachable!("only layer-making steps are executed"),
    };
    layer.add_to_layout(cx.layout)?;
    layer.put_into(&**cx.store).await?;
    let r = ActionResult {
        digest: layer.digest.to_string(),
        diff_id: layer.diff_id.to_string(),
        blake3: layer.blake3.to_string(),
        size: layer.size,
        media_type: layer.media_type.clone(),
    };
    Ok((r, note))
}
