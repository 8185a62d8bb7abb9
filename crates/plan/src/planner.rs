//! `rbk submit`'s planner: Dockerfile + context + options → the graph the
//! coordinator schedules, with everything workers will read already in the
//! content store.
//!
//! One [`StepNode`] per layer-making step (RUN, COPY/ADD, WORKDIR's mkdir);
//! `FROM`, `FROM scratch`, `FROM <stage>` and the config instructions make
//! no node: they fold into the next step's [`FarmStep::parent`] and into
//! the image config, which is known statically (only base images and stage
//! instructions change it). So a stage with nothing but ENV/LABEL/CMD is
//! just its base, and nodes depend only on the steps whose *files* they
//! read: the parent, and the stages named by `COPY --from` and
//! `--mount=from=`.
//!
//! Before anything is sent, base-image layers are put into the store by
//! blake3 (`find_missing` first, so a second build uploads nothing) and the
//! build context — only the paths the graph kept after `.dockerignore` — is
//! captured as a snapshot. Workers need neither registry access nor the
//! client's filesystem.
//!
//! Secrets never enter a payload or a key: steps name secret *ids*, values
//! travel in `SubmitRequest.secrets` (see [`load_secrets`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rbk_dockerfile as df;
use rbk_image::{History, Image, OciLayout, Platform};
use rbk_proto::build::{CacheMount, StepNode};
use rbk_store::{Digest, Store, stream_from_bytes};

use crate::error::{BuildError, Result};
use rbk_worker::payload::{FARM_STEP_VERSION, FarmStep, ImageSource, LayerDesc, Work, current_platform};
use crate::frontend::{self, Source, apply_config, label};
use crate::image_sources;
use crate::mapping;
use crate::run_defaults::RunDefaults;

/// The namespace the client plans cache ids in. The coordinator scopes
/// every cache id and action-cache entry by the caller's tenant anyway; the
/// prefix only keeps farm keys apart from `rbk build`'s local ones.
pub const FARM_NAMESPACE: &str = "farm";


/// What `rbk submit` asks for, as far as planning goes.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub context: PathBuf,
    /// Default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `FROM <name>` → an OCI layout `DIR` or `DIR:REF_NAME`.
    pub base_images: BTreeMap<String, String>,
    pub insecure_registries: Vec<String>,
    /// The ids `--secret` supplied (values stay with the caller).
    pub secret_ids: BTreeSet<String>,
    /// The ssh ids `--ssh` serves (the agents stay with the caller).
    pub ssh_ids: BTreeSet<String>,
    /// The entitlements the build is run with (`--allow`): a RUN step that
    /// needs one not listed is refused here, naming its line, before
    /// anything is uploaded or run.
    pub allow: BTreeSet<rbk_worker::Entitlement>,
    /// `--network`, `--add-host`, `--shm-size`, `--ulimit`: applied to
    /// every RUN step.
    pub run_defaults: RunDefaults,
    /// `--label`: set on the final image's config, over the Dockerfile's.
    pub labels: BTreeMap<String, String>,
    /// The client's scratch space: pulled base images (kept, so the next
    /// submit pulls nothing) and the staged context.
    pub work_dir: PathBuf,
    /// Registry `FROM`s resolved and pulled by the farm (`rbk submit`);
    /// `None`: pulled here and their layers uploaded (`rbk build`).
    pub farm: Option<Arc<dyn crate::farm_bases::FarmBases>>,
    /// The platforms to build for (`--platform`, normalised; see
    /// [`crate::platforms::parse_platforms`]); by default this machine's.
    /// More than one makes one image index.
    pub platforms: Vec<String>,
}

impl PlanRequest {
    pub fn new(context: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        PlanRequest {
            context: context.into(),
            dockerfile: None,
            build_args: BTreeMap::new(),
            target: None,
            base_images: BTreeMap::new(),
            insecure_registries: vec![],
            secret_ids: BTreeSet::new(),
            ssh_ids: BTreeSet::new(),
            allow: BTreeSet::new(),
            run_defaults: RunDefaults::default(),
            labels: BTreeMap::new(),
            work_dir: work_dir.into(),
            farm: None,
            platforms: vec![current_platform()],
        }
    }

    fn source<'a>(&'a self, platform: &'a str) -> Source<'a> {
        Source {
            context: &self.context,
            dockerfile: self.dockerfile.as_deref(),
            target: self.target.as_deref(),
            build_args: &self.build_args,
            base_images: &self.base_images,
            insecure_registries: &self.insecure_registries,
            namespace: FARM_NAMESPACE,
            farm: self.farm.as_deref(),
            client_dir: &self.work_dir,
            platform,
        }
    }
}

/// How to make the final image once the steps are done: the target
/// stage's config (base image config + the stage's instructions, history
/// included) and where its filesystem comes from — the last node's
/// [`FarmResult`](rbk_worker::payload::FarmResult), or the bare base image when the
/// target stage makes no layer.
#[derive(Debug, Clone)]
pub struct FinalImage {
    /// Config and history as planned; the layer list is replaced by the
    /// result's at assembly.
    pub image: Image,
    pub source: ImageSource,
}

/// A planned build, ready to submit.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<StepNode>,
    /// The build context's snapshot digest (`SubmitRequest.context_digest`).
    pub context_digest: String,
    pub final_image: FinalImage,
    /// The Dockerfile's path as errors name it.
    pub file_name: String,
    /// Steps of the Dockerfile graph (FROMs included), for progress totals.
    pub graph_steps: usize,
    /// What planning put into the store, for progress lines.
    pub uploads: Uploads,
    /// One progress line per FROM of the stages the target needs, then one
    /// per `ADD <url>` with the digest it resolved to;
    /// (`[1/3] FROM python-base@sha256:…`), as BuildKit prints them: the
    /// base is resolved at planning, so these steps are done before any
    /// worker runs.
    pub from_lines: Vec<String>,
    /// How long resolving (and pulling) the bases took.
    pub resolve_took: std::time::Duration,
    /// The build checks (BuildKit's warnings) of the resolved graph, for
    /// the summary after the build.
    pub checks: Vec<df::Check>,
    /// One final image per platform built, in `--platform` order; one
    /// entry (`final_image`'s) for a single-platform build.
    pub images: Vec<PlatformImage>,
}

/// The final image of one platform of a build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `os/arch[/variant]`, normalised.
    pub platform: String,
    pub final_image: FinalImage,
}

impl Plan {
    /// The step whose result the final image is made from (none when the
    /// target is a base image with a new config).
    pub fn target_step(&self) -> Option<&str> {
        self.final_image.target_step()
    }

    /// Every platform's [`Plan::target_step`].
    pub fn target_steps(&self) -> Vec<String> {
        self.images.iter().filter_map(|i| i.final_image.target_step().map(str::to_owned)).collect()
    }
}

impl FinalImage {
    /// The step whose result this image is made from (none when it is a
    /// base image with a new config).
    pub fn target_step(&self) -> Option<&str> {
        match &self.source {
            ImageSource::Step { step_id } => Some(step_id),
            _ => None,
        }
    }
}

