//! `rbk submit`'s last part: the final image from the target's result and
//! the planned recipe, and the outputs `docker build` users expect.
//!
//! The workers produced layers and put them in the content store by
//! blake3; the planner knew the config. Here the two meet: the layer chain
//! of the target's last node ([`FarmResult`], as `StepFinished`/`StepCached`
//! carried it) replaces the planned image's layers, every blob is fetched
//! into a local OCI layout (each checked against its sha256 by the layout's
//! checked write, so a wrong or truncated blob never becomes part of an
//! image), and the image is saved and exported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rbk_image::{
    Compression, Descriptor, Image, ImageRef, Index, LayerOptions, OciDigest, OciLayout, Platform, PushOptions, Recompress, UnpackOptions,
    media_type, recompress_image,
};
use rbk_store::Store;

use crate::error::{BuildError, Result};
use rbk_worker::payload::{FarmResult, ImageSource, LayerDesc};
use crate::planner::{FinalImage, Plan};

/// Where the image goes (`--output`, `--push`, `--load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FarmOutput {
    /// `type=oci,dest=F`: an OCI layout as a tar archive.
    Oci { dest: PathBuf },
    /// `type=docker,dest=F`: a `docker load` archive.
    Docker { dest: PathBuf },
    /// `type=local,dest=DIR`: the root filesystem, unpacked.
    Local { dest: PathBuf },
    /// `type=registry` or `--push`: pushed under every tag (`-t`), or
    /// `name=` if given.
    Registry { names: Vec<String> },
    /// `--load`, or `type=docker` without `dest`: piped into `docker load`.
    Load,
    /// `type=tar,dest=F`: the root filesystem as one tar file (hard
    /// links, owners and modes kept).
    Tar { dest: PathBuf },
    /// `type=image` without `push=true`: the image is named in the
    /// client's own layout only (rbk has no image store of its own).
    Named { names: Vec<String> },
    /// `compression=...` on an image output: `output` written from a copy
    /// of the image whose layers are recompressed; the base image's
    /// layers stay as they are unless `force` (`force-compression=true`).
    Recompressed { output: Box<FarmOutput>, to: Recompress, force: bool },
}

impl FarmOutput {
    /// Parses `--output` as buildx does (`type=...,dest=...`, read as
    /// CSV so a quoted value may hold commas; a bare path means
    /// `type=local,dest=PATH`).
    pub fn parse(spec: &str) -> Result<FarmOutput> {
        let bad = |problem: String| BuildError::OutputSpec { spec: spec.to_owned(), problem };
        if !spec.contains('=') {
            return Ok(FarmOutput::Local { dest: PathBuf::from(spec) });
        }
        let mut attrs = BTreeMap::new();
        for part in split_csv(spec) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            attrs.insert(k.trim().to_owned(), v.to_owned());
        }
        let kind = attrs.remove("type").ok_or_else(|| bad("needs type=oci|docker|tar|local|image|registry".into()))?;
        let flag = |attrs: &mut BTreeMap<String, String>, key: &str| -> Result<Option<bool>> {
            match attrs.remove(key).as_deref() {
                None => Ok(None),
                Some("false") => Ok(Some(false)),
                Some("true") | Some("") => Ok(Some(true)),
                Some(v) => Err(bad(format!("{key}={v}: expected true or false"))),
            }
        };
        let dest = |attrs: &mut BTreeMap<String, String>| {
            attrs.remove("dest").map(PathBuf::from).ok_or_else(|| bad(format!("type={kind} needs dest=<path>")))
        };
        let names = |attrs: &mut BTreeMap<String, String>| -> Vec<String> {
            attrs.remove("name").map(|n| n.split(',').map(str::to_owned).filter(|n| !n.is_empty()).collect()).unwrap_or_default()
        };
        let compression = compression_of(&mut attrs).map_err(&bad)?;
        let force = flag(&mut attrs, "force-compression")?.unwrap_or(false);
        if flag(&mut attrs, "oci-mediatypes")? == Some(false) {
            return Err(bad("oci-mediatypes=false: rbk writes OCI media types only".into()));
        }
        let out = match kind.as_str() {
            "local" | "tar" if compression.is_some() => {
                return Err(bad(format!("compression= applies to image outputs (oci, docker, image, registry), not type={kind}")));
            }
            "oci" => FarmOutput::Oci { dest: dest(&mut attrs)? },
            "docker" => match attrs.remove("dest") {
                Some(d) => FarmOutput::Docker { dest: PathBuf::from(d) },
                None => FarmOutput::Load,
            },
            "local" => FarmOutput::Local { dest: dest(&mut attrs)? },
            "tar" => FarmOutput::Tar { dest: dest(&mut attrs)? },
            "registry" => {
                if flag(&mut attrs, "push")? == Some(false) {
                    return Err(bad("type=registry always pushes; for no push use type=image".into()));
                }
                FarmOutput::Registry { names: names(&mut attrs) }
            }
            "image" => {
                let names = names(&mut attrs);
                match flag(&mut attrs, "push")? {
                    Some(true) => FarmOutput::Registry { names },
                    _ => FarmOutput::Named { names },
                }
            }
            other => return Err(bad(format!("type={other}: expected oci, docker, tar, local, image or registry"))),
        };
        if let Some(k) = attrs.keys().next() {
            return Err(bad(format!("unknown key {k:?}")));
        }
        Ok(match compression {
            Some(to) => FarmOutput::Recompressed { output: Box::new(out), to, force },
            None => out,
        })
    }
}

