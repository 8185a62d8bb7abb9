//! A real `ssh-agent` (from /usr/bin) holding a fresh ed25519 key, and the
//! host's `ssh-add` staged into a build context for a busybox image (the
//! binary, the libraries `ldd` names and the dynamic loader, under
//! `sshroot/`, for `COPY sshroot/ /`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestAgent {
    /// The agent's socket (what `SSH_AUTH_SOCK` would hold).
    pub sock: PathBuf,
    /// `SHA256:...` of the key the agent holds, as `ssh-add -l` prints it.
    pub fingerprint: String,
    /// The private key file (only the agent and this file hold it).
    pub key: PathBuf,
    agent: Child,
    _dir: tempfile::TempDir,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestAgent {
    pub fn start() -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        ok(Command::new("/usr/bin/ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "rbk-test-key", "-f"]).arg(&key));
        let listed = ok(Command::new("/usr/bin/ssh-keygen").arg("-lf").arg(key.with_extension("pub")));
        let fingerprint = listed.split_whitespace().nth(1).expect("ssh-keygen -l prints a fingerprint").to_owned();
        let sock = dir.path().join("agent.sock");
        let agent = Command::new("/usr/bin/ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "ssh-agent did not create {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        ok(Command::new("/usr/bin/ssh-add").arg("-q").arg(&key).env("SSH_AUTH_SOCK", &sock));
        TestAgent { sock, fingerprint, key, agent, _dir: dir }
    }
}

/// Copies `/usr/bin/ssh-add`, its libraries and the loader into
/// `ctx/sshroot/` at their absolute paths (symlinks resolved).
pub fn stage_ssh_add(ctx: &Path) {
    let root = ctx.join("sshroot");
    let copy = |from: &str| {
        let to = root.join(from.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {from}: {e}"));
    };
    copy("/usr/bin/ssh-add");
    for line in ok(Command::new("ldd").arg("/usr/bin/ssh-add")).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy(p);
        }
    }
}