/// What planning sent to the farm's store (a second submit of the same
/// bases and context sends next to nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploads {
    pub base_layers: usize,
    /// Base layer blobs the store lacked, and their bytes.
    pub base_layers_sent: usize,
    pub base_bytes_sent: u64,
    /// Base layers the farm fetched from registries itself (`rbk submit`),
    /// and their bytes.
    pub farm_layers_pulled: usize,
    pub farm_bytes_pulled: u64,
    pub context_files: usize,
    /// Bytes of context packs and manifest sent.
    pub context_bytes_sent: u64,
}

/// A Dockerfile that parsed; nothing has been pulled or sent yet.
pub struct Parsed {
    /// One parse per platform: `TARGETARCH` and friends differ.
    per_platform: Vec<(String, frontend::Parsed)>,
}

/// Reads and parses the Dockerfile: a syntax error names the file and line
/// before any network traffic.
pub fn parse(req: &PlanRequest) -> Result<Parsed> {
    let mut per_platform = Vec::new();
    for p in &req.platforms {
        per_platform.push((p.clone(), req.source(p).parse()?));
    }
    if per_platform.is_empty() {
        return Err(BuildError::NoPlatform);
    }
    Ok(Parsed { per_platform })
}

impl Parsed {
    /// Resolves base images, uploads their layers and the context into
    /// `store`, and plans the nodes: for each platform, merged into one
    /// graph when there are several (see [`crate::platforms`]).
    pub async fn plan(&self, req: &PlanRequest, store: Arc<dyn Store>) -> Result<Plan> {
        let multi = self.per_platform.len() > 1;
        let mut plans = Vec::new();
        for (platform, parsed) in &self.per_platform {
            let prefix = if multi { crate::platforms::node_prefix(platform) } else { String::new() };
            plans.push(plan_platform(parsed, req, platform, &prefix, store.clone()).await?);
        }
        merge_plans(plans)
    }
}

/// One plan out of per-platform plans (in `--platform` order): their
/// graphs merged ([`crate::platforms::merge_steps`]), every platform's
/// final image, progress lines naming their platform, uploads summed. A
/// single plan is returned as it is.
pub(crate) fn merge_plans(plans: Vec<Plan>) -> Result<Plan> {
    if plans.len() < 2 {
        return plans.into_iter().next().ok_or(BuildError::NoPlatform);
    }
    let mut plans = plans;
    let graphs = plans.iter_mut().map(|p| std::mem::take(&mut p.steps)).collect();
    let (steps, renames) = crate::platforms::merge_steps(graphs)?;
    let mut plans = plans.into_iter().zip(renames);
    let (mut merged, _) = plans.next().ok_or(BuildError::NoPlatform)?;
    let first = merged.images[0].platform.clone();
    merged.from_lines = merged.from_lines.iter().map(|l| crate::platforms::with_platform(l, &first)).collect();
    for (plan, renamed) in plans {
        let platform = plan.images[0].platform.clone();
        for mut image in plan.images {
            crate::platforms::rename_source(&mut image.final_image.source, &renamed);
            merged.images.push(image);
        }
        merged.from_lines.extend(plan.from_lines.iter().map(|l| crate::platforms::with_platform(l, &platform)));
        merged.graph_steps += plan.graph_steps;
        merged.resolve_took += plan.resolve_took;
        let (u, v) = (&mut merged.uploads, plan.uploads);
        u.base_layers += v.base_layers;
        u.base_layers_sent += v.base_layers_sent;
        u.base_bytes_sent += v.base_bytes_sent;
        u.farm_layers_pulled += v.farm_layers_pulled;
        u.farm_bytes_pulled += v.farm_bytes_pulled;
        u.context_bytes_sent += v.context_bytes_sent;
        for c in plan.checks {
            if !merged.checks.contains(&c) {
                merged.checks.push(c);
            }
        }
    }
    merged.steps = steps;
    Ok(merged)
}

/// Plans one platform of a build (node ids prefixed with `prefix`).
async fn plan_platform(parsed: &frontend::Parsed, req: &PlanRequest, platform: &str, prefix: &str, store: Arc<dyn Store>) -> Result<Plan> {
    let src = req.source(platform);
    std::fs::create_dir_all(&req.work_dir).map_err(|e| BuildError::io(&req.work_dir, e))?;
    let layout = OciLayout::create(req.work_dir.join("images"))?;
    let t0 = std::time::Instant::now();
    let resolved = parsed.resolve(&src, &layout).await?;
    let resolve_took = t0.elapsed();

    let mut uploads = Uploads::default();
    let mut base_layers = HashMap::new();
    for (reference, image) in &resolved.bases {
        let layers = match resolved.farm_bases.get(reference) {
            // Already in the farm's store: nothing to send.
            Some(b) => {
                uploads.base_layers += b.layers.len();
                uploads.farm_layers_pulled += b.layers_pulled as usize;
                uploads.farm_bytes_pulled += b.bytes_pulled;
                b.layers.clone()
            }
            None => upload_layers(&*store, &layout, &req.work_dir.join("layer-blake3"), image, &mut uploads).await?,
        };
        base_layers.insert(reference.clone(), layers);
    }

    let staged = tempfile::tempdir_in(&req.work_dir).map_err(|e| BuildError::io(&req.work_dir, e))?;
    frontend::stage_context(&resolved.graph, &req.context, staged.path())?;
    // The last snapshot of this context and its COPYs' snapshots (those
    // the store still has): content they hold is not sent again. No
    // build names the whole one (steps name their COPY's), so the store
    // collector may delete it after its grace; the COPYs' live as long
    // as the builds naming them.
    let memo = context_memo(&req.work_dir, &req.context);
    let mut opts = rbk_snapshot::CaptureOptions::new("context");
    let noted: Vec<Digest> = std::fs::read_to_string(&memo)
        .map(|s| s.split_whitespace().filter_map(|d| d.parse().ok()).take(MEMO_SNAPSHOTS).collect())
        .unwrap_or_default();
    if let Some((whole, copies)) = noted.split_first() {
        opts.base = rbk_snapshot::Snapshot::load(&*store, *whole).await.ok();
        for d in copies {
            if let Ok(s) = rbk_snapshot::Snapshot::load(&*store, *d).await {
                opts.dedupe_from.push(s.manifest);
            }
        }
    }
    let (snapshot, stats) = rbk_snapshot::capture(store.clone(), staged.path(), &opts).await?;
    let context_digest = snapshot.digest.to_string();
    uploads.context_files = stats.files;
    uploads.context_bytes_sent = stats.bytes_uploaded;
    let step_contexts = step_contexts(&*store, &resolved.graph, &snapshot, &mut uploads).await?;
    let copies: BTreeSet<&String> = step_contexts.values().filter(|d| **d != context_digest).collect();
    remember_context(&memo, &context_digest, copies.into_iter().take(MEMO_SNAPSHOTS - 1));

    let bases = Bases {
        images: &resolved.bases,
        layers: &base_layers,
    };
    let (steps, mut final_image) = plan_graph(
        &resolved.graph,
        &bases,
        &PlanContext {
            file_name: &parsed.file_name,
            context_digest: &context_digest,
            step_contexts: &step_contexts,
            platform,
            id_prefix: prefix,
            secret_ids: &req.secret_ids,
            ssh_ids: &req.ssh_ids,
            allow: &req.allow,
            run_defaults: &req.run_defaults,
        },
    )?;
    if !req.labels.is_empty() {
        final_image.image.config.config.labels.get_or_insert_with(BTreeMap::new).extend(req.labels.clone());
    }
    Ok(Plan {
        steps,
        context_digest,
        images: vec![PlatformImage { platform: platform.to_owned(), final_image: final_image.clone() }],
        final_image,
        file_name: parsed.file_name.clone(),
        graph_steps: resolved.graph.steps.len(),
        uploads,
        from_lines: from_lines(&resolved.graph, &resolved.bases, &parsed.file_name, platform).into_iter().chain(resolved.remote.lines()).collect(),
        resolve_took,
        checks: resolved.graph.checks.clone(),
    })
}

