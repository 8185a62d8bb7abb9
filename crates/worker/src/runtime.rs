//! Running a bundle with an OCI runtime (runc or crun) as a child process:
//! output streamed line by line within the bounds of [`crate::logs`], a
//! wall-time limit, the cgroup counters that say which limit a step ran
//! into, and cleanup of the container whatever happens.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::{Result, WorkerError};
use crate::limits::CgroupEvents;
use crate::logs::{Admit, LineSplitter, LogBudget, LogLine, LogSink, Redactor, Stream, clipped_marker};

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
    /// The output passed the log limit and was clipped.
    pub log_clipped: bool,
    /// The kernel's counters of the container's cgroups; `None` when the
    /// runtime removed them before they could be read (crun).
    pub cgroup: Option<CgroupEvents>,
}

/// How to run one container.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Kill the container after this long.
    pub wall_time: Option<Duration>,
    /// Clip the output after this many bytes.
    pub log_limit_bytes: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { wall_time: None, log_limit_bytes: crate::logs::DEFAULT_LOG_LIMIT_BYTES }
    }
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
    /// until `opts.wall_time`), sending each output line to `sink`. The
    /// container is deleted before this returns, also on error and on
    /// timeout. runc keeps the stopped container (`--keep`) until its
    /// cgroup counters are read.
    pub async fn run(&self, bundle: &Path, id: &str, opts: RunOptions, sink: &LogSink, redactor: &Redactor) -> Result<RunOutcome> {
        std::fs::create_dir_all(&self.state_root).map_err(|e| WorkerError::io(format!("creating runtime state dir {}", self.state_root.display()), e))?;
        let wall_time = opts.wall_time;
        let bundle_s = bundle.display().to_string();
        let mut args = vec!["run", "--bundle", &bundle_s];
        if self.kind == RuntimeKind::Runc {
            args.push("--keep");
        }
        args.push(id);
        let mut child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WorkerError::Runtime { program: self.name(), reason: format!("starting `run` for container {id}: {e}") })?;
        let guard = DeleteOnDrop { runtime: self.clone(), id: id.to_owned(), armed: true };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let budget = Arc::new(LogBudget::new(opts.log_limit_bytes));
        let out = tokio::spawn(pump(child.stdout.take().expect("piped"), Stream::Stdout, sink.clone(), redactor.clone(), tail.clone(), budget.clone()));
        let err = tokio::spawn(pump(child.stderr.take().expect("piped"), Stream::Stderr, sink.clone(), redactor.clone(), tail.clone(), budget.clone()));

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
        let cgroup = self.cgroup_events(id);
        guard.delete().await;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let tail = tail.lock().expect("tail lock").iter().cloned().collect();
        Ok(RunOutcome { exit_code, timed_out, tail, log_clipped: budget.clipped(), cgroup })
    }

    /// The counters of a stopped (kept) runc container, from the cgroup
    /// paths runc records in its `state.json`.
    fn cgroup_events(&self, id: &str) -> Option<CgroupEvents> {
        if self.kind != RuntimeKind::Runc {
            return None;
        }
        #[derive(Deserialize)]
        struct State {
            #[serde(default)]
            cgroup_paths: std::collections::HashMap<String, PathBuf>,
        }
        let raw = std::fs::read(self.state_root.join(id).join("state.json")).ok()?;
        let state: State = serde_json::from_slice(&raw).ok()?;
        let p = |k: &str| state.cgroup_paths.get(k).map(PathBuf::as_path);
        Some(CgroupEvents::read(p("memory"), p("pids"), p("")))
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

/// Reads one of the container's streams to its end, in bounded pieces
/// (see [`crate::logs`]): lines are split, scrubbed, counted against the
/// step's budget and sent; after the budget, read and dropped, so the
/// step never blocks on a full pipe.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    stream: Stream,
    sink: LogSink,
    redactor: Redactor,
    tail: Arc<Mutex<VecDeque<String>>>,
    budget: Arc<LogBudget>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (lines, done) = match r.read(&mut buf).await {
            Ok(0) | Err(_) => (splitter.finish(&redactor), true),
            Ok(n) => (splitter.push(&buf[..n], &redactor), false),
        };
        for line in lines {
            {
                let mut t = tail.lock().expect("tail lock");
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.clone());
            }
            match budget.admit(line.len()) {
                Admit::Send => sink(&LogLine { time: SystemTime::now(), stream, line }),
                Admit::SendMarker => {
                    sink(&LogLine { time: SystemTime::now(), stream: Stream::Stderr, line: clipped_marker(budget.limit()) })
                }
                Admit::Drop => {}
            }
        }
        if done {
            break;
        }
    }
}
