//! An OCI archive (`rbk build -o type=oci,dest=FILE`) read back: its
//! index and blobs by digest, and the one image's manifest and config.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

pub struct OciArchive {
    pub index: serde_json::Value,
    /// `sha256:<hex>` → bytes.
    pub blobs: HashMap<String, Vec<u8>>,
}

impl OciArchive {
    pub fn read(archive: &Path) -> OciArchive {
        let mut blobs = HashMap::new();
        let mut index = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
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

    /// The first image's manifest: (digest, JSON).
    pub fn manifest(&self) -> (String, serde_json::Value) {
        let digest = self.index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let m = self.json(&digest);
        (digest, m)
    }

    /// The first image's config: (digest, JSON).
    pub fn config(&self) -> (String, serde_json::Value) {
        let digest = self.manifest().1["config"]["digest"].as_str().unwrap().to_owned();
        let c = self.json(&digest);
        (digest, c)
    }
}
