//! What the tests share: a context directory, `rbk build` runs on one
//! state directory, and the exported OCI archive read back
//! (`../common/oci_archive.rs`).

use std::path::PathBuf;
use std::process::Command;

use crate::oci_archive::OciArchive;

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