/// The FROM steps' labels, with the digest each base resolved to.
fn from_lines(graph: &df::Graph, bases: &HashMap<String, Image>, file: &str, target: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for step in &graph.steps {
        match &step.kind {
            df::StepKind::Image { reference, platform, .. } => {
                let text = label(graph, step, file).text;
                match bases.get(&crate::platforms::base_key(reference, platform.as_deref(), target)) {
                    Some(image) if !text.contains('@') => lines.push(format!("{text}@{}", image.manifest_descriptor.digest)),
                    _ => lines.push(text),
                }
            }
            df::StepKind::Scratch => lines.push(label(graph, step, file).text),
            _ => {}
        }
    }
    lines.extend(image_sources::from_lines(graph, bases, target));
    lines
}

/// Each context-reading step's own snapshot (a COPY's sources, a RUN's
/// context bind mounts), by graph step: the entries it reads out of the
/// whole context's (`rbk_snapshot::subset`; only the small manifest is
/// new). The coordinator keys a step by its snapshot's tree
/// (`rbk_coordinator::action_key`), so a file only another step reads does
/// not change this step's key, and the worker sees no more than that.
async fn step_contexts(
    store: &dyn Store,
    graph: &df::Graph,
    whole: &rbk_snapshot::Snapshot,
    uploads: &mut Uploads,
) -> Result<HashMap<df::StepId, String>> {
    let mut by_paths: HashMap<BTreeSet<Vec<u8>>, String> = HashMap::new();
    let mut out = HashMap::new();
    for step in &graph.steps {
        let Some(read) = step.kind.context_paths() else { continue };
        let paths: BTreeSet<Vec<u8>> = read.iter().filter_map(|p| snapshot_path(p)).collect();
        let digest = match by_paths.get(&paths) {
            Some(d) => d.clone(),
            None => {
                let sub = context_subset(&whole.manifest, &paths);
                let (snapshot, uploaded) = rbk_snapshot::Snapshot::commit(store, sub).await?;
                uploads.context_bytes_sent += uploaded;
                by_paths.entry(paths).or_insert(snapshot.digest.to_string()).clone()
            }
        };
        out.insert(step.id, digest);
    }
    Ok(out)
}

/// The entries of the staged context one COPY reads, owned by 0:0: the
/// staged copy belongs to whoever runs the client, and the worker's COPY
/// owns context files by 0:0 (or `--chown`) whatever the snapshot says, so
/// the owner would only split the action key (which hashes the tree,
/// owners included) between two users building the same checkout.
fn context_subset(whole: &rbk_snapshot::Manifest, paths: &BTreeSet<Vec<u8>>) -> rbk_snapshot::Manifest {
    let mut sub = rbk_snapshot::subset(whole, paths.iter().map(Vec::as_slice));
    for e in &mut sub.entries {
        (e.uid, e.gid) = (0, 0);
    }
    sub
}

/// A context path as the staged context's snapshot names it (`./a//b/` →
/// `a/b`); `None` for the context's root, which the snapshot has no entry
/// for (a match of the root lists everything under it too).
fn snapshot_path(p: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    (!parts.is_empty()).then(|| parts.join("/").into_bytes())
}

/// Snapshots a context's memo names at most (the whole context's, then its
/// COPYs'): each costs a store read at the next submit.
const MEMO_SNAPSHOTS: usize = 16;

/// Where the client notes the last snapshot of a context directory.
fn context_memo(work_dir: &std::path::Path, context: &std::path::Path) -> PathBuf {
    let abs = std::path::absolute(context).unwrap_or_else(|_| context.to_path_buf());
    let name = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
    work_dir.join("contexts").join(name.as_str())
}

/// Notes a context's snapshot and its COPYs' (see [`MEMO_SNAPSHOTS`]).
fn remember_context<'a>(memo: &std::path::Path, digest: &'a str, copies: impl Iterator<Item = &'a String>) {
    remember(memo, &std::iter::once(digest).chain(copies.map(String::as_str)).collect::<Vec<_>>().join("\n"));
}

/// Writes a note atomically, best effort: a lost note (the last context
/// snapshot, a layer's blake3) only means the next submit sends the context
/// in full again or hashes the layer again.
fn remember(memo: &std::path::Path, digest: &str) {
    let Some(dir) = memo.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if let Ok(tmp) = tempfile::NamedTempFile::new_in(dir)
        && std::fs::write(tmp.path(), digest).is_ok()
    {
        let _ = tmp.persist(memo);
    }
}

/// A layer's blake3 noted by an earlier build. Trusted only while the blob
/// (named by its sha256, which the layout checked when it took the blob) is
/// still there with the size the image gives, and the note is that of a
/// blob of that size; anything else reads and hashes the blob again.
fn recall_blake3(memo: &Path, blob: &Path, size: u64) -> Option<Digest> {
    let d: Digest = std::fs::read_to_string(memo).ok()?.trim().parse().ok()?;
    let on_disk = std::fs::metadata(blob).ok()?.len();
    (d.size() == size && on_disk == size).then_some(d)
}

/// Puts an image's layer blobs into the store (those it lacks) and names
/// each by all its digests.
/// `memo_dir` remembers each layer's blake3 by its sha256, so an unchanged
/// base is not read and hashed again on every build (a 156 MB python base
/// cost a fully cached `rbk build` ~0.18 s).
async fn upload_layers(store: &dyn Store, layout: &OciLayout, memo_dir: &Path, image: &Image, uploads: &mut Uploads) -> Result<Vec<LayerDesc>> {
    let mut descs = Vec::new();
    let mut blobs = Vec::new();
    for (l, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        let path = layout.blob_path(&l.digest);
        let memo = memo_dir.join(l.digest.to_string().replace(':', "-"));
        let b3 = match recall_blake3(&memo, &path, l.size) {
            Some(b3) => b3,
            None => {
                let bytes = tokio::fs::read(&path).await.map_err(|e| BuildError::io(&path, e))?;
                let b3 = Digest::of(&bytes);
                remember(&memo, &b3.to_string());
                b3
            }
        };
        descs.push(LayerDesc {
            digest: l.digest.to_string(),
            diff_id: diff_id.to_string(),
            blake3: b3.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        });
        blobs.push((b3, path));
    }
    let wanted: Vec<Digest> = blobs.iter().map(|(d, _)| *d).collect();
    let missing: BTreeSet<Digest> = store.find_missing(&wanted).await?.into_iter().collect();
    uploads.base_layers += blobs.len();
    for (b3, path) in blobs {
        if missing.contains(&b3) {
            let bytes = tokio::fs::read(&path).await.map_err(|e| BuildError::io(&path, e))?;
            uploads.base_layers_sent += 1;
            uploads.base_bytes_sent += bytes.len() as u64;
            store.put(b3, stream_from_bytes(Bytes::from(bytes))).await?;
        }
    }
    Ok(descs)
}