/// `compression=` and `compression-level=` of an image output.
fn compression_of(attrs: &mut BTreeMap<String, String>) -> std::result::Result<Option<Recompress>, String> {
    let level = match attrs.remove("compression-level") {
        None => None,
        Some(l) => Some(l.parse::<u32>().map_err(|_| format!("compression-level={l}: expected a number"))?),
    };
    let Some(c) = attrs.remove("compression") else {
        return match level {
            Some(_) => Err("compression-level= needs compression=gzip|zstd".into()),
            None => Ok(None),
        };
    };
    let compression = match c.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "uncompressed" => Compression::None,
        "estargz" => return Err("compression=estargz: not supported by rbk (gzip, zstd or uncompressed)".into()),
        other => return Err(format!("compression={other}: expected gzip, zstd or uncompressed")),
    };
    match (compression, level) {
        (Compression::Gzip, Some(l)) if l > 9 => Err(format!("compression-level={l}: gzip takes 0-9")),
        (Compression::Zstd, Some(l)) if !(1..=19).contains(&l) => Err(format!("compression-level={l}: zstd takes 1-19")),
        (Compression::None, Some(_)) => Err("compression-level= means nothing for compression=uncompressed".into()),
        _ => Ok(Some(Recompress { compression, level })),
    }
}

/// Splits `a=1,"name=x,y",b=2` at commas outside double quotes (buildx
/// reads `--output` as CSV), quotes removed.
fn split_csv(spec: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The saved image: its layout and manifest.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub layout: OciLayout,
    pub manifest: Descriptor,
    /// The layers that came from the target's base image (`compression=`
    /// leaves them as they are unless `force-compression=true`).
    pub base_layers: BTreeSet<OciDigest>,
}

/// The layer chain the final image has: the target node's result, or the
/// base image's own layers when the target stage made none.
fn final_layers(recipe: &FinalImage, result: Option<&FarmResult>) -> Result<Vec<LayerDesc>> {
    match (&recipe.source, result) {
        (ImageSource::Scratch, _) => Ok(vec![]),
        (ImageSource::Layers { layers }, _) => Ok(layers.clone()),
        (ImageSource::Step { .. }, Some(r)) => Ok(r.layers.clone()),
        (ImageSource::Step { step_id }, None) => Err(BuildError::NoResult { step_id: step_id.clone() }),
    }
}

