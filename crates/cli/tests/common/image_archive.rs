//! Reading back an image `rbk build -o type=oci,dest=FILE` exported: the
//! filesystem its layers make (whiteouts applied), its config, and every
//! byte of it decompressed (to show a value is nowhere in it).

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// One path of the image's filesystem.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mode: u32,
    pub uid: u64,
    pub is_dir: bool,
    pub data: Vec<u8>,
}

pub struct ImageArchive {
    blobs: HashMap<String, Vec<u8>>,
    manifest: serde_json::Value,
}

impl ImageArchive {
    pub fn open(archive: &Path) -> ImageArchive {
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
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        let manifest = serde_json::from_slice(&blobs[index["manifests"][0]["digest"].as_str().unwrap()]).unwrap();
        ImageArchive { blobs, manifest }
    }

    /// The image config (`config.Env`, `history` ...).
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&self.blobs[self.manifest["config"]["digest"].as_str().unwrap()]).unwrap()
    }

    fn layers(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for layer in self.manifest["layers"].as_array().unwrap() {
            let mut data = Vec::new();
            rbk_image::decompress(&self.blobs[layer["digest"].as_str().unwrap()][..]).unwrap().read_to_end(&mut data).unwrap();
            out.push(data);
        }
        out
    }

    /// The filesystem, by path without a leading `/`.
    pub fn files(&self) -> BTreeMap<String, Entry> {
        let mut fs = BTreeMap::new();
        for layer in self.layers() {
            let mut t = tar::Archive::new(&layer[..]);
            for e in t.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_owned();
                let (dir, name) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, n)| (d, n));
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    let gone = if dir.is_empty() { hidden.to_owned() } else { format!("{dir}/{hidden}") };
                    fs.retain(|p: &String, _| p != &gone && !p.starts_with(&format!("{gone}/")));
                    continue;
                }
                let h = e.header();
                let entry = Entry {
                    mode: h.mode().unwrap() & 0o7777,
                    uid: h.uid().unwrap(),
                    is_dir: h.entry_type().is_dir(),
                    data: Vec::new(),
                };
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                fs.insert(path, Entry { data, ..entry });
            }
        }
        fs
    }

    /// The content of the file at `path`, as text.
    pub fn text(&self, path: &str) -> Option<String> {
        self.files().get(path.trim_start_matches('/')).map(|e| String::from_utf8_lossy(&e.data).into_owned())
    }

    /// Whether `needle` is anywhere in the image: manifest, config or any
    /// layer (decompressed).
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.blobs.values().any(|b| has(b, needle)) || self.layers().iter().any(|l| has(l, needle))
    }
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
