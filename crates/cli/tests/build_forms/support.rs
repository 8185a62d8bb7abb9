//! What the tests share: a context directory, `rbk build` runs on one
//! state directory, and reading an exported OCI archive's layers.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn registry() -> String {
    rbk_testsupport::registry()
}

/// The busybox test image in the registry, pinned by digest.
pub async fn busybox() -> String {
    rbk_image::testimage::push_busybox(&registry(), &rbk_testsupport::program("busybox")).await.unwrap().to_string()
}

/// Builds `dockerfile` in a project of its own and pushes the image as
/// `tag` (`-o type=image,name=TAG,push=true`); returns its digest.
pub fn push_built(dockerfile: &str, tag: &str) -> String {
    Project::new().build(dockerfile, &["-o", &format!("type=image,name={tag},push=true")]).assert_ok().digest
}

/// A build context and state directory (the state is kept between
/// builds, as a developer's is).
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// One `rbk build`'s outcome.
pub struct Built {
    pub ok: bool,
    /// The image digest `rbk build` prints.
    pub digest: String,
    pub progress: String,
}

impl Built {
    pub fn assert_ok(self) -> Built {
        assert!(self.ok, "{}", self.progress);
        self
    }
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        Project { dir }
    }

    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `rbk build --progress=plain ARGS CTX` with `dockerfile` as the
    /// context's Dockerfile.
    pub fn build(&self, dockerfile: &str, args: &[&str]) -> Built {
        self.write("Dockerfile", dockerfile);
        let out = Command::new(env!("CARGO_BIN_EXE_rbk"))
            .arg("build")
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .arg("--progress=plain")
            .args(args)
            .arg(self.ctx())
            .output()
            .unwrap();
        Built {
            ok: out.status.success(),
            digest: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            progress: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// [`build`](Self::build) with `-o type=oci,dest=image.tar`, read back.
    pub fn build_oci(&self, dockerfile: &str, args: &[&str]) -> (Built, OciArchive) {
        let dest = self.path("image.tar");
        let o = format!("type=oci,dest={}", dest.display());
        let mut all = vec!["-o", o.as_str()];
        all.extend_from_slice(args);
        let built = self.build(dockerfile, &all).assert_ok();
        (built, OciArchive::read(&dest))
    }
}

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// An OCI archive as `-o type=oci` writes it.
pub struct OciArchive {
    pub blobs: HashMap<String, Vec<u8>>,
    pub manifest: serde_json::Value,
}

impl OciArchive {
    pub fn read(path: &Path) -> OciArchive {
        let mut blobs = HashMap::new();
        let mut index = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            match name.strip_prefix("blobs/sha256/") {
                Some(h) => {
                    blobs.insert(format!("sha256:{h}"), data);
                }
                None if name == "index.json" => index = data,
                None => {}
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        let manifest = serde_json::from_slice(&blobs[index["manifests"][0]["digest"].as_str().unwrap()]).unwrap();
        OciArchive { blobs, manifest }
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&self.blobs[self.manifest["config"]["digest"].as_str().unwrap()]).unwrap()
    }

    /// Media types of the layers, bottom first.
    pub fn layer_media_types(&self) -> Vec<String> {
        self.manifest["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap().to_owned()).collect()
    }

    /// Every layer's entries, bottom layer first.
    pub fn layers(&self) -> Vec<Vec<Entry>> {
        let mut out = Vec::new();
        for l in self.manifest["layers"].as_array().unwrap() {
            let blob = &self.blobs[l["digest"].as_str().unwrap()];
            let mut t = tar::Archive::new(rbk_image::decompress(&blob[..]).unwrap());
            let mut entries = Vec::new();
            for e in t.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_owned();
                let kind = e.header().entry_type();
                let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                entries.push(Entry { path, kind, link, data });
            }
            out.push(entries);
        }
        out
    }

    /// The content of `path` in the image (topmost layer wins).
    pub fn file(&self, path: &str) -> Option<String> {
        self.layers()
            .into_iter()
            .rev()
            .find_map(|l| l.into_iter().find(|e| e.path == path))
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
    }
}

/// `skopeo ARGS`: stdout, or a panic with its stderr.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new(rbk_testsupport::program("skopeo")).args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect --raw` of a registry image: its manifest.
pub fn registry_manifest(reference: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])).unwrap()
}

/// The digest a tag names in the registry now.
pub fn registry_digest(reference: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{reference}")])).unwrap();
    v["Digest"].as_str().unwrap().to_owned()
}
