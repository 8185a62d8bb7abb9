//! BuildKit-style progress on stderr.
//!
//! `auto` (and `tty`): `=> [stage 2/5] RUN ...  1.2s` per finished step,
//! `=> CACHED [...]` for cache hits, and a summary line
//! `[+] Building 12.3s (8/8) FINISHED`.
//!
//! `plain` follows BuildKit's plain format, which CI log folding and
//! tools reading build logs expect: each step is a block of lines
//! prefixed `#N`, a blank line between blocks —
//!
//! ```text
//! #3 [build 2/4] RUN make
//! #3 0.215 compiling
//! #3 DONE 1.3s
//!
//! #4 [build 3/4] COPY . /src
//! #4 CACHED
//! ```
//!
//! and a failure as `#N ERROR: why` followed by the step's last lines in
//! a `------` box. `quiet` prints only errors.

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
    /// The step whose block plain mode printed last (a new block starts
    /// with a blank line).
    last_block: Arc<Mutex<Option<usize>>>,
    total: usize,
    out: Out,
}

impl Progress {
    pub fn new(mode: ProgressMode, out: Out) -> Self {
        Progress {
            mode,
            started: Instant::now(),
            steps: Arc::default(),
            last_block: Arc::default(),
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

    /// Plain mode: `#n text`, after a blank line when the last line
    /// printed belonged to another step's block.
    fn block_line(&self, n: usize, text: &str) {
        let mut last = self.last_block.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|l| l != n) {
            let _ = writeln!(o);
        }
        *last = Some(n);
        let _ = writeln!(o, "#{n} {text}");
        let _ = o.flush();
    }

    /// How long step `n` has run as seen here (zero if its start was not
    /// seen).
    fn seen_running(&self, n: usize) -> Duration {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).get(&n).map(Instant::elapsed).unwrap_or_default()
    }

