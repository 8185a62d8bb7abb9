//! BuildKit-style progress on stderr: `=> [stage 2/5] RUN ...  1.2s` per
//! step, `=> CACHED [...]` for cache hits, and a summary line
//! `[+] Building 12.3s (8/8) FINISHED`. `plain` also streams every log
//! line; `quiet` prints only errors.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// One line per finished step.
    Auto,
    /// Also every log line of every step, prefixed with the step number.
    Plain,
    /// Nothing but errors.
    Quiet,
}

impl std::str::FromStr for ProgressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "tty" => Ok(ProgressMode::Auto),
            "plain" => Ok(ProgressMode::Plain),
            "quiet" => Ok(ProgressMode::Quiet),
            _ => Err(format!(
                "--progress={s}: expected auto, plain, tty or quiet"
            )),
        }
    }
}

/// Where progress goes (stderr in the binary; a buffer in tests).
pub type Out = Arc<Mutex<dyn Write + Send>>;

#[derive(Clone)]
pub struct Progress {
    mode: ProgressMode,
    started: Instant,
    /// When each step (by its `#N`) started here: its log lines are timed
    /// from it, as BuildKit times a vertex's logs, so they agree with the
    /// step's DONE time.
    steps: Arc<Mutex<HashMap<usize, Instant>>>,
    total: usize,
    out: Out,
}

impl Progress {
    pub fn new(mode: ProgressMode, out: Out) -> Self {
        Progress {
            mode,
            started: Instant::now(),
            steps: Arc::default(),
            total: 0,
            out,
        }
    }

    pub fn stderr(mode: ProgressMode) -> Self {
        Self::new(mode, Arc::new(Mutex::new(std::io::stderr())))
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    pub fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    fn line(&self, s: &str) {
        let mut o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    }

    pub fn started(&self, n: usize, label: &str) {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).insert(n, Instant::now());
        if self.mode == ProgressMode::Plain {
            self.line(&format!("#{n} {label}"));
        }
    }

    pub fn log(&self, n: usize, line: &str) {
        if self.mode == ProgressMode::Plain {
            let since = self.steps.lock().unwrap_or_else(|e| e.into_inner()).get(&n).copied().unwrap_or(self.started);
            self.line(&format!("#{n} {:.3} {line}", since.elapsed().as_secs_f64()));
        }
    }

    /// A step's cache commit landed (after the step was done).
    pub fn commit(&self, n: usize, label: &str, what: &str) {
        match self.mode {
            ProgressMode::Auto => self.line(&format!(" => {label}: {what}")),
            ProgressMode::Plain => self.line(&format!("#{n} {what}")),
            ProgressMode::Quiet => {}
        }
    }

    pub fn cached(&self, n: usize, label: &str) {
        match self.mode {
            ProgressMode::Auto => self.line(&format!(" => CACHED {label}")),
            ProgressMode::Plain => self.line(&format!("#{n} CACHED {label}")),
            ProgressMode::Quiet => {}
        }
    }

    pub fn done(&self, n: usize, label: &str, took: Duration, note: &str) {
        match self.mode {
            ProgressMode::Auto => {
                self.line(&format!(" => {label}{note}  {:.1}s", took.as_secs_f64()))
            }
            ProgressMode::Plain => {
                self.line(&format!("#{n} DONE {:.1}s{note}", took.as_secs_f64()))
            }
            ProgressMode::Quiet => {}
        }
    }

    /// A step that runs nothing (FROM): one line in every mode but quiet.
    pub fn resolved(&self, n: usize, label: &str, took: Duration) {
        match self.mode {
            ProgressMode::Auto => self.line(&format!(" => {label}  {:.1}s", took.as_secs_f64())),
            ProgressMode::Plain => {
                self.line(&format!("#{n} {label} DONE {:.1}s", took.as_secs_f64()))
            }
            ProgressMode::Quiet => {}
        }
    }

    /// The FROM lines of a plan, numbered after its `steps` nodes (plain
    /// mode's `#N` must not collide with theirs).
    pub fn bases(&self, steps: usize, lines: &[String], took: Duration) {
        for (i, l) in lines.iter().enumerate() {
            self.resolved(steps + 1 + i, l, took);
        }
    }

    pub fn failed(&self, n: usize, label: &str, tail: &[String]) {
        let prefix = if self.mode == ProgressMode::Plain {
            format!("#{n} ")
        } else {
            " => ".into()
        };
        self.line(&format!("{prefix}ERROR {label}"));
        for l in tail {
            self.line(&format!("------ > {l}"));
        }
    }

    pub fn summary(&self, done: usize, ok: bool) {
        if self.mode != ProgressMode::Quiet || !ok {
            let what = if ok { "FINISHED" } else { "FAILED" };
            self.line(&format!(
                "[+] Building {:.1}s ({done}/{}) {what}",
                self.started.elapsed().as_secs_f64(),
                self.total
            ));
        }
    }

    /// The build checks' summary after a build, as buildx prints it:
    /// ` N warnings found (...):` then ` - Rule: message (line N)` each.
    /// Not in quiet mode (buildx neither).
    pub fn warnings<T: std::fmt::Display>(&self, checks: &[T]) {
        if checks.is_empty() || self.mode == ProgressMode::Quiet {
            return;
        }
        let n = checks.len();
        let mut text = format!(
            "\n {n} warning{} found (use rbk graph --check to expand):",
            if n == 1 { "" } else { "s" }
        );
        for c in checks {
            text.push_str(&format!("\n - {c}"));
        }
        self.line(&text);
    }

    pub fn note(&self, s: &str) {
        if self.mode != ProgressMode::Quiet {
            self.line(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> (Progress, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (Progress::new(ProgressMode::Plain, buf.clone()), buf)
    }

    fn seconds_of(line: &str) -> f64 {
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn log_lines_are_timed_from_their_steps_start_not_the_builds() {
        let (p, buf) = captured();
        std::thread::sleep(Duration::from_millis(300));
        p.started(2, "[2/2] RUN x");
        p.log(2, "hello");
        let since_build = p.started.elapsed().as_secs_f64();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line = text.lines().find(|l| l.ends_with("hello")).unwrap();
        // The step started at least 0.3 s after the build: timed from the
        // build, the line would read at least that much more.
        assert!(seconds_of(line) <= since_build - 0.3 + 0.001, "{text} (build: {since_build:.3} s)");
    }
}