/// `--secret id=ID,src=FILE` or `--secret id=ID,env=VAR` (Docker's forms;
/// `source=` and `type=file|env` are accepted too; without `src`/`env` the
/// value is the variable `ID`, else the file `ID`). Values are read here,
/// once, and never printed: errors name the id and where it was looked for.
pub fn load_secrets(specs: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                BuildError::SecretSpec { spec: spec.to_string(), problem: format!("{part:?} is not key=value") }
            })?;
            match k {
                "id" => id = Some(v.to_owned()),
                "src" | "source" => src = Some(v.to_owned()),
                "env" => env = Some(v.to_owned()),
                "type" => kind = Some(v.to_owned()),
                _ => {
                    return Err(BuildError::SecretSpec {
                        spec: spec.to_string(),
                        problem: format!("unknown key {k:?} (expected id, src, env or type)"),
                    });
                }
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| BuildError::SecretSpec { spec: spec.to_string(), problem: "needs id=<name>".into() })?;
        let from_env = match (kind.as_deref(), &src, &env) {
            (Some("env"), _, _) | (None, None, Some(_)) => true,
            (Some("file") | None, _, _) => false,
            (Some(t), _, _) => {
                return Err(BuildError::SecretSpec { spec: spec.to_string(), problem: format!("type={t}: expected file or env") });
            }
        };
        let value = if from_env {
            let var = env.or(src).unwrap_or_else(|| id.clone());
            std::env::var_os(&var)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| BuildError::SecretEnv { id: id.clone(), var: var.clone() })?
        } else {
            let file = PathBuf::from(src.unwrap_or_else(|| id.clone()));
            std::fs::read(&file).map_err(|source| BuildError::SecretFile { id: id.clone(), path: file.clone(), source })?
        };
        if out.insert(id.clone(), value).is_some() {
            return Err(BuildError::SecretTwice { id });
        }
    }
    Ok(out)
}

/// The base images a graph names, with their layers as the store knows them.
pub(crate) struct Bases<'a> {
    pub images: &'a HashMap<String, Image>,
    pub layers: &'a HashMap<String, Vec<LayerDesc>>,
}

pub(crate) struct PlanContext<'a> {
    pub file_name: &'a str,
    /// The whole context's snapshot: what a context-reading step without
    /// one of its own in `step_contexts` names.
    pub context_digest: &'a str,
    /// Each context-reading COPY's snapshot of just what it reads.
    pub step_contexts: &'a HashMap<df::StepId, String>,
    /// The target platform (`FROM scratch` builds for it).
    pub platform: &'a str,
    /// Prepended to every node id (one per platform of a multi-platform
    /// build, so their graphs can be merged).
    pub id_prefix: &'a str,
    pub secret_ids: &'a BTreeSet<String>,
    pub ssh_ids: &'a BTreeSet<String>,
    pub allow: &'a BTreeSet<rbk_worker::Entitlement>,
    pub run_defaults: &'a RunDefaults,
}

/// The image after a graph step, as far as the planner knows it: its
/// config (and history), and where its files come from.
#[derive(Clone)]
struct Planned {
    image: Image,
    source: ImageSource,
}

fn step_deps(parent: &ImageSource, stages: &BTreeMap<String, ImageSource>) -> Vec<String> {
    let mut deps = BTreeSet::new();
    for s in std::iter::once(parent).chain(stages.values()) {
        if let ImageSource::Step { step_id } = s {
            deps.insert(step_id.clone());
        }
    }
    deps.into_iter().collect()
}

fn sharing_name(s: df::Sharing) -> &'static str {
    match s {
        df::Sharing::Shared => "shared",
        df::Sharing::Private => "private",
        df::Sharing::Locked => "locked",
    }
}

/// The graph → nodes and the final image recipe. Pure: no I/O.
pub(crate) fn plan_graph(
    graph: &df::Graph,
    bases: &Bases<'_>,
    cx: &PlanContext<'_>,
) -> Result<(Vec<StepNode>, FinalImage)> {
    let platform = Platform::parse(cx.platform, "platform")?;
    let mut planned: HashMap<df::StepId, Planned> = HashMap::new();
    let mut nodes: Vec<StepNode> = Vec::new();
    // Identical keys are identical work: one node serves every step with
    // that key (two stages doing the same thing from the same base).
    let mut by_key: HashMap<String, String> = HashMap::new();

    for step in &graph.steps {
        let l = label(graph, step, cx.file_name);
        let parent = || -> Result<Planned> {
            step.parent.and_then(|p| planned.get(&p).cloned()).ok_or_else(|| {
                l.not_planned("the step's parent".into())
            })
        };
        let p = match &step.kind {
            df::StepKind::Image { reference, platform, .. } => {
                let key = crate::platforms::base_key(reference, platform.as_deref(), cx.platform);
                let image = bases.images.get(&key).cloned().ok_or_else(|| {
                    l.not_planned(format!("base image {reference}"))
                })?;
                let layers = bases.layers.get(&key).cloned().unwrap_or_default();
                let source = if layers.is_empty() { ImageSource::Scratch } else { ImageSource::Layers { layers } };
                Planned { image, source }
            }
            df::StepKind::Scratch => Planned {
                image: Image::scratch(&platform),
                source: ImageSource::Scratch,
            },
            df::StepKind::Stage { stage } => {
                let mut p = parent()?;
                apply_config(&mut p.image, &graph.stages[*stage]);
                p
            }
            kind => {
                let mut p = parent()?;
                let key = step.key.hex();
                let id = match by_key.get(&key) {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("{}s{}", cx.id_prefix, step.id);
                        nodes.push(plan_node(graph, step, kind, &p, &planned, bases, &id, &key, cx, &l)?);
                        by_key.insert(key, id.clone());
                        id
                    }
                };
                p.image.config.history.push(History {
                    created_by: Some(step.instruction.clone()),
                    ..Default::default()
                });
                p.source = ImageSource::Step { step_id: id };
                p
            }
        };
        planned.insert(step.id, p);
    }

    let stage = &graph.stages[graph.target];
    let mut last = stage_result(graph, &planned, graph.target)
        .ok_or(BuildError::EmptyTarget)?;
    apply_config(&mut last.image, stage);
    Ok((
        nodes,
        FinalImage {
            image: last.image,
            source: last.source,
        },
    ))
}

/// The image a stage ends with (its last step's), once planned.
fn stage_result(graph: &df::Graph, planned: &HashMap<df::StepId, Planned>, stage: usize) -> Option<Planned> {
    planned.get(graph.stages[stage].steps.last()?).cloned()
}

