//! git for tests: `git` as a test user without the host's config, and
//! `git daemon` on 127.0.0.1 for tests that fetch over `git://` (read-only,
//! every repository under its base directory exported, stopped with its
//! whole process group when the handle is dropped).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `git -C DIR ARGS` as user `t <t@example.com>`, without the host's or
/// the user's config (`file://` pushes allowed); its stdout, trimmed, or a
/// panic with its stderr.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "protocol.file.allow=always"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("running git (is it installed?)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A running `git-daemon`; `url(name)` is `git://127.0.0.1:PORT/name`.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    /// Serves the repositories under `base`. `git-daemon` itself (from
    /// `git --exec-path`) runs in a process group of its own, so dropping
    /// the handle stops it and the `upload-pack`s it forked.
    pub fn start(base: &Path) -> GitDaemon {
        let exec_path = Command::new("git").arg("--exec-path").output().expect("running git --exec-path (is git installed?)");
        let exec_path = String::from_utf8(exec_path.stdout).expect("git's exec path is UTF-8");
        let port = crate::free_port();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting git-daemon");
        crate::wait_for_port(&format!("127.0.0.1:{port}"), "git daemon", Duration::from_secs(10));
        GitDaemon { child, port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // The group is the daemon's own pid (process_group(0)).
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}
