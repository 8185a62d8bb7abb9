//! `rbk coordinator` as a process a test owns: a scratch directory holding
//! its `tokens.toml` and `coordinator.toml`, the process, and the address
//! it printed. Shared by the tests that run the real binary against one.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

pub const RBK: &str = env!("CARGO_BIN_EXE_rbk");

/// A fresh, empty `rbk-NAME-PID` directory under the temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rbk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running coordinator; killed, and its directory removed, when dropped.
pub struct Coordinator {
    pub child: Child,
    pub dir: PathBuf,
    /// `http://ADDR` of the address it printed.
    pub url: String,
    /// The rest of its stdout, for what it prints after the address.
    pub stdout: BufReader<ChildStdout>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Coordinator {
    /// Writes `tokens` and `config` into `dir` (the config names the token
    /// file `tokens.toml`), starts `rbk coordinator --config` on it
    /// (`setup` adds to the command: environment, stderr) and reads the
    /// address from its first line.
    pub fn start(dir: &Path, tokens: &str, config: &str, setup: impl FnOnce(&mut Command)) -> Coordinator {
        std::fs::write(dir.join("tokens.toml"), tokens).unwrap();
        std::fs::write(dir.join("coordinator.toml"), config).unwrap();
        let mut cmd = Command::new(RBK);
        cmd.args(["coordinator", "--config"]).arg(dir.join("coordinator.toml")).stdout(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = Coordinator { child, dir: dir.to_owned(), url: String::new(), stdout };
        c.url = format!("http://{}", c.printed("rbk coordinator listening on "));
        c
    }

    /// The next line it prints, which must start with `prefix`, without it.
    pub fn printed(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("unexpected line {line:?}, wanted {prefix:?}")).to_owned()
    }
}
