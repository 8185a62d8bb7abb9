use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::IoContext;
use crate::layout::REF_NAME;
use crate::model::{Index, Manifest, from_json, media_type, to_json};
use crate::{Descriptor, ImageError, OciDigest, OciLayout, Platform, Result, Sha256Writer};

/// Writes the image `manifest` (and every blob it needs) from `layout` as an
/// OCI layout tar at `out` (what `skopeo copy oci-archive:` reads), named
/// `ref_name` in its `index.json`. For a single-platform image a
/// `manifest.json` is included as well, so `docker load` (25 and later)
/// takes the same file. The file appears only once complete.
pub fn export_oci_archive(layout: &OciLayout, manifest: &Descriptor, ref_name: Option<&str>, out: &Path) -> Result<()> {
    let mut blobs = BTreeSet::new();
    blobs.insert(manifest.digest);
    let mut docker_manifest = None;
    if media_type::is_index(&manifest.media_type) {
        let index: Index = from_json(&layout.read_blob(&manifest.digest)?, &format!("index {}", manifest.digest))?;
        for child in &index.manifests {
            if layout.has_blob(&child.digest) {
                blobs.insert(child.digest);
                collect_manifest_blobs(layout, &child.digest, &mut blobs)?;
            }
        }
    } else {
        let m = collect_manifest_blobs(layout, &manifest.digest, &mut blobs)?;
        docker_manifest = Some(vec![DockerManifestEntry {
            config: format!("blobs/sha256/{}", m.config.digest.hex()),
            repo_tags: ref_name.filter(|n| n.contains(':')).map(|n| vec![n.to_owned()]).unwrap_or_default(),
            layers: m.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect(),
        }]);
    }
    let mut desc = manifest.clone();
    if let Some(name) = ref_name {
        desc.annotations.insert(REF_NAME.to_owned(), name.to_owned());
    }
    let mut index = Index::empty();
    index.manifests.push(desc);

    write_tar_atomically(out, |b| {
        append_bytes(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(b, "index.json", &to_json(&index))?;
        if let Some(dm) = &docker_manifest {
            append_bytes(b, "manifest.json", &to_json(dm))?;
        }
        append_dir(b, "blobs/")?;
        append_dir(b, "blobs/sha256/")?;
        for d in &blobs {
            let path = layout.blob_path(d);
            let mut f = File::open(&path).ctx(|| format!("opening blob {}", path.display()))?;
            let size = f.metadata().ctx(|| format!("stat of blob {}", path.display()))?.len();
            append_reader(b, &format!("blobs/sha256/{}", d.hex()), size, &mut f).map_err(|e| match e {
                ImageError::Io { context, source } => ImageError::Io { context: format!("{context} (blob {d})"), source },
                e => e,
            })?;
        }
        Ok(())
    })
}

/// One image in a docker-archive `manifest.json`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// Writes the image as a `docker save`-style archive that `docker load`
/// accepts: `manifest.json`, `repositories`, the config as `<hex>.json`
/// and each layer uncompressed as `<diff_id hex>/layer.tar` (docker before
/// 25 cannot load compressed layers from an archive). `repo_tags` are
/// `name:tag` strings. An index is resolved to linux/amd64. Each layer's
/// uncompressed bytes are checked against the config's diff_id. The file
/// appears only once complete.
pub fn export_docker_archive(layout: &OciLayout, manifest: &Descriptor, repo_tags: &[String], out: &Path) -> Result<()> {
    let image = layout.load_image(manifest, &Platform::linux_amd64())?;
    let config_digest = image.manifest.config.digest;
    let config_bytes = layout.read_blob(&config_digest)?;
    let entry = DockerManifestEntry {
        config: format!("{}.json", config_digest.hex()),
        repo_tags: repo_tags.to_vec(),
        layers: image.diff_ids().iter().map(|d| format!("{}/layer.tar", d.hex())).collect(),
    };
    let mut repositories = serde_json::Map::new();
    if let Some(top) = image.diff_ids().last() {
        for rt in repo_tags {
            let (repo, tag) = rt.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((rt.as_str(), "latest"));
            let e = repositories.entry(repo.to_owned()).or_insert_with(|| serde_json::Value::Object(Default::default()));
            e.as_object_mut().expect("inserted as an object").insert(tag.to_owned(), serde_json::Value::String(top.hex()));
        }
    }
    let scratch_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    write_tar_atomically(out, |b| {
        let mut written = BTreeSet::new();
        for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
            if !written.insert(*diff_id) {
                continue;
            }
            // The tar header needs the size first: inflate to a scratch file.
            let blob_path = layout.blob_path(&layer.digest);
            let src = File::open(&blob_path).ctx(|| format!("opening layer {} at {}", layer.digest, blob_path.display()))?;
            let mut tmp = tempfile::tempfile_in(scratch_dir).ctx(|| format!("creating a scratch file in {}", scratch_dir.display()))?;
            let mut w = Sha256Writer::new(BufWriter::with_capacity(1 << 20, &mut tmp));
            let mut r = crate::decompress(src).ctx(|| format!("reading layer {}", layer.digest))?;
            io::copy(&mut r, &mut w).ctx(|| format!("decompressing layer {}", layer.digest))?;
            let (actual, size, mut buf) = w.finish();
            buf.flush().ctx(|| "writing a scratch file".to_owned())?;
            drop(buf);
            diff_id.verify(&actual, || format!("layer {} uncompressed (diff_id in config {config_digest})", layer.digest))?;
            tmp.rewind().ctx(|| "rewinding a scratch file".to_owned())?;
            append_dir(b, &format!("{}/", diff_id.hex()))?;
            append_bytes(b, &format!("{}/VERSION", diff_id.hex()), b"1.0")?;
            append_reader(b, &format!("{}/layer.tar", diff_id.hex()), size, &mut tmp)?;
        }
        append_bytes(b, &entry.config, &config_bytes)?;
        append_bytes(b, "manifest.json", &to_json(&vec![&entry]))?;
        append_bytes(b, "repositories", &to_json(&repositories))?;
        Ok(())
    })
}

