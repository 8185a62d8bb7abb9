//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub fn docker_registry() -> PathBuf {
    let p = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&p)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("docker-registry"))
        .find(|p| p.exists())
        .expect("docker-registry is not installed; run `deploy/dev/services.sh up`")
}

/// A docker-registry of our own (for tests that need auth or must tamper
/// with its storage), killed when dropped.
pub struct PrivateRegistry {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl PrivateRegistry {
    /// `auth_yaml` returns the indented body of the `auth:` section (empty
    /// for none); it may write files into the given directory.
    pub fn start(auth_yaml: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = rbk_testsupport::free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = auth_yaml(dir.path());
        let auth = if auth.is_empty() { String::new() } else { format!("auth:\n{auth}\n") };
        let config = format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\nhttp: {{ addr: \"{addr}\" }}\n{auth}",
            dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(docker_registry())
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        rbk_testsupport::wait_for_port(&addr, "private docker-registry", Duration::from_secs(10));
        PrivateRegistry { child, addr, dir }
    }

    /// Where the registry keeps the bytes of blob `hex`.
    #[allow(dead_code)]
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
