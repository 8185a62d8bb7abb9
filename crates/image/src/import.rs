use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::IoContext;
use crate::export::DockerManifestEntry;
use crate::layout::REF_NAME;
use crate::model::{Descriptor, Index, Manifest, from_json, media_type, to_json};
use crate::{Compression, Image, ImageConfig, ImageError, OciDigest, OciLayout, Platform, Result};

/// JSON documents in an archive larger than this are refused.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// Imports an image from an OCI layout — a directory or a tar of one — into
/// `layout`, checking every blob's digest. `ref_name` picks an image by its
/// `org.opencontainers.image.ref.name` annotation (needed when the source
/// holds several); an index is followed to `platform`'s manifest. The
/// image is listed in `layout` under `ref_name` when given.
///
/// A tar is read in one pass, blobs streamed straight into `layout` by
/// their (checked) names: no path from the archive is ever used as a
/// filesystem path.
pub fn import_oci(src: &Path, ref_name: Option<&str>, platform: &Platform, layout: &OciLayout) -> Result<Image> {
    let meta = std::fs::metadata(src).ctx(|| format!("stat of {}", src.display()))?;
    let index: Index = if meta.is_dir() {
        let source = OciLayout::open(src)?;
        let index = source.index()?;
        // Copy just what the chosen image needs.
        let desc = find(&index, ref_name, src)?;
        copy_tree(&source, layout, &desc, platform)?;
        index
    } else {
        let f = File::open(src).ctx(|| format!("opening {}", src.display()))?;
        let mut index_bytes = None;
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
        for entry in archive.entries().ctx(|| format!("reading {}", src.display()))? {
            let mut entry = entry.ctx(|| format!("reading {}", src.display()))?;
            let path = entry.path_bytes().into_owned();
            let path = String::from_utf8_lossy(&path).into_owned();
            let name = path.trim_start_matches("./");
            let what = format!("{} entry {path:?}", src.display());
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            if name == "index.json" {
                index_bytes = Some(read_small(&mut entry, &what)?);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let digest: OciDigest = format!("sha256:{hex}").parse().map_err(|_| ImageError::invalid(&what, "blob name is not a sha256 digest"))?;
                let size = entry.header().size().ctx(|| format!("{what}: size"))?;
                layout.add_blob_reader(&mut entry, Some((&digest, size)), &what)?;
            }
        }
        let bytes = index_bytes.ok_or_else(|| ImageError::invalid(src.display().to_string(), "is not an OCI layout archive: no index.json"))?;
        from_json(&bytes, &format!("{}: index.json", src.display()))?
    };
    let desc = find(&index, ref_name, src)?;
    let image = layout.load_image(&desc, platform)?;
    for l in image.layers() {
        if !layout.has_blob(&l.digest) {
            return Err(ImageError::invalid(src.display().to_string(), format!("lacks layer blob {}", l.digest)));
        }
    }
    let mut listed = image.manifest_descriptor.clone();
    listed.annotations.remove(REF_NAME);
    layout.add_manifest(listed, ref_name)?;
    Ok(image)
}

fn find(index: &Index, ref_name: Option<&str>, src: &Path) -> Result<Descriptor> {
    let what = format!("{}: index.json", src.display());
    match ref_name {
        Some(name) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).is_some_and(|n| n == name || name.ends_with(&format!(":{n}"))))
            .cloned()
            .ok_or_else(|| ImageError::invalid(what, format!("no image named {name:?}"))),
        None => match index.manifests.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ImageError::invalid(what, "holds no image")),
            _ => Err(ImageError::invalid(what, "holds several images; name one")),
        },
    }
}

/// Copies a manifest (following an index to `platform`) and its blobs.
fn copy_tree(src: &OciLayout, dst: &OciLayout, desc: &Descriptor, platform: &Platform) -> Result<()> {
    let copy = |d: &Descriptor| dst.add_blob_file(&src.blob_path(&d.digest), Some((&d.digest, d.size))).map(|_| ());
    copy(desc)?;
    let mut manifest_desc = desc.clone();
    if media_type::is_index(&desc.media_type) {
        let index: Index = from_json(&src.read_blob(&desc.digest)?, &format!("index {}", desc.digest))?;
        manifest_desc = index.select(platform, &format!("index {}", desc.digest))?.clone();
        copy(&manifest_desc)?;
    }
    let m: Manifest = from_json(&src.read_blob(&manifest_desc.digest)?, &format!("manifest {}", manifest_desc.digest))?;
    copy(&m.config)?;
    for l in &m.layers {
        copy(l)?;
    }
    Ok(())
}

