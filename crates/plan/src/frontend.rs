//! The front half of planning (the planner's input, for `rbk build` and
//! `rbk submit` alike): read and parse the
//! Dockerfile, pull the base images it names, build the keyed graph, stage
//! the context the graph kept, and the per-step labels and image-config
//! edits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rbk_dockerfile as df;
use rbk_image::{Image, ImageRef, OciLayout, Platform};

use crate::error::{BuildError, Result};
use crate::platforms::base_key;
use crate::remote_sources::{self, RemoteSources, WithRemote};

/// Where a build's Dockerfile, context and base images come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub context: &'a Path,
    /// Default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<&'a Path>,
    pub target: Option<&'a str>,
    pub build_args: &'a BTreeMap<String, String>,
    /// `FROM <name>` → `DIR` or `DIR:REF_NAME` (an OCI layout).
    pub base_images: &'a BTreeMap<String, String>,
    pub insecure_registries: &'a [String],
    /// Cache ids are prefixed with it.
    pub namespace: &'a str,
    /// Registry `FROM`s resolved and pulled by the farm instead of here.
    pub farm: Option<&'a dyn crate::farm_bases::FarmBases>,
    /// The client's directory (remote sources' validators are noted there).
    pub client_dir: &'a Path,
    /// The platform built for (`TARGETPLATFORM`), normalised.
    pub platform: &'a str,
}

/// A Dockerfile read and checked, bases not yet resolved. Parsing comes
/// first so a syntax error is reported before any directory is created or
/// anything is pulled or sent.
pub(crate) struct Parsed {
    pub file_name: String,
    text: String,
    opts: df::BuildOptions,
    unresolved: df::Graph,
}

/// The keyed graph and the base images its `FROM`s name.
pub(crate) struct Resolved {
    pub graph: df::Graph,
    pub bases: HashMap<String, Image>,
    /// The bases the farm resolved, whose layers are in its store already.
    pub farm_bases: HashMap<String, crate::farm_bases::FarmBase>,
    /// What each `ADD <url>` resolved to in this build.
    pub remote: RemoteSources,
}

impl Source<'_> {
    pub fn dockerfile_path(&self) -> PathBuf {
        self.dockerfile
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.context.join("Dockerfile"))
    }

    /// Reads and parses the Dockerfile (errors name the file and line).
    pub fn parse(&self) -> Result<Parsed> {
        let file = self.dockerfile_path();
        let bytes = std::fs::read(&file).map_err(|e| BuildError::io(&file, e))?;
        // BuildKit reads bytes: text that is not UTF-8 still builds.
        let text = df::decode(&bytes).into_owned();
        let file_name = file.display().to_string();
        let opts = df::BuildOptions {
            file_name: file_name.clone(),
            target: self.target.map(str::to_owned),
            build_args: self.build_args.clone(),
            namespace: self.namespace.to_owned(),
            target_platform: self.platform.to_owned(),
            build_platform: rbk_worker::payload::current_platform(),
            dockerignore: df::Dockerignore::load(&file, self.context)?.unwrap_or_default(),
            ..df::BuildOptions::default()
        };
        let ctx = df::FsContext::new(self.context);
        // First pass to learn the base images; keys then use their digests.
        let unresolved = df::build_graph(&text, &opts, &ctx, &())?;
        Ok(Parsed {
            file_name,
            text,
            opts,
            unresolved,
        })
    }
}

