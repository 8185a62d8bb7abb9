//! The driver: Dockerfile → graph → steps executed in dependency order on
//! the embedded worker, with the action cache, cache-mount heads, and the
//! final image assembled and exported.
//!
//! Sequential and in one process: this is `rbk build`, not the farm. The
//! order is the graph's (dependencies first), so independent stages run one
//! after the other here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbk_dockerfile as df;
use rbk_image::{Descriptor, History, Image, OciDigest, OciLayout, Platform};
use rbk_store::{FilesystemStore, Store};
use rbk_worker::{Executor, LayerRef, LogLine, RuntimeKind, StepInputs, WorkerConfig};

use crate::cache_mounts::{CacheDirs, Prefetch};
use crate::error::{BuildError, Result};
use crate::frontend::{Label, Resolved, Source, apply_config, label, stage_context};
use crate::layer_io::{fetch_blob, mkdir_layer};
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

/// Runs the build. Progress goes to `progress`; the image is saved in the
/// worker's layout (under the first tag) and written to every output.
pub async fn build(req: &BuildRequest, mut progress: Progress) -> Result<BuildResult> {
    let src = Source {
        context: &req.context,
        dockerfile: req.dockerfile.as_deref(),
        target: req.target.as_deref(),
        build_args: &req.build_args,
        base_images: &req.base_images,
        insecure_registries: &req.insecure_registries,
        namespace: LOCAL_NAMESPACE,
    };
    let parsed = src.parse()?;
    let file_name = parsed.file_name.clone();

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

    let Resolved { graph, bases } = parsed.resolve(&src, &layout).await?;
    progress.set_total(graph.steps.len());
    let mut prefetch = start_prefetch(req, &graph, &state, &caches, &store)?;

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
                        &mut prefetch,
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
    fetch_blob(store, layout, &r.digest, &r.blake3, "action cache").await
}

/// Starts restoring, in the background, the cache mounts of every RUN step
/// the action cache will not answer, so that a fresh worker's restore runs
/// while the steps before it do (the base image's unpack, COPY) instead of
/// adding to them. Each step waits for its own ids' restores.
fn start_prefetch(
    req: &BuildRequest,
    graph: &df::Graph,
    state: &State,
    caches: &CacheDirs,
    store: &Arc<dyn Store>,
) -> Result<Prefetch> {
    let mut heads = Vec::new();
    for step in &graph.steps {
        let df::StepKind::Run(run) = &step.kind else {
            continue;
        };
        if !req.no_cache && state.data.actions.contains_key(&step.key.hex()) {
            continue;
        }
        for m in &run.mounts {
            if let df::Mount::Cache { id, .. } = m {
                let head = match state.data.heads.get(id) {
                    Some(h) => Some(
                        h.snapshot
                            .parse()
                            .map_err(|e| BuildError::other(format!("cache {id}: head"), e))?,
                    ),
                    None => None,
                };
                heads.push((id.clone(), head));
            }
        }
    }
    let mut prefetch = Prefetch::default();
    prefetch.start(caches, store, heads);
    Ok(prefetch)
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
#[allow(clippy::too_many_arguments)] // the mutable state of one build, passed down
async fn execute(
    cx: &ExecCtx<'_>,
    state: &mut State,
    prefetch: &mut Prefetch,
    image: &Image,
    kind: &df::StepKind,
    n: usize,
    l: &Label,
    result: &mut BuildResult,
) -> Result<(ActionResult, String)> {
    let mut note = String::new();
    let layer = match kind {
        df::StepKind::Mkdir { path, .. } => mkdir_layer(cx.worker_dir, path)
            .await?
            .map_err(|m| l.unsupported(m))?,
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
            let waiting = Instant::now();
            for id in &cache_ids {
                // A restore started at planning; `prepare` then finds the
                // directory at the head (unless another step moved it).
                if let Some(p) = prefetch.wait(id).await? {
                    restored += p.bytes_restored;
                }
                restored += cx
                    .caches
                    .prepare(cx.store, &state.data, id)
                    .await?
                    .bytes_restored;
                inputs.caches.insert(id.clone(), cx.caches.dir(id));
            }
            let waited = waiting.elapsed();
            result.cache_bytes_restored += restored;
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
            let capturing = Instant::now();
            for id in &cache_ids {
                cx.caches
                    .commit(cx.store, &mut state.data, LOCAL_NAMESPACE, id)
                    .await?;
            }
            state.save()?;
            if !cache_ids.is_empty() {
                // The wait is what the restore cost this step (it ran in
                // the background since the build was planned).
                note = format!(
                    " (cache: {restored} B restored, waited {:.1}s; captured in {:.1}s)",
                    waited.as_secs_f64(),
                    capturing.elapsed().as_secs_f64()
                );
            }
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