    pub fn started(&self, n: usize, label: &str) {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).insert(n, Instant::now());
        if self.mode == ProgressMode::Plain {
            self.block_line(n, label);
        }
    }

    pub fn log(&self, n: usize, line: &str) {
        if self.mode == ProgressMode::Plain {
            let since = self.steps.lock().unwrap_or_else(|e| e.into_inner()).get(&n).copied().unwrap_or(self.started);
            self.block_line(n, &format!("{:.3} {line}", since.elapsed().as_secs_f64()));
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
            ProgressMode::Plain => {
                self.block_line(n, label);
                self.block_line(n, "CACHED");
            }
            ProgressMode::Quiet => {}
        }
    }

    /// A step finished; `took` is what the coordinator measured. The time
    /// printed is never less than what the step's own lines showed (the
    /// time since its start was seen here): a log line at 0.25 s is never
    /// followed by `DONE 0.0s`.
    pub fn done(&self, n: usize, label: &str, took: Duration, note: &str) {
        let took = took.max(self.seen_running(n)).as_secs_f64();
        match self.mode {
            ProgressMode::Auto => {
                self.line(&format!(" => {label}{note}  {took:.1}s"))
            }
            ProgressMode::Plain => {
                let note = note.trim();
                if !note.is_empty() {
                    self.block_line(n, note);
                }
                self.block_line(n, &format!("DONE {took:.1}s"));
            }
            ProgressMode::Quiet => {}
        }
    }

    /// A step that runs nothing (FROM): one line in every mode but quiet.
    pub fn resolved(&self, n: usize, label: &str, took: Duration) {
        match self.mode {
            ProgressMode::Auto => self.line(&format!(" => {label}  {:.1}s", took.as_secs_f64())),
            ProgressMode::Plain => {
                self.block_line(n, label);
                self.block_line(n, &format!("DONE {:.1}s", took.as_secs_f64()));
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

    /// A step failed because of `why`; `tail` is its last output lines,
    /// shown in a `------` box as BuildKit shows them (in every mode).
    pub fn failed(&self, n: usize, label: &str, why: &str, tail: &[String]) {
        if self.mode == ProgressMode::Plain {
            self.block_line(n, &format!("ERROR: {why}"));
        } else {
            self.line(&format!(" => ERROR {label}"));
        }
        let mut text = format!("------\n > {label}:");
        for l in tail {
            text.push_str(&format!("\n{l}"));
        }
        text.push_str("\n------");
        self.line(&text);
        *self.last_block.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn summary(&self, done: usize, ok: bool) {
        if self.mode != ProgressMode::Quiet || !ok {
            let what = if ok { "FINISHED" } else { "FAILED" };
            self.text_line(&format!(
                "[+] Building {:.1}s ({done}/{}) {what}",
                self.started.elapsed().as_secs_f64(),
                self.total
            ));
        }
    }

    /// A line outside any step's block (after a blank line in plain mode
    /// when it follows one).
    fn text_line(&self, s: &str) {
        let after_block = self.last_block.lock().unwrap_or_else(|e| e.into_inner()).take().is_some();
        if after_block && self.mode == ProgressMode::Plain {
            self.line(&format!("\n{s}"));
        } else {
            self.line(s);
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
            self.text_line(s);
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

    fn text_of(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_done_time_is_never_below_what_the_steps_log_lines_showed() {
        let (p, buf) = captured();
        p.started(1, "[1/1] RUN sleep");
        std::thread::sleep(Duration::from_millis(250));
        p.log(1, "late line");
        // The coordinator's measure can be shorter (a step adopted after a
        // failover restarts its clock).
        p.done(1, "[1/1] RUN sleep", Duration::ZERO, "");
        let text = text_of(&buf);
        let done = text.lines().find_map(|l| l.strip_prefix("#1 DONE ")).unwrap();
        let logged = seconds_of(text.lines().find(|l| l.ends_with("late line")).unwrap());
        assert!(done.trim_end_matches('s').parse::<f64>().unwrap() >= (logged * 10.0).floor() / 10.0, "{text}");
        assert_ne!(done, "0.0s", "{text}");
    }

    #[test]
    fn plain_progress_is_buildkits_blocks_separated_by_blank_lines() {
        let (p, buf) = captured();
        p.resolved(3, "[1/3] FROM docker.io/library/busybox@sha256:abc", Duration::ZERO);
        p.cached(1, "[2/3] COPY a /a");
        p.started(2, "[3/3] RUN echo hi");
        p.log(2, "hi");
        p.done(2, "[3/3] RUN echo hi", Duration::from_millis(300), "");
        p.summary(2, true);
        let text = text_of(&buf);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..3], ["#3 [1/3] FROM docker.io/library/busybox@sha256:abc", "#3 DONE 0.0s", ""], "{text}");
        assert_eq!(&lines[3..6], ["#1 [2/3] COPY a /a", "#1 CACHED", ""], "{text}");
        assert_eq!(lines[6], "#2 [3/3] RUN echo hi", "{text}");
        assert!(lines[7].starts_with("#2 0.0") && lines[7].ends_with(" hi"), "{text}");
        assert_eq!(&lines[8..10], ["#2 DONE 0.3s", ""], "{text}");
        assert!(lines[10].starts_with("[+] Building ") && lines[10].ends_with("(2/0) FINISHED"), "{text}");
    }

    #[test]
    fn a_failure_says_why_and_boxes_the_steps_last_lines() {
        let (p, buf) = captured();
        p.started(2, "[2/2] RUN exit 7");
        p.failed(2, "[2/2] RUN exit 7", "exit code 7", &["about-to-fail".to_owned()]);
        let text = text_of(&buf);
        assert_eq!(text, "#2 [2/2] RUN exit 7\n#2 ERROR: exit code 7\n------\n > [2/2] RUN exit 7:\nabout-to-fail\n------\n", "{text}");
    }
}
