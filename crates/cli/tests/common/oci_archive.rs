//! An OCI archive (`rbk build -o type=oci,dest=FILE`) read back, the one
//! reader every test binary uses: its index and blobs by digest, the one
//! image's manifest and config, each layer's entries, the filesystem the
//! layers make (whiteouts applied), and every byte of it decompressed (to
//! show a value is nowhere in it).

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

pub struct OciArchive {
    pub index: serde_json::Value,
    /// `sha256:<hex>` → bytes.
    pub blobs: HashMap<String, Vec<u8>>,
}

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub struct Entry {
    /// As the tar names it, without a leading `./`.
    pub path: String,
    pub kind: tar::EntryType,
    pub link: Option<String>,
    pub mode: u32,
    pub uid: u64,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind.is_dir()
    }
}

impl OciArchive {
    pub fn read(archive: &Path) -> OciArchive {
        let mut blobs = HashMap::new();
        let mut index = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display())));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name == "index.json" {
                index = data;
            } else if let Some(h) = name.strip_prefix("blobs/sha256/") {
                blobs.insert(format!("sha256:{h}"), data);
            }
        }
        OciArchive { index: serde_json::from_slice(&index).unwrap(), blobs }
    }

    fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&self.blobs[digest]).unwrap()
    }

    /// The first image's manifest digest.
    pub fn manifest_digest(&self) -> String {
        self.index["manifests"][0]["digest"].as_str().unwrap().to_owned()
    }

    /// The first image's manifest.
    pub fn manifest(&self) -> serde_json::Value {
        self.json(&self.manifest_digest())
    }

    /// The first image's config digest (docker's image ID).
    pub fn config_digest(&self) -> String {
        self.manifest()["config"]["digest"].as_str().unwrap().to_owned()
    }

    /// The image config (`config.Env`, `history` ...).
    pub fn config(&self) -> serde_json::Value {
        self.json(&self.config_digest())
    }

    /// Media types of the layers, bottom first.
    pub fn layer_media_types(&self) -> Vec<String> {
        self.manifest()["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap().to_owned()).collect()
    }

    /// Every layer's tar, decompressed, bottom layer first.
    fn layer_tars(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for layer in self.manifest()["layers"].as_array().unwrap() {
            let mut data = Vec::new();
            rbk_image::decompress(&self.blobs[layer["digest"].as_str().unwrap()][..]).unwrap().read_to_end(&mut data).unwrap();
            out.push(data);
        }
        out
    }

    /// Every layer's entries, bottom layer first.
    pub fn layers(&self) -> Vec<Vec<Entry>> {
        let mut out = Vec::new();
        for layer in self.layer_tars() {
            let mut t = tar::Archive::new(&layer[..]);
            let mut entries = Vec::new();
            for e in t.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_owned();
                let h = e.header();
                let (kind, mode, uid) = (h.entry_type(), h.mode().unwrap() & 0o7777, h.uid().unwrap());
                let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                entries.push(Entry { path, kind, link, mode, uid, data });
            }
            out.push(entries);
        }
        out
    }

    /// The content of `path` in the topmost layer that has an entry for it.
    /// Whiteouts are not applied: `None` means no layer holds it at all.
    pub fn file(&self, path: &str) -> Option<String> {
        self.layers()
            .into_iter()
            .rev()
            .find_map(|l| l.into_iter().find(|e| e.path == path))
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
    }

    /// The filesystem the layers make (whiteouts applied), by path without
    /// a leading `/` or a trailing one.
    pub fn files(&self) -> BTreeMap<String, Entry> {
        let mut fs = BTreeMap::new();
        for entry in self.layers().into_iter().flatten() {
            let path = entry.path.trim_end_matches('/').to_owned();
            let (dir, name) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, n)| (d, n));
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() { hidden.to_owned() } else { format!("{dir}/{hidden}") };
                fs.retain(|p: &String, _| p != &gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
            fs.insert(path, entry);
        }
        fs
    }

    /// The content of the file at `path` in [`files`](Self::files), as text.
    pub fn text(&self, path: &str) -> Option<String> {
        self.files().get(path.trim_start_matches('/')).map(|e| String::from_utf8_lossy(&e.data).into_owned())
    }

    /// Whether `needle` is anywhere in the image: manifest, config or any
    /// layer (decompressed).
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.blobs.values().any(|b| has(b, needle)) || self.layer_tars().iter().any(|l| has(l, needle))
    }
}

/// The content of `path` in the image of the OCI archive at `archive`
/// ([`OciArchive::file`]: the topmost layer that holds it).
pub fn file_in_image(archive: &Path, path: &str) -> Option<String> {
    OciArchive::read(archive).file(path)
}

pub fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` (recursively) holding `needle`, raw or decompressed
/// (gzip, zstd): a store's blobs and packs, a worker's state, raft logs.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                let Ok(raw) = std::fs::read(&p) else { continue };
                let mut plain = Vec::new();
                if let Ok(mut r) = rbk_image::decompress(&raw[..]) {
                    let _ = r.read_to_end(&mut plain);
                }
                if has(&raw, needle) || has(&plain, needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}