#[allow(clippy::too_many_arguments)]
fn plan_node(
    graph: &df::Graph,
    step: &df::Step,
    kind: &df::StepKind,
    parent: &Planned,
    planned: &HashMap<df::StepId, Planned>,
    bases: &Bases<'_>,
    id: &str,
    key: &str,
    cx: &PlanContext<'_>,
    l: &frontend::Label,
) -> Result<StepNode> {
    debug_assert!(!matches!(step.kind, df::StepKind::Image { .. }));
    let mut stage_deps = BTreeSet::new();
    let mut cache_mounts = Vec::new();
    let mut secret_ids = Vec::new();
    let mut allow = Vec::new();
    let work = match kind {
        df::StepKind::Mkdir { path, .. } => Work::Mkdir { path: path.clone() },
        df::StepKind::Run(run) => {
            let (mut r, _) = mapping::run_step(&parent.image.config.config, run)
                .map_err(|m| l.unsupported(m))?;
            cx.run_defaults.apply(run, &mut r);
            for e in rbk_worker::entitlements::required(&r) {
                if !cx.allow.contains(&e) {
                    return Err(l.unsupported(format!(
                        "RUN {} needs the entitlement {e}, which this build was not run with: pass --allow {e} (the worker pool must allow it too)",
                        e.flag()
                    )));
                }
                allow.push(e);
            }
            for m in &run.mounts {
                if let df::Mount::Secret { id, .. } = m {
                    secret_ids.push(id.clone());
                }
                match m {
                    df::Mount::Bind { from: df::FromRef::Stage { stage, .. }, .. } => {
                        stage_deps.insert(*stage);
                    }
                    df::Mount::Cache { id, sharing, from, .. } => {
                        // A seed read from a stage (when the cache is new).
                        if let Some((df::FromRef::Stage { stage, .. }, _)) = from {
                            stage_deps.insert(*stage);
                        }
                        cache_mounts.push(CacheMount { id: id.clone(), sharing: sharing_name(*sharing).into() });
                    }
                    df::Mount::Secret { id, required: true, .. } if !cx.secret_ids.contains(id) => {
                        return Err(l.unsupported(format!(
                            "needs secret {id:?}, but no --secret id={id} was given"
                        )));
                    }
                    df::Mount::Ssh { id, required: true, .. } if !cx.ssh_ids.contains(id) => {
                        return Err(l.unsupported(format!(
                            "needs ssh agent {id:?}, but no --ssh {id} was given"
                        )));
                    }
                    _ => {}
                }
            }
            // An optional agent the client does not serve: the step runs
            // without it (no socket, no SSH_AUTH_SOCK), as in BuildKit. The
            // mount stays in the step's cache key either way.
            r.mounts.retain(|m| !matches!(&m.kind, rbk_worker::MountKind::Ssh { id, .. } if !cx.ssh_ids.contains(id)));
            Work::Step { step: rbk_worker::StepKind::Run(r) }
        }
        df::StepKind::Copy(c) => {
            match &c.from {
                df::FromRef::Stage { stage, .. } => {
                    stage_deps.insert(*stage);
                }
                df::FromRef::Context | df::FromRef::Image { .. } => {}
            }
            Work::Step {
                step: rbk_worker::StepKind::Copy(mapping::copy_step(c).map_err(|m| l.unsupported(m))?),
            }
        }
        _ => unreachable!("only layer-making steps become nodes"),
    };
    let mut stages = BTreeMap::new();
    for s in stage_deps {
        let r = stage_result(graph, planned, s)
            .ok_or_else(|| l.not_planned(format!("stage {s}")))?;
        stages.insert(mapping::stage_source(s), r.source);
    }
    stages.extend(image_sources::stage_entries(kind, bases.layers, cx.platform).map_err(|m| l.not_planned(m))?);
    let payload = FarmStep {
        version: FARM_STEP_VERSION,
        label: l.text.clone(),
        file: l.file.clone(),
        line: l.line,
        parent: parent.source.clone(),
        work,
        cache_ids: cache_mounts.iter().map(|c| c.id.clone()).collect(),
        context: kind.context_paths().map(|_| cx.step_contexts.get(&step.id).cloned().unwrap_or_else(|| cx.context_digest.to_owned())),
        stages,
        allow,
    };
    // A stage runs for its base's platform (`FROM --platform=$BUILDPLATFORM`
    // runs natively), `FROM scratch` for the target's.
    let node_platform = Platform::of_config(&parent.image.config).map_or_else(|| cx.platform.to_owned(), |p| p.to_string());
    Ok(StepNode {
        id: id.to_owned(),
        key: key.to_owned(),
        deps: step_deps(&payload.parent, &payload.stages),
        platform: node_platform,
        labels: Default::default(),
        cache_mounts,
        payload: serde_json::to_vec(&payload)
            .map_err(|source| BuildError::EncodePayload { step: l.text.clone(), source })?,
        name: l.text.clone(),
        secret_ids,
    })
}