impl Parsed {
    /// Pulls (or loads) every base image into `layout` and builds the graph
    /// again with their digests in the keys.
    pub async fn resolve(&self, src: &Source<'_>, layout: &OciLayout) -> Result<Resolved> {
        let mut bases = Bases { images: HashMap::new(), target: src.platform.to_owned() };
        let mut farm_bases = HashMap::new();
        // `FROM <image>` and `--from=<image>` alike (one resolution path),
        // each for its platform (`FROM --platform=`, else the target): by
        // the farm when it pulls, else here.
        for (reference, from_platform) in crate::image_sources::references(&self.unresolved) {
            let key = base_key(reference, from_platform, src.platform);
            if bases.images.contains_key(&key) {
                continue;
            }
            let wanted = base_platform(reference, from_platform, src.platform)?;
            let image = match src.farm.filter(|_| !src.base_images.contains_key(reference)) {
                Some(farm) => {
                    let base = farm
                        .resolve(reference, &wanted.to_string())
                        .await
                        .map_err(|message| BuildError::FarmResolve { reference: reference.to_owned(), message })?;
                    let image = farm_image(reference, &base)?;
                    farm_bases.insert(key.clone(), base);
                    image
                }
                None => resolve_base(src, reference, &wanted, layout).await?,
            };
            bases.images.insert(key, image);
        }
        let remote = remote_sources::resolve(&self.unresolved, &self.file_name, src.client_dir).await?;
        let ctx = df::FsContext::new(src.context);
        let resolver = WithRemote { inner: &bases, remote: &remote };
        let graph = df::build_graph(&self.text, &self.opts, &ctx, &resolver)?;
        // With the bases' env known every check has run: `check=error=true`
        // stops the build here, before anything is uploaded or run.
        if let Some(message) = graph.check_violation() {
            return Err(BuildError::CheckViolation {
                file: self.file_name.clone(),
                message,
                checks: graph.checks.clone(),
            });
        }
        Ok(Resolved {
            graph,
            bases: bases.images,
            farm_bases,
            remote,
        })
    }
}

/// Applies what the Dockerfile set (ENV, CMD, ...) over the image's config.
pub(crate) fn apply_config(image: &mut Image, stage: &df::Stage) {
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
    // The base image's triggers ran in this stage; only the stage's own
    // are the image's (Docker clears the base's).
    cc.on_build = (!c.onbuild.is_empty()).then(|| c.onbuild.clone());
    if let Some(m) = &c.maintainer {
        image.config.author = Some(m.clone());
    }
}

/// Copies the context paths the graph's steps read (COPY sources, bind
/// mounts; after `.dockerignore`) into
/// `dest`, so that the worker's COPY cannot see an ignored file.
pub(crate) fn stage_context(graph: &df::Graph, context: &Path, dest: &Path) -> Result<()> {
    let mut paths = BTreeSet::new();
    for s in &graph.steps {
        paths.extend(s.kind.context_paths().into_iter().flatten().map(str::to_owned));
    }
    let mut linked: HashMap<(u64, u64), PathBuf> = HashMap::new();
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
        // Modes are kept as they are in the checkout, as BuildKit keeps
        // them: a rootfs's 1777 /tmp or 0600 /etc/shadow must not change
        // (docs/cache-keys.md). Owners are not: each step's subset is
        // owned by 0:0.
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| BuildError::io(&dst, e))?;
            std::fs::set_permissions(&dst, meta.permissions())
                .map_err(|e| BuildError::io(&dst, e))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| BuildError::io(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| BuildError::io(&dst, e))?;
        } else if meta.is_file() {
            // Hard links stay links (the snapshot, COPY and the layer keep
            // them): the first path of an inode is copied, the others
            // linked to that copy.
            match (meta.nlink() > 1).then(|| linked.get(&(meta.dev(), meta.ino()))).flatten() {
                Some(first) => std::fs::hard_link(first, &dst).map_err(|e| BuildError::io(&dst, e))?,
                None => {
                    std::fs::copy(&src, &dst).map_err(|e| BuildError::io(&src, e))?;
                    if meta.nlink() > 1 {
                        linked.insert((meta.dev(), meta.ino()), dst.clone());
                    }
                }
            }
        }
        // Devices, fifos and sockets are not staged: reading one could
        // block forever or never end (`/dev/zero`), and a build context
        // has no business carrying them.
    }
    Ok(())
}

/// The image a farm-resolved base describes (its config checked against
/// the manifest's digest for it).
fn farm_image(reference: &str, base: &crate::farm_bases::FarmBase) -> Result<Image> {
    let desc = rbk_image::Descriptor::for_bytes(base.manifest_media_type.clone(), &base.manifest);
    let image = Image::from_manifest_bytes(desc, &base.manifest, |d| {
        let actual = rbk_image::OciDigest::of(&base.config);
        d.verify(&actual, || format!("FROM {reference}: the config the farm sent"))?;
        Ok(base.config.clone())
    })?;
    let named: Vec<String> = image.layers().iter().map(|l| l.digest.to_string()).collect();
    let sent: Vec<&String> = base.layers.iter().map(|l| &l.digest).collect();
    if named.iter().collect::<Vec<_>>() != sent {
        return Err(BuildError::FarmResolve {
            reference: reference.to_owned(),
            message: format!("the layers the farm named ({}) are not the manifest's ({})", sent.len(), named.len()),
        });
    }
    Ok(image)
}