fn layer_error(l: &LayerDesc, field: &'static str, value: &str, e: &dyn std::fmt::Display) -> BuildError {
    BuildError::LayerDigest { layer: l.digest.clone(), field, value: value.to_owned(), message: e.to_string() }
}

/// A layer's descriptor in the manifest.
fn layer_descriptor(l: &LayerDesc) -> Result<Descriptor> {
    let digest: OciDigest = l.digest.parse().map_err(|e| layer_error(l, "digest", &l.digest, &e))?;
    Ok(Descriptor::new(l.media_type.clone(), digest, l.size))
}

async fn fetch_layer(store: &dyn Store, layout: &OciLayout, l: &LayerDesc) -> Result<()> {
    let digest: OciDigest = l.digest.parse().map_err(|e| layer_error(l, "digest", &l.digest, &e))?;
    if !layout.has_blob(&digest) {
        let b3: rbk_store::Digest = l.blake3.parse().map_err(|e| layer_error(l, "blake3", &l.blake3, &e))?;
        // Checked: the bytes must hash to `digest` and have `size` bytes,
        // or nothing lands in the layout.
        layout.add_blob_from_store(store, b3, (&digest, l.size), &format!("store blob {b3}")).await.map_err(|e| match e {
            rbk_image::ImageError::Store(e) => BuildError::Store(e),
            e => BuildError::Image(e),
        })?;
    }
    Ok(())
}

/// The final image without its layer blobs: the planned config with the
/// target's layers (manifest and diff_ids), and those layers. Its
/// [`Image::encode`] is what a farm push sends; [`assemble`] saves the
/// same documents, so both give one digest.
pub fn describe(recipe: &FinalImage, result: Option<&FarmResult>) -> Result<(Image, Vec<LayerDesc>)> {
    let layers = final_layers(recipe, result)?;
    let mut image = recipe.image.clone();
    image.manifest.layers.clear();
    image.config.rootfs.diff_ids.clear();
    for l in &layers {
        image.manifest.layers.push(layer_descriptor(l)?);
        let diff_id: OciDigest = l.diff_id.parse().map_err(|e: rbk_image::ImageError| layer_error(l, "diff_id", &l.diff_id, &e))?;
        image.config.rootfs.diff_ids.push(diff_id);
    }
    Ok((image, layers))
}

/// Builds the final image into the layout at `layout_dir`, saved under the
/// first tag.
pub async fn assemble(
    store: &dyn Store,
    recipe: &FinalImage,
    result: Option<&FarmResult>,
    tags: &[String],
    layout_dir: &Path,
) -> Result<Assembled> {
    assemble_reporting(store, recipe, result, tags, layout_dir, &mut |_, _| {}).await
}