/// The payload of a planned node (for tests and `rbk submit --dry-run`-like
/// inspection).
pub fn payload_of(node: &StepNode) -> Result<FarmStep> {
    serde_json::from_slice(&node.payload)
        .map_err(|source| BuildError::BadPayload { step_id: node.id.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_image::{Descriptor, OciDigest};

    fn busybox() -> (Image, Vec<LayerDesc>) {
        let mut image = Image::scratch(&Platform::linux_amd64());
        image.config.config.env = Some(vec!["PATH=/bin".into()]);
        let digest = OciDigest::of(b"layer");
        let diff_id = OciDigest::of(b"tar");
        image.manifest.layers.push(Descriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", digest, 5));
        image.config.rootfs.diff_ids.push(diff_id);
        let desc = LayerDesc {
            digest: digest.to_string(),
            diff_id: diff_id.to_string(),
            blake3: Digest::of(b"layer").to_string(),
            size: 5,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        (image, vec![desc])
    }

    fn plan_with(dockerfile: &str, target: Option<&str>, secrets: &[&str]) -> Result<(Vec<StepNode>, FinalImage)> {
        plan_serving(dockerfile, target, secrets, &["default"])
    }

    /// Plans as a client serving the ssh agents `ssh`.
    fn plan_serving(dockerfile: &str, target: Option<&str>, secrets: &[&str], ssh: &[&str]) -> Result<(Vec<StepNode>, FinalImage)> {
        plan_full(dockerfile, target, secrets, ssh, &[])
    }

    /// Plans as a client run with `--allow` for each of `allow`.
    fn plan_allowing(dockerfile: &str, allow: &[rbk_worker::Entitlement]) -> Result<(Vec<StepNode>, FinalImage)> {
        plan_full(dockerfile, None, &[], &[], allow)
    }

    fn plan_full(
        dockerfile: &str,
        target: Option<&str>,
        secrets: &[&str],
        ssh: &[&str],
        allow: &[rbk_worker::Entitlement],
    ) -> Result<(Vec<StepNode>, FinalImage)> {
        let ctx_dir = tempfile::tempdir().unwrap();
        std::fs::write(ctx_dir.path().join("a.txt"), "a").unwrap();
        let opts = df::BuildOptions {
            target: target.map(str::to_owned),
            namespace: FARM_NAMESPACE.into(),
            ..df::BuildOptions::default()
        };
        let graph = df::build_graph(dockerfile, &opts, &df::FsContext::new(ctx_dir.path()), &())?;
        let (image, layers) = busybox();
        let images = HashMap::from([(crate::platforms::base_key("busybox", None, "linux/amd64"), image)]);
        let layers = HashMap::from([(crate::platforms::base_key("busybox", None, "linux/amd64"), layers)]);
        let secret_ids = secrets.iter().map(|s| s.to_string()).collect();
        let ssh_ids = ssh.iter().map(|s| s.to_string()).collect();
        let allow = allow.iter().copied().collect();
        plan_graph(
            &graph,
            &Bases { images: &images, layers: &layers },
            &PlanContext { file_name: "Dockerfile", context_digest: "ctx", step_contexts: &HashMap::new(), platform: "linux/amd64", id_prefix: "", secret_ids: &secret_ids, ssh_ids: &ssh_ids, allow: &allow, run_defaults: &RunDefaults::default() },
        )
    }

    /// Plans `dockerfile` for `platform` (built on linux/amd64) as one
    /// platform of a multi-platform build: busybox resolves to an image of
    /// the platform asked for.
    fn plan_for(dockerfile: &str, platform: &str) -> Plan {
        let opts = df::BuildOptions {
            namespace: FARM_NAMESPACE.into(),
            target_platform: platform.into(),
            build_platform: "linux/amd64".into(),
            ..df::BuildOptions::default()
        };
        let ctx_dir = tempfile::tempdir().unwrap();
        let graph = df::build_graph(dockerfile, &opts, &df::FsContext::new(ctx_dir.path()), &()).unwrap();
        let (amd64, amd64_layers) = busybox();
        let (mut arm64, arm64_layers) = busybox();
        arm64.config.architecture = "arm64".into();
        let mut images = HashMap::new();
        let mut layers = HashMap::new();
        for from in [None, Some("linux/amd64"), Some("linux/arm64")] {
            let arm = from.unwrap_or(platform) == "linux/arm64";
            let key = crate::platforms::base_key("busybox", from, platform);
            images.insert(key.clone(), if arm { arm64.clone() } else { amd64.clone() });
            layers.insert(key, if arm { arm64_layers.clone() } else { amd64_layers.clone() });
        }
        let none = BTreeSet::new();
        let prefix = crate::platforms::node_prefix(platform);
        let cx = PlanContext {
            file_name: "Dockerfile",
            context_digest: "ctx",
            step_contexts: &HashMap::new(),
            platform,
            id_prefix: &prefix,
            secret_ids: &none,
            ssh_ids: &none,
            allow: &BTreeSet::new(),
            run_defaults: &RunDefaults::default(),
        };
        let (steps, final_image) = plan_graph(&graph, &Bases { images: &images, layers: &layers }, &cx).unwrap();
        Plan {
            steps,
            context_digest: "ctx".into(),
            images: vec![PlatformImage { platform: platform.into(), final_image: final_image.clone() }],
            final_image,
            file_name: "Dockerfile".into(),
            graph_steps: graph.steps.len(),
            uploads: Uploads::default(),
            from_lines: vec![],
            resolve_took: std::time::Duration::ZERO,
            checks: vec![],
        }
    }

    #[test]
    fn two_platforms_share_a_build_platform_step_and_run_their_own_on_their_platform() {
        let df = "FROM --platform=$BUILDPLATFORM busybox AS tools\nRUN make-tools\n\
                  FROM busybox\nCOPY --from=tools /t /t\nRUN use-tools\n";
        let plan = merge_plans(vec![plan_for(df, "linux/amd64"), plan_for(df, "linux/arm64")]).unwrap();
        let nodes: Vec<(&str, &str)> = plan.steps.iter().map(|n| (n.id.as_str(), n.platform.as_str())).collect();
        assert_eq!(
            nodes,
            [
                ("linux-amd64.s1", "linux/amd64"),
                ("linux-amd64.s3", "linux/amd64"),
                ("linux-amd64.s4", "linux/amd64"),
                ("linux-arm64.s3", "linux/arm64"),
                ("linux-arm64.s4", "linux/arm64"),
            ],
            "the tools step runs once, natively; the rest once per platform"
        );
        let copy = payload_of(&plan.steps[3]).unwrap();
        assert_eq!(copy.stages.values().next(), Some(&ImageSource::Step { step_id: "linux-amd64.s1".into() }));
        assert_eq!(plan.steps[3].deps, ["linux-amd64.s1"]);
        assert!(plan.steps[4].name.starts_with("[linux/arm64 3/3] RUN"), "{}", plan.steps[4].name);
        assert_eq!(plan.target_steps(), ["linux-amd64.s4", "linux-arm64.s4"]);
    }

    #[test]
    fn a_step_needing_an_entitlement_the_build_was_not_run_with_is_refused_naming_its_line() {
        let df = "FROM busybox\nRUN true\nRUN --network=host wget -q -O- http://127.0.0.1/\n";
        let err = plan_with(df, None, &[]).unwrap_err().to_string();
        assert!(err.contains("Dockerfile:3"), "{err}");
        assert!(err.contains("--allow network.host"), "{err}");
        let df = "FROM busybox\nRUN --security=insecure true\n";
        let err = plan_allowing(df, &[rbk_worker::Entitlement::NetworkHost]).unwrap_err().to_string();
        assert!(err.contains("Dockerfile:2") && err.contains("--allow security.insecure"), "{err}");
    }

    #[test]
    fn an_allowed_entitlement_travels_in_the_payload_of_the_step_that_needs_it_only() {
        let df = "FROM busybox\nRUN true\nRUN --network=host true\n";
        let (nodes, _) = plan_allowing(df, &[rbk_worker::Entitlement::NetworkHost, rbk_worker::Entitlement::SecurityInsecure]).unwrap();
        assert_eq!(payload_of(node(&nodes, "--network=host")).unwrap().allow, vec![rbk_worker::Entitlement::NetworkHost]);
        let plain = node(&nodes, "RUN true");
        assert!(payload_of(plain).unwrap().allow.is_empty());
        // An ordinary step's bytes (and so its key) do not depend on --allow.
        assert!(!String::from_utf8_lossy(&plain.payload).contains("allow"));
    }

    fn plan(dockerfile: &str) -> (Vec<StepNode>, FinalImage) {
        plan_with(dockerfile, None, &[]).unwrap()
    }

    fn node<'a>(nodes: &'a [StepNode], name_part: &str) -> &'a StepNode {
        nodes.iter().find(|n| n.name.contains(name_part)).unwrap_or_else(|| panic!("no node {name_part:?} in {:?}", nodes.iter().map(|n| &n.name).collect::<Vec<_>>()))
    }

    const MULTI: &str = "FROM busybox AS build\nWORKDIR /src\nCOPY a.txt .\nRUN cat a.txt > out\n\nFROM busybox\nCOPY --from=build /src/out /out\nCMD [\"/bin/sh\"]\n";

    #[test]
    fn multi_stage_dockerfile_plans_one_node_per_layer_making_step() {
        let (nodes, _) = plan(MULTI);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let (mkdir, copy, run) = (node(&nodes, "WORKDIR"), node(&nodes, "COPY a.txt"), node(&nodes, "RUN"));
        assert!(mkdir.deps.is_empty());
        assert_eq!(copy.deps, vec![mkdir.id.clone()]);
        assert_eq!(run.deps, vec![copy.id.clone()]);
        for n in &nodes {
            assert_eq!(n.key.len(), 64, "{}: key is the step key hex", n.name);
            assert_eq!(n.platform, "linux/amd64");
        }
        let p = payload_of(mkdir).unwrap();
        assert_eq!(p.work, Work::Mkdir { path: "/src".into() });
        assert!(matches!(p.parent, ImageSource::Layers { ref layers } if layers.len() == 1));
    }

    #[test]
    fn copy_from_a_stage_depends_on_that_stages_last_node() {
        let (nodes, fin) = plan(MULTI);
        let (run, copy_from) = (node(&nodes, "RUN"), node(&nodes, "COPY --from"));
        assert_eq!(copy_from.deps, vec![run.id.clone()]);
        let p = payload_of(copy_from).unwrap();
        assert_eq!(p.stages.get("stage-0"), Some(&ImageSource::Step { step_id: run.id.clone() }));
        assert!(matches!(p.parent, ImageSource::Layers { .. }), "the final stage starts from busybox");
        assert_eq!(fin.source, ImageSource::Step { step_id: copy_from.id.clone() });
        assert_eq!(fin.image.config.config.cmd, Some(vec!["/bin/sh".to_owned()]));
    }

    #[test]
    fn only_steps_reading_the_context_name_its_snapshot() {
        let (nodes, _) = plan(MULTI);
        assert_eq!(payload_of(node(&nodes, "COPY a.txt")).unwrap().context.as_deref(), Some("ctx"));
        assert_eq!(payload_of(node(&nodes, "RUN")).unwrap().context, None);
        assert_eq!(payload_of(node(&nodes, "COPY --from")).unwrap().context, None);
    }

    #[test]
    fn context_paths_take_the_snapshot_s_form_and_the_root_has_none() {
        assert_eq!(snapshot_path("./src//lib/"), Some(b"src/lib".to_vec()));
        assert_eq!(snapshot_path("a.txt"), Some(b"a.txt".to_vec()));
        assert_eq!(snapshot_path("."), None);
        assert_eq!(snapshot_path(""), None);
    }

    #[test]
    fn a_payload_reading_the_context_starts_with_its_snapshot_digest() {
        // Where the coordinator looks for it (`rbk_coordinator::action_key`).
        let (nodes, _) = plan(MULTI);
        let payload = &node(&nodes, "COPY a.txt").payload;
        assert!(payload.starts_with(br#"{"context":"ctx","#), "{}", String::from_utf8_lossy(payload));
    }

    #[test]
    fn stage_without_layer_making_steps_folds_into_its_base() {
        let df = "FROM busybox AS base\nENV A=1\nLABEL x=y\n\nFROM base\nRUN echo hi\n";
        let (nodes, fin) = plan(df);
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].deps.is_empty(), "no node for the config-only stage");
        let p = payload_of(&nodes[0]).unwrap();
        assert!(matches!(p.parent, ImageSource::Layers { .. }));
        let Work::Step { step: rbk_worker::StepKind::Run(r) } = &p.work else { panic!("{:?}", p.work) };
        assert!(r.env.contains(&"A=1".to_owned()), "{:?}", r.env);
        let labels = fin.image.config.config.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("x").map(String::as_str), Some("y"));
    }

    #[test]
    fn target_stage_without_nodes_is_the_base_image_with_its_config() {
        let df = "FROM busybox AS base\nENV A=1\n\nFROM base\nRUN echo hi\n";
        let (nodes, fin) = plan_with(df, Some("base"), &[]).unwrap();
        assert!(nodes.is_empty());
        assert!(matches!(fin.source, ImageSource::Layers { ref layers } if layers.len() == 1));
        assert!(fin.image.config.config.env.clone().unwrap().contains(&"A=1".to_owned()));
    }

    #[test]
    fn identical_steps_in_two_stages_share_one_node() {
        let df = "FROM busybox AS a\nRUN echo same\n\nFROM busybox AS b\nRUN echo same\n\nFROM busybox\nCOPY --from=a /x /a\nCOPY --from=b /x /b\n";
        let (nodes, _) = plan(df);
        let runs: Vec<_> = nodes.iter().filter(|n| n.name.contains("RUN")).collect();
        assert_eq!(runs.len(), 1, "{:?}", nodes.iter().map(|n| &n.name).collect::<Vec<_>>());
        let last = node(&nodes, "COPY --from=b");
        assert_eq!(payload_of(last).unwrap().stages.get("stage-1"), Some(&ImageSource::Step { step_id: runs[0].id.clone() }));
    }

    #[test]
    fn cache_mounts_travel_with_their_sharing() {
        let (nodes, _) = plan("FROM busybox\nRUN --mount=type=cache,target=/c,id=pip,sharing=locked true\n");
        assert_eq!(nodes[0].cache_mounts, vec![CacheMount { id: "farm/pip".into(), sharing: "locked".into() }]);
        assert_eq!(payload_of(&nodes[0]).unwrap().cache_ids, vec!["farm/pip".to_owned()]);
    }

    #[test]
    fn a_step_names_the_secrets_it_mounts_so_a_new_coordinator_leader_can_wait_for_them() {
        let df = "FROM busybox\nRUN --mount=type=secret,id=tok --mount=type=secret,id=npmrc,required=true true\nRUN true\n";
        let (nodes, _) = plan_with(df, None, &["npmrc"]).unwrap();
        assert_eq!(nodes[0].secret_ids, ["tok", "npmrc"]);
        assert!(nodes[1].secret_ids.is_empty());
    }

    #[test]
    fn a_required_secret_that_was_not_given_is_refused_naming_the_line() {
        let df = "FROM busybox\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n";
        let e = plan_with(df, None, &[]).unwrap_err().to_string();
        assert!(e.contains("--secret id=tok") && e.contains("Dockerfile:2"), "{e}");
        let (nodes, _) = plan_with(df, None, &["tok"]).unwrap();
        let payload = String::from_utf8(nodes[0].payload.clone()).unwrap();
        assert!(payload.contains("\"secret\""), "the mount is in the payload: {payload}");
    }

    #[test]
    fn a_required_ssh_agent_that_was_not_given_is_refused_naming_the_line() {
        let df = "FROM busybox\nRUN --mount=type=ssh,id=github,required=true ssh-add -l\n";
        let e = plan_with(df, None, &[]).unwrap_err().to_string();
        assert!(e.contains("ssh agent \"github\"") && e.contains("--ssh github") && e.contains("Dockerfile:2"), "{e}");
    }

    #[test]
    fn a_served_ssh_agent_is_in_the_payload_and_an_optional_unserved_one_is_left_out() {
        let served = "FROM busybox\nRUN --mount=type=ssh,required=true ssh-add -l\n";
        let (nodes, _) = plan_with(served, None, &[]).unwrap();
        let payload = String::from_utf8(nodes[0].payload.clone()).unwrap();
        assert!(payload.contains("\"ssh\"") && payload.contains("\"default\""), "{payload}");
        let optional = "FROM busybox\nRUN --mount=type=ssh,id=github ssh-add -l\n";
        let (nodes, _) = plan_with(optional, None, &[]).unwrap();
        let payload = String::from_utf8(nodes[0].payload.clone()).unwrap();
        assert!(!payload.contains("\"ssh\""), "an unserved optional agent is not mounted: {payload}");
    }

    #[test]
    fn serving_an_ssh_agent_or_not_leaves_the_steps_key_alone() {
        let df = "FROM busybox\nRUN --mount=type=ssh,id=github ssh-add -l\n";
        let (served, _) = plan_serving(df, None, &[], &["github"]).unwrap();
        let (unserved, _) = plan_serving(df, None, &[], &[]).unwrap();
        assert_ne!(served[0].payload, unserved[0].payload);
        assert_eq!(served[0].key, unserved[0].key, "the key holds the mount's id and options, not whether (or which socket) serves it");
        let (other_id, _) = plan_serving("FROM busybox\nRUN --mount=type=ssh,id=gitlab ssh-add -l\n", None, &[], &["gitlab"]).unwrap();
        assert_ne!(served[0].key, other_id[0].key, "the mount's id is part of the key, as in BuildKit");
    }

    #[tokio::test]
    async fn base_layers_are_sent_only_when_the_store_lacks_them() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let busybox = rbk_testsupport::program("busybox");
        let image = rbk_image::testimage::busybox_image(&layout, &busybox, "latest").unwrap();
        let store = rbk_store::MemoryStore::default();
        let mut first = Uploads::default();
        let memo = dir.path().join("memo");
        let descs = upload_layers(&store, &layout, &memo, &image, &mut first).await.unwrap();
        assert_eq!((first.base_layers, first.base_layers_sent), (1, 1));
        let blob = std::fs::read(layout.blob_path(&image.layers()[0].digest)).unwrap();
        assert_eq!(first.base_bytes_sent, blob.len() as u64);
        let b3: Digest = descs[0].blake3.parse().unwrap();
        assert_eq!(rbk_store::StoreExt::get_bytes(&store, b3).await.unwrap(), blob);
        assert_eq!(descs[0].digest, image.layers()[0].digest.to_string());
        assert_eq!(descs[0].diff_id, image.diff_ids()[0].to_string());
        let mut second = Uploads::default();
        let again = upload_layers(&store, &layout, &memo, &image, &mut second).await.unwrap();
        assert_eq!((second.base_layers, second.base_layers_sent), (1, 0));
        assert_eq!(again[0].blake3, descs[0].blake3, "the remembered blake3 is the one hashed");
    }

    #[tokio::test]
    async fn a_remembered_layer_digest_whose_size_disagrees_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let busybox = rbk_testsupport::program("busybox");
        let image = rbk_image::testimage::busybox_image(&layout, &busybox, "latest").unwrap();
        let store = rbk_store::MemoryStore::default();
        let memo = dir.path().join("memo");
        let descs = upload_layers(&store, &layout, &memo, &image, &mut Uploads::default()).await.unwrap();
        let note = memo.join(image.layers()[0].digest.to_string().replace(':', "-"));
        std::fs::write(&note, Digest::of(b"something else").to_string()).unwrap();
        let again = upload_layers(&store, &layout, &memo, &image, &mut Uploads::default()).await.unwrap();
        assert_eq!(again[0].blake3, descs[0].blake3);
    }

    #[tokio::test]
    async fn two_users_staging_one_checkout_give_each_copy_the_same_tree() {
        use std::os::unix::fs::PermissionsExt;
        let store: Arc<dyn Store> = Arc::new(rbk_store::MemoryStore::default());
        let mut trees = Vec::new();
        for (uid, file_mode) in [(0, 0o644), (1234, 0o644)] {
            let checkout = tempfile::tempdir().unwrap();
            std::fs::create_dir(checkout.path().join("src")).unwrap();
            std::fs::write(checkout.path().join("src/a.txt"), "a").unwrap();
            std::fs::set_permissions(checkout.path().join("src/a.txt"), std::fs::Permissions::from_mode(file_mode)).unwrap();
            let graph = df::build_graph("FROM scratch\nCOPY src /src\n", &df::BuildOptions::default(), &df::FsContext::new(checkout.path()), &()).unwrap();
            let staged = tempfile::tempdir().unwrap();
            frontend::stage_context(&graph, checkout.path(), staged.path()).unwrap();
            // The staged copy belongs to whoever ran the client.
            for p in ["src", "src/a.txt"] {
                std::os::unix::fs::lchown(staged.path().join(p), Some(uid), Some(uid)).unwrap();
            }
            let (whole, _) = rbk_snapshot::capture(store.clone(), staged.path(), &rbk_snapshot::CaptureOptions::new("context")).await.unwrap();
            let paths = [b"src".to_vec(), b"src/a.txt".to_vec()].into_iter().collect();
            trees.push(rbk_snapshot::tree_digest(&context_subset(&whole.manifest, &paths)));
        }
        assert_eq!(trees[0], trees[1], "another owner, one tree (and so one action key)");
    }

    #[test]
    fn secrets_load_from_files_and_variables_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "s3cret-file").unwrap();
        // SAFETY: only this test touches this variable.
        unsafe { std::env::set_var("RBK_PLAN_TEST_SECRET", "s3cret-env") };
        let got = load_secrets(&[format!("id=a,src={}", f.display()), "id=b,env=RBK_PLAN_TEST_SECRET".into()]).unwrap();
        assert_eq!(got["a"], b"s3cret-file");
        assert_eq!(got["b"], b"s3cret-env");
        let e = load_secrets(&["id=c,env=RBK_PLAN_TEST_UNSET_VAR".into()]).unwrap_err().to_string();
        assert!(e.contains("RBK_PLAN_TEST_UNSET_VAR") && e.contains("id=c"), "{e}");
        assert!(load_secrets(&["src=/x".into()]).unwrap_err().to_string().contains("id="));
    }

    /// `COPY --from=<image>` (crate::image_sources).
    mod image_source {
        use super::*;

        const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

        fn layer() -> LayerDesc {
            LayerDesc {
                digest: DIGEST.into(),
                diff_id: DIGEST.into(),
                blake3: rbk_store::Digest::of(b"tools").to_string(),
                size: 5,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }
        }

        fn graph(text: &str) -> df::Graph {
            let dir = tempfile::tempdir().unwrap();
            let digests = BTreeMap::from([("tools:1".to_owned(), "sha256:abc".to_owned())]);
            df::build_graph(text, &df::BuildOptions::default(), &df::FsContext::new(dir.path()), &digests).unwrap()
        }

        #[test]
        fn a_step_reading_an_image_names_its_layers_by_digest_in_the_payload() {
            let g = graph("FROM scratch\nCOPY --from=tools:1 /bin/tool /tool\n");
            let key = crate::platforms::base_key("tools:1", None, "linux/amd64");
            let images = HashMap::from([(key.clone(), rbk_image::Image::scratch(&rbk_image::Platform::linux_amd64()))]);
            let layers = HashMap::from([(key, vec![layer()])]);
            let none = Default::default();
            let cx = PlanContext {
                file_name: "Dockerfile",
                context_digest: "ctx",
                step_contexts: &HashMap::new(),
                platform: "linux/amd64",
                id_prefix: "",
                secret_ids: &none,
                ssh_ids: &none,
                allow: &Default::default(),
                run_defaults: &RunDefaults::default(),
            };
            let (nodes, _) = plan_graph(&g, &Bases { images: &images, layers: &layers }, &cx).unwrap();
            let p = payload_of(&nodes[0]).unwrap();
            assert_eq!(p.stages.get("image@sha256:abc"), Some(&ImageSource::Layers { layers: vec![layer()] }));
            assert!(nodes[0].deps.is_empty(), "an image is no step to wait for");
            let rbk_worker::payload::Work::Step { step: rbk_worker::StepKind::Copy(c) } = &p.work else { panic!("{:?}", p.work) };
            assert!(
                matches!(&c.sources[0], rbk_worker::CopySource::Path { from: rbk_worker::Source::Stage(s), .. } if s == "image@sha256:abc")
            );
        }
    }
}
