//! Running a bundle with an OCI runtime (runc or crun) as a child process:
//! output streamed line by line, a wall-time limit, and cleanup of the
//! container whatever happens.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::error::{Result, WorkerError};
use crate::logs::{LogLine, LogSink, Redactor, Stream};

/// How many of the last output lines a failure reports.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Runc,
    Crun,
}

/// An OCI runtime binary and the state directory it keeps containers in
/// (`--root`), private to rbk so its containers never mix with others'.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub program: PathBuf,
    pub state_root: PathBuf,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The process' exit code; 128 + signal when it was killed.
    pub exit_code: i32,
    /// The wall-time limit was reached and the container was killed.
    pub timed_out: bool,
    /// The last [`TAIL_LINES`] lines of output (stdout and stderr, in the
    /// order read), already scrubbed of secrets.
    pub tail: Vec<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A container id unique on this host: process id plus a counter.
pub fn container_id() -> String {
    format!("rbk-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Runtime {
    pub fn new(kind: RuntimeKind, program: impl Into<PathBuf>, state_root: impl Into<PathBuf>) -> Self {
        Runtime { kind, program: program.into(), state_root: state_root.into() }
    }

    /// `runc`/`crun` with `args`. crun on a host with hybrid cgroups (v1
    /// controllers plus a cgroup2 mount at `/sys/fs/cgroup/unified`)
    /// misdetects the layout, so it runs in a private mount namespace with
    /// that mount removed; runc needs no help.
    fn command(&self, args: &[&str]) -> Command {
        let mut all: Vec<String> = vec!["--root".into(), self.state_root.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        match self.kind {
            RuntimeKind::Runc => {
                let mut c = Command::new(&self.program);
                c.args(&all);
                c
            }
            RuntimeKind::Crun => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg("if [ -d /sys/fs/cgroup/unified ]; then umount /sys/fs/cgroup/unified 2>/dev/null; fi; exec \"$0\" \"$@\"")
                    .arg(&self.program)
                    .args(&all);
                c
            }
        }
    }

    fn name(&self) -> String {
        self.program.display().to_string()
    }

    /// Runs the bundle at `bundle` as container `id` to completion (or
    /// until `wall_time`), sending each output line to `sink`. The
    /// container is deleted before this returns, also on error and on
    /// timeout.
    pub async fn run(&self, bundle: &Path, id: &str, wall_time: Option<Duration>, sink: &LogSink, redactor: &Redactor) -> Result<RunOutcome> {
        std::fs::create_dir_all(&self.state_root).map_err(|e| WorkerError::io(format!("creating runtime state dir {}", self.state_root.display()), e))?;
        let bundle_s = bundle.display().to_string();
        let mut child = self
            .command(&["run", "--bundle", &bundle_s, id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WorkerError::Runtime { program: self.name(), reason: format!("starting `run` for container {id}: {e}") })?;
        let guard = DeleteOnDrop { runtime: self.clone(), id: id.to_owned(), armed: true };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let out = tokio::spawn(pump(child.stdout.take().expect("piped"), Stream::Stdout, sink.clone(), redactor.clone(), tail.clone()));
        let err = tokio::spawn(pump(child.stderr.take().expect("piped"), Stream::Stderr, sink.clone(), redactor.clone(), tail.clone()));

        let waited = match wall_time {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let (status, timed_out) = match waited {
            Some(status) => (status.map_err(|e| WorkerError::Runtime { program: self.name(), reason: format!("waiting for container {id}: {e}") })?, false),
            None => {
                tracing::warn!(container = id, "wall-time limit reached; killing");
                let _ = self.command(&["kill", id, "KILL"]).stdout(Stdio::null()).stderr(Stdio::null()).status().await;
                let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(s) => s.map_err(|e| WorkerError::Runtime { program: self.name(), reason: format!("waiting for killed container {id}: {e}") })?,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await.map_err(|e| WorkerError::Runtime { program: self.name(), reason: format!("reaping {id}: {e}") })?
                    }
                };
                (status, true)
            }
        };
        let _ = out.await;
        let _ = err.await;
        guard.delete().await;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let tail = tail.lock().expect("tail lock").iter().cloned().collect();
        Ok(RunOutcome { exit_code, timed_out, tail })
    }

    /// Force-deletes container `id` (kills what is left of it); errors
    /// are ignored because the usual case is "already gone".
    pub async fn delete(&self, id: &str) {
        let _ = self.command(&["delete", "-f", id]).stdout(Stdio::null()).stderr(Stdio::null()).status().await;
    }
}

/// Deletes the container if `run` is abandoned midway (its future dropped).
struct DeleteOnDrop {
    runtime: Runtime,
    id: String,
    armed: bool,
}

impl DeleteOnDrop {
    async fn delete(mut self) {
        self.runtime.delete(&self.id).await;
        self.armed = false;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Synchronous: we may be outside a runtime here.
        let mut c = self.runtime.command(&["delete", "-f", &self.id]).into_std();
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

async fn pump(r: impl AsyncRead + Unpin, stream: Stream, sink: LogSink, redactor: Redactor, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                let line = redactor.scrub(&String::from_utf8_lossy(&buf));
                {
                    let mut t = tail.lock().expect("tail lock");
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                sink(&LogLine { time: SystemTime::now(), stream, line });
            }
        }
    }
}