/// Imports an image from a `docker save` archive into `layout`. `repo_tag`
/// picks one of the archive's `RepoTags` (needed when it holds several
/// images). Layers are kept as docker wrote them (usually uncompressed,
/// `application/vnd.docker.image.rootfs.diff.tar`) and each one's
/// uncompressed digest is checked against the config's diff_id; the
/// manifest is a Docker schema 2 manifest. The image is listed in `layout`
/// under `repo_tag` (or the image's first tag).
pub fn import_docker_archive(src: &Path, repo_tag: Option<&str>, layout: &OciLayout) -> Result<Image> {
    let f = File::open(src).ctx(|| format!("opening {}", src.display()))?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
    // Every file is stored as a blob (the manifest naming the layers often
    // comes last); small JSON files are also kept in memory.
    let mut files: HashMap<String, (OciDigest, u64)> = HashMap::new();
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().ctx(|| format!("reading {}", src.display()))? {
        let mut entry = entry.ctx(|| format!("reading {}", src.display()))?;
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let what = format!("{} entry {path:?}", src.display());
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let size = entry.header().size().ctx(|| format!("{what}: size"))?;
                if path.ends_with(".json") || path == "repositories" {
                    let bytes = read_small(&mut entry, &what)?;
                    let d = layout.write_blob(&bytes)?;
                    files.insert(path.clone(), (d, bytes.len() as u64));
                    json.insert(path, bytes);
                } else {
                    let (d, n) = layout.add_blob_reader(&mut entry, None, &what)?;
                    debug_assert_eq!(n, size);
                    files.insert(path, (d, n));
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                // docker save links repeated layers to the first copy.
                let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                let base = if entry.header().entry_type() == tar::EntryType::Symlink { path.rsplit_once('/').map_or("", |(d, _)| d) } else { "" };
                let resolved = normalize(&format!("{base}/{target}"));
                links.insert(path, resolved);
            }
            _ => {}
        }
    }
    let resolve = |p: &str| -> Option<(OciDigest, u64)> {
        let mut p = normalize(p);
        for _ in 0..8 {
            if let Some(f) = files.get(&p) {
                return Some(*f);
            }
            p = links.get(&p)?.clone();
        }
        None
    };
    let mf = json.get("manifest.json").ok_or_else(|| ImageError::invalid(src.display().to_string(), "is not a docker archive: no manifest.json"))?;
    let entries: Vec<DockerManifestEntry> = from_json(mf, &format!("{}: manifest.json", src.display()))?;
    let entry = match repo_tag {
        Some(t) => entries.iter().find(|e| e.repo_tags.iter().any(|rt| rt == t)),
        None if entries.len() == 1 => entries.first(),
        None => None,
    }
    .ok_or_else(|| {
        let tags: Vec<_> = entries.iter().flat_map(|e| e.repo_tags.iter().cloned()).collect();
        ImageError::invalid(format!("{}: manifest.json", src.display()), format!("no image {repo_tag:?}; it holds {tags:?}"))
    })?;
    let missing = |p: &str| ImageError::invalid(src.display().to_string(), format!("manifest.json names {p:?}, which the archive lacks"));
    let (config_digest, config_size) = resolve(&entry.config).ok_or_else(|| missing(&entry.config))?;
    let config_bytes = layout.read_blob(&config_digest)?;
    let config: ImageConfig = from_json(&config_bytes, &format!("{}: {}", src.display(), entry.config))?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(ImageError::invalid(
            format!("{}: manifest.json", src.display()),
            format!("lists {} layers but the config has {} diff_ids", entry.layers.len(), config.rootfs.diff_ids.len()),
        ));
    }
    let mut layers = Vec::new();
    for (p, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let (digest, size) = resolve(p).ok_or_else(|| missing(p))?;
        let blob = layout.blob_path(&digest);
        let mut f = File::open(&blob).ctx(|| format!("opening {}", blob.display()))?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).ctx(|| format!("reading {}", blob.display()))?;
        let mt = match Compression::detect(&magic[..n]) {
            Compression::None => media_type::DOCKER_LAYER,
            Compression::Gzip => media_type::DOCKER_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        };
        let actual = if mt == media_type::DOCKER_LAYER {
            digest
        } else {
            let r = crate::decompress(File::open(&blob).ctx(|| format!("opening {}", blob.display()))?).ctx(|| format!("reading {}", blob.display()))?;
            OciDigest::of_reader(r).ctx(|| format!("decompressing layer {p:?} of {}", src.display()))?.0
        };
        diff_id.verify(&actual, || format!("{}: layer {p:?} (uncompressed, against the config's diff_id)", src.display()))?;
        layers.push(Descriptor::new(mt, digest, size));
    }
    let mut manifest = Manifest::oci(Descriptor::new(media_type::DOCKER_CONFIG, config_digest, config_size), layers);
    manifest.media_type = Some(media_type::DOCKER_MANIFEST.into());
    let bytes = to_json(&manifest);
    layout.write_blob(&bytes)?;
    let mut desc = Descriptor::for_bytes(media_type::DOCKER_MANIFEST, &bytes);
    desc.platform = Some(Platform { architecture: config.architecture.clone(), os: config.os.clone(), variant: config.variant.clone(), os_version: None, os_features: vec![] });
    let name = repo_tag.map(str::to_owned).or_else(|| entry.repo_tags.first().cloned());
    layout.add_manifest(desc.clone(), name.as_deref())?;
    Ok(Image { manifest_descriptor: desc, manifest, config })
}

/// `a/./b/../c` → `a/c`, without a leading `./` or `/`. Archive paths are
/// only ever used as map keys, never on the filesystem.
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn read_small(r: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(MAX_JSON_BYTES + 1).read_to_end(&mut buf).ctx(|| format!("reading {what}"))?;
    if buf.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::invalid(what.to_owned(), format!("larger than {MAX_JSON_BYTES} bytes")));
    }
    Ok(buf)
}