/// What `--base-image NAME=docker-image://REF` (a named build context of
/// that kind) makes `FROM NAME` pull instead.
pub const IMAGE_ALIAS: &str = "docker-image://";

/// The platform to pick for a `FROM` out of a multi-platform index.
fn base_platform(reference: &str, from_platform: Option<&str>, target: &str) -> Result<Platform> {
    let spec = from_platform.unwrap_or(target);
    Platform::parse(spec, &format!("FROM --platform of {reference}")).map_err(BuildError::from)
}

/// Loads the images a build reads (`FROM`, `--from=<image>`), the manifest
/// for `platform` when the reference is an index: from `--base-image`
/// layouts, else from registries (a tag resolved to the digest it names
/// now, on every build; a pinned `@sha256:` as is; a `docker-image://`
/// alias pulls the image it names).
async fn resolve_base(src: &Source<'_>, reference: &str, platform: &Platform, layout: &OciLayout) -> Result<Image> {
    let alias = src.base_images.get(reference).and_then(|s| s.strip_prefix(IMAGE_ALIAS));
    let reference = alias.unwrap_or(reference);
    if let Some(spec) = src.base_images.get(reference).filter(|_| alias.is_none()) {
        let (dir, ref_name) = match spec.rsplit_once(':') {
            Some((d, r)) if Path::new(d).is_dir() => (d.to_owned(), Some(r.to_owned())),
            _ => (spec.clone(), None),
        };
        let from = OciLayout::open(&dir)?;
        let desc = from.find(ref_name.as_deref())?;
        let image = from.load_image(&desc, platform)?;
        for l in image.layers() {
            if !layout.has_blob(&l.digest) {
                layout.add_blob_file(&from.blob_path(&l.digest), Some((&l.digest, l.size)))?;
            }
        }
        return Ok(image);
    }
    let r: ImageRef = reference
        .parse()
        .map_err(|source| BuildError::ImageRef { flag: "FROM", reference: reference.to_owned(), source })?;
    Ok(crate::registry_access::registry_client(src.insecure_registries)?.with_platform(platform.clone()).pull(&r, layout).await?)
}

/// The pulled base images, which the frontend asks for digests (keys) and
/// environments (`$PATH` and friends expand as Docker expands them), by
/// [`base_key`].
struct Bases {
    images: HashMap<String, Image>,
    target: String,
}

impl df::BaseResolver for Bases {
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Option<String> {
        self.images
            .get(&base_key(reference, platform, &self.target))
            .map(|i| i.manifest_descriptor.digest.to_string())
    }

    fn onbuild(&self, reference: &str, platform: Option<&str>) -> Option<Vec<String>> {
        self.images.get(&base_key(reference, platform, &self.target))?.config.config.on_build.clone()
    }

    fn env(&self, reference: &str, platform: Option<&str>) -> Option<Vec<(String, String)>> {
        let env = self
            .images
            .get(&base_key(reference, platform, &self.target))?
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

/// A step's name in progress lines and errors, BuildKit's way
/// (`[build 2/5] RUN ...`), with its place in the Dockerfile.
pub(crate) struct Label {
    pub text: String,
    pub file: String,
    pub line: usize,
}

pub(crate) fn label(graph: &df::Graph, step: &df::Step, file: &str) -> Label {
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
    /// The planner found `missing` (a parent, a base image, a stage) not
    /// planned before this step.
    pub fn not_planned(&self, missing: String) -> BuildError {
        BuildError::PlanOrder { step: self.text.clone(), file: self.file.clone(), line: self.line, missing }
    }

    pub fn unsupported(&self, message: String) -> BuildError {
        BuildError::Unsupported {
            step: self.text.clone(),
            file: self.file.clone(),
            line: self.line,
            message,
        }
    }
}