/// [`assemble`], calling `fetched(bytes so far, bytes in all)` after each
/// layer it has (downloaded or already in the layout).
pub async fn assemble_reporting(
    store: &dyn Store,
    recipe: &FinalImage,
    result: Option<&FarmResult>,
    tags: &[String],
    layout_dir: &Path,
    fetched: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Assembled> {
    let layout = OciLayout::create(layout_dir)?;
    let (mut image, layers) = describe(recipe, result)?;
    let base_layers = recipe.image.manifest.layers.iter().map(|l| l.digest).collect();
    let total: u64 = layers.iter().map(|l| l.size).sum();
    let mut done = 0;
    for l in &layers {
        fetch_layer(store, &layout, l).await?;
        done += l.size;
        fetched(done, total);
    }
    let manifest = image.save(&layout, tags.first().map(String::as_str))?;
    Ok(Assembled { layout, manifest, base_layers })
}

/// Builds the final image of every platform of `plan` into the layout at
/// `layout_dir` from the target steps' `results`. One platform: its image,
/// saved under the first tag. Several: each platform's image, and an OCI
/// index of them (each entry naming the platform it was built for) saved
/// under the first tag; the returned descriptor is the index's.
pub async fn assemble_all(
    store: &dyn Store,
    plan: &Plan,
    results: &HashMap<String, FarmResult>,
    tags: &[String],
    layout_dir: &Path,
) -> Result<Assembled> {
    assemble_all_reporting(store, plan, results, tags, layout_dir, &mut |_, _| {}).await
}

/// [`assemble_all`], calling `fetched(bytes so far, bytes in all)` as
/// [`assemble_reporting`] does, once per platform's image.
pub async fn assemble_all_reporting(
    store: &dyn Store,
    plan: &Plan,
    results: &HashMap<String, FarmResult>,
    tags: &[String],
    layout_dir: &Path,
    fetched: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Assembled> {
    let result_of = |image: &FinalImage| image.target_step().and_then(|id| results.get(id));
    if let [only] = plan.images.as_slice() {
        return assemble_reporting(store, &only.final_image, result_of(&only.final_image), tags, layout_dir, fetched).await;
    }
    let mut manifests = Vec::new();
    let mut layout = None;
    let mut base_layers = BTreeSet::new();
    for image in &plan.images {
        let a = assemble_reporting(store, &image.final_image, result_of(&image.final_image), &[], layout_dir, fetched).await?;
        let mut desc = a.manifest;
        desc.platform = Some(Platform::parse(&image.platform, "platform")?);
        manifests.push(desc);
        base_layers.extend(a.base_layers);
        layout = Some(a.layout);
    }
    let layout = layout.ok_or(BuildError::NoPlatform)?;
    let manifest = rbk_image::save_index(&layout, manifests, tags.first().map(String::as_str))?;
    Ok(Assembled { layout, manifest, base_layers })
}

/// The per-platform manifests of an assembled index (`None` for a
/// single-platform image).
fn platform_manifests(image: &Assembled) -> Result<Option<Vec<Descriptor>>> {
    if !media_type::is_index(&image.manifest.media_type) {
        return Ok(None);
    }
    let what = format!("index {}", image.manifest.digest);
    let index: Index = rbk_image::model::from_json(&image.layout.read_blob(&image.manifest.digest)?, &what)?;
    Ok(Some(index.manifests))
}

/// Writes the image to every output; returns one line per output for the
/// progress summary.
pub async fn write_outputs(
    image: &Assembled,
    outputs: &[FarmOutput],
    tags: &[String],
    insecure_registries: &[String],
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let per_platform = platform_manifests(image)?;
    for out in outputs {
        if let (FarmOutput::Docker { .. } | FarmOutput::Load, Some(manifests)) = (inner_output(out), &per_platform) {
            let platforms = manifests.iter().filter_map(|m| m.platform.as_ref().map(ToString::to_string)).collect::<Vec<_>>().join(", ");
            let output = match inner_output(out) {
                FarmOutput::Docker { dest } => format!("--output type=docker,dest={}", dest.display()),
                _ => "--load".to_owned(),
            };
            return Err(BuildError::IndexNotInDockerFormat { output, platforms });
        }
        let (image, out) = match out {
            FarmOutput::Recompressed { output, to, force } => (recompressed(image, *to, *force).await?, &**output),
            out => (image.clone(), out),
        };
        notes.push(write_output(&image, out, tags, insecure_registries).await?);
    }
    Ok(notes)
}

/// The output a `compression=` wraps, or `out` itself.
fn inner_output(out: &FarmOutput) -> &FarmOutput {
    match out {
        FarmOutput::Recompressed { output, .. } => output,
        out => out,
    }
}

/// A copy of the image with its layers compressed as `to` (the base
/// image's kept unless `force`); each platform's image of an index, and a
/// new index of them.
async fn recompressed(image: &Assembled, to: Recompress, force: bool) -> Result<Assembled> {
    let (layout, manifest) = (image.layout.clone(), image.manifest.clone());
    let keep = if force { BTreeSet::new() } else { image.base_layers.clone() };
    let per_platform = platform_manifests(image)?;
    let m = tokio::task::spawn_blocking(move || -> Result<Descriptor> {
        let Some(manifests) = per_platform else {
            return Ok(recompress_image(&layout, &manifest, to, &|d| keep.contains(d))?);
        };
        let mut recompressed = Vec::with_capacity(manifests.len());
        for m in manifests {
            let mut desc = recompress_image(&layout, &m, to, &|d| keep.contains(d))?;
            desc.platform = m.platform;
            recompressed.push(desc);
        }
        Ok(rbk_image::save_index(&layout, recompressed, None)?)
    })
    .await
    .map_err(|source| BuildError::Task { what: "compression=", source })??;
    Ok(Assembled { layout: image.layout.clone(), manifest: m, base_layers: image.base_layers.clone() })
}

/// Each platform's manifest and the directory its root filesystem goes to
/// below a `type=local`/`type=tar` destination: the destination itself
/// for one image, `linux_arm64/` and so on for an index (as BuildKit's
/// local exporter).
fn rootfs_dirs(image: &Assembled) -> Result<Vec<(Descriptor, PathBuf)>> {
    Ok(match platform_manifests(image)? {
        None => vec![(image.manifest.clone(), PathBuf::new())],
        Some(ms) => ms.into_iter().map(|m| {
            let dir = PathBuf::from(m.platform.as_ref().map_or_else(|| m.digest.hex(), Platform::slug));
            (m, dir)
        }).collect(),
    })
}

/// One output (compression already applied); the progress note.
async fn write_output(image: &Assembled, out: &FarmOutput, tags: &[String], insecure_registries: &[String]) -> Result<String> {
    Ok(match out {
        FarmOutput::Oci { dest } => {
            rbk_image::export_oci_archive(&image.layout, &image.manifest, tags.first().map(String::as_str), dest)?;
            format!("exporting to oci image format {}", dest.display())
        }
        FarmOutput::Docker { dest } => {
            rbk_image::export_docker_archive(&image.layout, &image.manifest, tags, dest)?;
            format!("exporting to docker image format {}", dest.display())
        }
        FarmOutput::Local { dest } | FarmOutput::Tar { dest } => {
            let tar = matches!(out, FarmOutput::Tar { .. });
            let (layout, roots, to) = (image.layout.clone(), rootfs_dirs(image)?, dest.clone());
            tokio::task::spawn_blocking(move || if tar { rootfs_tar(&layout, &roots, &to) } else { unpack_rootfs_dirs(&layout, &roots, &to) })
                .await
                .map_err(|source| BuildError::Task { what: "type=local", source })??;
            match tar {
                true => format!("sending tarball {}", dest.display()),
                false => format!("copying files to {}", dest.display()),
            }
        }
        FarmOutput::Registry { names } => {
            let names = if names.is_empty() { tags } else { names };
            if names.is_empty() {
                return Err(BuildError::PushWithoutName);
            }
            let client = crate::registry_access::registry_client(insecure_registries)?;
            for name in names {
                let r: ImageRef = name.parse().map_err(|source| BuildError::ImageRef { flag: "push", reference: name.clone(), source })?;
                client.push(&image.layout, &image.manifest, &r, &PushOptions::default()).await?;
            }
            format!("pushing {} ({})", names.join(", "), image.manifest.digest)
        }
        FarmOutput::Named { names } => {
            let names = if names.is_empty() { tags } else { names };
            for name in names {
                image.layout.add_manifest(image.manifest.clone(), Some(name))?;
            }
            format!("naming to {} in {} (push=true sends it to the registry)", names.join(", "), image.layout.root().display())
        }
        FarmOutput::Load => {
            load_into_docker(image, tags).await?;
            "loading image into docker".into()
        }
        FarmOutput::Recompressed { .. } => return Err(BuildError::OutputSpec { spec: "compression=".into(), problem: "applied twice".into() }),
    })
}

/// `docker load` from a docker archive of the image.
async fn load_into_docker(image: &Assembled, tags: &[String]) -> Result<()> {
    let docker = find_program("docker").ok_or(BuildError::NoDocker)?;
    let tmp = tempfile::NamedTempFile::new_in(image.layout.root()).map_err(|e| BuildError::io(image.layout.root(), e))?;
    rbk_image::export_docker_archive(&image.layout, &image.manifest, tags, tmp.path())?;
    let file = std::fs::File::open(tmp.path()).map_err(|e| BuildError::io(tmp.path(), e))?;
    let out = tokio::process::Command::new(&docker)
        .arg("load")
        .stdin(Stdio::from(file))
        .output()
        .await
        .map_err(|e| BuildError::io(&docker, e))?;
    if !out.status.success() {
        return Err(BuildError::DockerLoad { status: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    Ok(())
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The image's root filesystem as one uncompressed tar at `dest`
/// (`type=tar`): unpacked as for `type=local`, then written by the layer
/// writer, so hard links stay links and the order is fixed.
fn rootfs_tar(layout: &OciLayout, roots: &[(Descriptor, PathBuf)], dest: &Path) -> Result<()> {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let root = tempfile::tempdir_in(parent).map_err(|e| BuildError::io(parent, e))?;
    unpack_rootfs_dirs(layout, roots, root.path())?;
    let opts = LayerOptions { compression: Compression::None, ..LayerOptions::new(parent) };
    let tar = rbk_image::layer_from_upper(root.path(), &opts)?;
    tar.file.persist(dest).map_err(|e| BuildError::io(dest, e.error))?;
    Ok(())
}

/// Unpacks each `(manifest, dir)` of [`rootfs_dirs`] into `dest/dir`.
fn unpack_rootfs_dirs(layout: &OciLayout, roots: &[(Descriptor, PathBuf)], dest: &Path) -> Result<()> {
    for (manifest, dir) in roots {
        unpack_rootfs(layout, manifest, &dest.join(dir))?;
    }
    Ok(())
}

/// Unpacks the image's layers into `dest` as one root filesystem. Each
/// layer goes into a scratch directory first (rbk-image's unpack refuses
/// entries escaping it), then is applied over `dest`: whiteouts delete,
/// opaque directories replace, everything else is moved in.
fn unpack_rootfs(layout: &OciLayout, manifest: &Descriptor, dest: &Path) -> Result<()> {
    let image = layout.load_image(manifest, &rbk_image::Platform::linux_amd64())?;
    std::fs::create_dir_all(dest).map_err(|e| BuildError::io(dest, e))?;
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let opts = UnpackOptions { preserve_ownership: rustix::process::geteuid().is_root(), ..UnpackOptions::default() };
    for l in image.layers() {
        let scratch = tempfile::tempdir_in(parent).map_err(|e| BuildError::io(parent, e))?;
        rbk_image::unpack_layer_file(&layout.blob_path(&l.digest), scratch.path(), &opts)?;
        apply_layer(scratch.path(), dest)?;
    }
    Ok(())
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|name| {
        let mut buf = [0u8; 1];
        matches!(rustix::fs::lgetxattr(dir, *name, &mut buf), Ok(1) if buf[0] == b'y')
    })
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::io(path, e)),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| BuildError::io(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| BuildError::io(path, e)),
    }
}

/// Applies an unpacked layer (overlayfs conventions) over `dest`. Both are
/// walked without following symlinks, and every name comes from a
/// directory listing, so nothing outside `dest` is touched.
fn apply_layer(layer: &Path, dest: &Path) -> Result<()> {
    for entry in std::fs::read_dir(layer).map_err(|e| BuildError::io(layer, e))? {
        let entry = entry.map_err(|e| BuildError::io(layer, e))?;
        let (src, dst) = (entry.path(), dest.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src).map_err(|e| BuildError::io(&src, e))?;
        if is_whiteout(&meta) {
            remove_any(&dst)?;
            continue;
        }
        let dst_meta = std::fs::symlink_metadata(&dst).ok();
        if meta.is_dir() && dst_meta.as_ref().is_some_and(|m| m.is_dir()) {
            if is_opaque(&src) {
                remove_any(&dst)?;
                std::fs::rename(&src, &dst).map_err(|e| BuildError::io(&dst, e))?;
            } else {
                std::fs::set_permissions(&dst, meta.permissions()).map_err(|e| BuildError::io(&dst, e))?;
                apply_layer(&src, &dst)?;
            }
            continue;
        }
        if dst_meta.is_some() {
            remove_any(&dst)?;
        }
        std::fs::rename(&src, &dst).map_err(|e| BuildError::io(&dst, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rbk_image::{Image, Platform};
    use rbk_store::{MemoryStore, StoreExt};

    fn tar_layer(files: &[(&str, &[u8])], whiteouts: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        for w in whiteouts {
            let (dir, name) = w.rsplit_once('/').unwrap_or(("", w));
            let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, p, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    async fn put_layer(store: &dyn Store, tar: Vec<u8>) -> LayerDesc {
        let digest = OciDigest::of(&tar);
        let b3 = store.put_bytes(tar.clone().into()).await.unwrap();
        LayerDesc {
            digest: digest.to_string(),
            diff_id: digest.to_string(),
            blake3: b3.to_string(),
            size: tar.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }

    fn recipe(step: &str) -> FinalImage {
        let mut image = Image::scratch(&Platform::linux_amd64());
        image.config.config.cmd = Some(vec!["/bin/sh".into()]);
        FinalImage { image, source: ImageSource::Step { step_id: step.into() } }
    }

    #[tokio::test]
    async fn the_final_image_has_the_results_layers_and_the_planned_config() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let l1 = put_layer(&*store, tar_layer(&[("a", b"1")], &[])).await;
        let l2 = put_layer(&*store, tar_layer(&[("b", b"2")], &[])).await;
        let dir = tempfile::tempdir().unwrap();
        let r = FarmResult { layers: vec![l1.clone(), l2.clone()] };
        let a = assemble(&*store, &recipe("s3"), Some(&r), &["img:1".into()], &dir.path().join("oci")).await.unwrap();
        let image = a.layout.load_image(&a.manifest, &Platform::linux_amd64()).unwrap();
        let digests: Vec<String> = image.layers().iter().map(|d| d.digest.to_string()).collect();
        assert_eq!(digests, vec![l1.digest, l2.digest]);
        assert_eq!(image.config.config.cmd, Some(vec!["/bin/sh".to_owned()]));
        assert_eq!(a.layout.find(Some("img:1")).unwrap().digest, a.manifest.digest);
    }

    #[tokio::test]
    async fn a_store_blob_that_is_not_the_layer_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let mut l = put_layer(&*store, tar_layer(&[("a", b"1")], &[])).await;
        l.digest = OciDigest::of(b"something else").to_string();
        let dir = tempfile::tempdir().unwrap();
        let r = FarmResult { layers: vec![l.clone()] };
        let e = assemble(&*store, &recipe("s1"), Some(&r), &[], &dir.path().join("oci")).await.unwrap_err().to_string();
        assert!(e.contains(&l.digest) || e.contains("mismatch") || e.contains("hashes"), "{e}");
        let layout = OciLayout::open(dir.path().join("oci")).unwrap();
        assert!(!layout.has_blob(&l.digest.parse().unwrap()), "nothing unverified lands in the layout");
    }

    #[tokio::test]
    async fn a_target_step_without_a_result_is_an_error_naming_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        let e = assemble(&*store, &recipe("s7"), None, &[], dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("s7"), "{e}");
    }

    #[tokio::test]
    async fn local_output_is_the_merged_rootfs_with_whiteouts_applied() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let l1 = put_layer(&*store, tar_layer(&[("etc/keep", b"k"), ("etc/gone", b"g"), ("over", b"old")], &[])).await;
        let l2 = put_layer(&*store, tar_layer(&[("over", b"new")], &["etc/gone"])).await;
        let dir = tempfile::tempdir().unwrap();
        let r = FarmResult { layers: vec![l1, l2] };
        let a = assemble(&*store, &recipe("s2"), Some(&r), &[], &dir.path().join("oci")).await.unwrap();
        let root = dir.path().join("rootfs");
        write_outputs(&a, &[FarmOutput::Local { dest: root.clone() }], &[], &[]).await.unwrap();
        assert_eq!(std::fs::read(root.join("etc/keep")).unwrap(), b"k");
        assert_eq!(std::fs::read(root.join("over")).unwrap(), b"new");
        assert!(!root.join("etc/gone").exists(), "the whiteout removed it");
        assert!(!root.join("etc/.wh.gone").exists());
    }

    #[test]
    fn image_outputs_parse_as_buildx_reads_them() {
        let zstd = Recompress { compression: Compression::Zstd, level: Some(5) };
        assert_eq!(FarmOutput::parse("type=tar,dest=fs.tar").unwrap(), FarmOutput::Tar { dest: "fs.tar".into() });
        assert_eq!(FarmOutput::parse("type=docker").unwrap(), FarmOutput::Load, "no dest: docker load");
        assert_eq!(
            FarmOutput::parse("type=image,name=r/a:1,push=true").unwrap(),
            FarmOutput::Registry { names: vec!["r/a:1".into()] }
        );
        assert_eq!(FarmOutput::parse("type=image,name=r/a:1").unwrap(), FarmOutput::Named { names: vec!["r/a:1".into()] });
        assert_eq!(
            FarmOutput::parse("type=image,\"name=r/a:1,r/a:2\",push=true").unwrap(),
            FarmOutput::Registry { names: vec!["r/a:1".into(), "r/a:2".into()] }
        );
        assert_eq!(
            FarmOutput::parse("type=oci,dest=x,compression=zstd,compression-level=5,force-compression=true").unwrap(),
            FarmOutput::Recompressed { output: Box::new(FarmOutput::Oci { dest: "x".into() }), to: zstd, force: true }
        );
        for (spec, problem) in [
            ("type=oci,dest=x,compression=lz4", "compression=lz4: expected gzip, zstd or uncompressed"),
            ("type=oci,dest=x,compression=gzip,compression-level=12", "gzip takes 0-9"),
            ("type=oci,dest=x,compression-level=3", "needs compression=gzip|zstd"),
            ("type=local,dest=d,compression=zstd", "not type=local"),
            ("type=image,push=maybe", "push=maybe: expected true or false"),
        ] {
            let e = FarmOutput::parse(spec).unwrap_err().to_string();
            assert!(e.contains(problem), "{spec}: {e}");
        }
    }

    #[test]
    fn outputs_parse_like_docker_builds() {
        assert_eq!(FarmOutput::parse("type=oci,dest=x.tar").unwrap(), FarmOutput::Oci { dest: "x.tar".into() });
        assert_eq!(FarmOutput::parse("out").unwrap(), FarmOutput::Local { dest: "out".into() });
        assert_eq!(FarmOutput::parse("type=registry").unwrap(), FarmOutput::Registry { names: vec![] });
        assert!(FarmOutput::parse("type=oci").unwrap_err().to_string().contains("dest="));
        assert!(FarmOutput::parse("type=tarball,dest=x").unwrap_err().to_string().contains("type=tarball"));
        assert!(FarmOutput::parse("type=oci,dest=x,colour=red").unwrap_err().to_string().contains("colour"));
    }
}