fn collect_manifest_blobs(layout: &OciLayout, digest: &OciDigest, blobs: &mut BTreeSet<OciDigest>) -> Result<Manifest> {
    let m: Manifest = from_json(&layout.read_blob(digest)?, &format!("manifest {digest}"))?;
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !layout.has_blob(&d.digest) {
            return Err(ImageError::invalid(format!("blob {}", d.digest), format!("is not in {} (needed by manifest {digest})", layout.root().display())));
        }
        blobs.insert(d.digest);
    }
    Ok(m)
}

type TarOut = tar::Builder<BufWriter<File>>;

/// Writes a tar to a temporary file beside `out` and renames it into place
/// only when `fill` succeeded.
fn write_tar_atomically(out: &Path, fill: impl FnOnce(&mut TarOut) -> Result<()>) -> Result<()> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".export-").tempfile_in(dir).ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    fill(&mut b)?;
    let mut w = b.into_inner().ctx(|| format!("finishing {}", out.display()))?;
    w.flush().ctx(|| format!("writing {}", out.display()))?;
    tmp_path.persist(out).map_err(|e| ImageError::io(format!("renaming into {}", out.display()), e.error))?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir(b: &mut TarOut, name: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, name, io::empty()).ctx(|| format!("adding {name} to the archive"))
}

fn append_bytes(b: &mut TarOut, name: &str, data: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, name, data).ctx(|| format!("adding {name} to the archive"))
}

fn append_reader(b: &mut TarOut, name: &str, size: u64, r: &mut dyn Read) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    b.append_data(&mut h, name, r.take(size)).ctx(|| format!("adding {name} to the archive"))
}
