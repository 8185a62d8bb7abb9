//! Output of a step, line by line, with the time each line was read, the
//! scrubbing that keeps secret values out of it, and the bounds that keep a
//! step's output from costing the worker (or the coordinator it streams to)
//! more than a fixed amount of memory: no line longer than
//! [`MAX_LINE_BYTES`] (longer ones are split) and no more than a
//! configurable total per step ([`DEFAULT_LOG_LIMIT_BYTES`], BuildKit's
//! 2 MiB), after which one "log clipped" marker is sent and the rest is
//! read and dropped while the step keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

/// The longest line a worker holds: a longer line is sent in pieces of at
/// most this many bytes. Far below the coordinator's 4 MiB message limit,
/// so no single line can break a worker's session.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How much of a step's output is sent before the log is clipped
/// (BuildKit's default, `BUILDKIT_STEP_LOG_MAX_SIZE`).
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 2 << 20;

/// The line sent (on stderr) once, when a step's log is clipped.
pub fn clipped_marker(limit: u64) -> String {
    format!(
        "[rbk] log clipped: this step printed more than {}; the rest of its output is not shown (the step keeps running)",
        crate::limits::human_bytes(limit as i64)
    )
}

/// The output budget of one step, shared by its stdout and stderr readers.
#[derive(Debug)]
pub struct LogBudget {
    limit: u64,
    sent: AtomicU64,
    clipped: AtomicBool,
}

/// What to do with a line, according to the budget.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// Over the budget for the first time: send the marker instead.
    SendMarker,
    Drop,
}

impl LogBudget {
    pub fn new(limit: u64) -> Self {
        LogBudget { limit, sent: AtomicU64::new(0), clipped: AtomicBool::new(false) }
    }

    /// Accounts a line of `len` bytes (plus its newline).
    pub fn admit(&self, len: usize) -> Admit {
        if self.clipped.load(Ordering::Relaxed) {
            return Admit::Drop;
        }
        let before = self.sent.fetch_add(len as u64 + 1, Ordering::Relaxed);
        if before + (len as u64) < self.limit {
            Admit::Send
        } else if !self.clipped.swap(true, Ordering::Relaxed) {
            Admit::SendMarker
        } else {
            Admit::Drop
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The log was clipped.
    pub fn clipped(&self) -> bool {
        self.clipped.load(Ordering::Relaxed)
    }
}

/// Cuts a byte stream into lines of at most [`MAX_LINE_BYTES`], scrubbing
/// secrets before cutting: a long line is only cut once it holds a whole
/// secret's length past the cut, so a secret can never be split across two
/// pieces and escape the [`Redactor`].
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter { pending: Vec::new(), max_line: max_line.max(4) }
    }

    /// Feeds `data`; returns the complete lines (and long-line pieces) it
    /// finished, scrubbed, without their newline. Holds at most
    /// `max_line + redactor.longest() + data.len()` bytes between calls.
    pub fn push(&mut self, mut data: &[u8], redactor: &Redactor) -> Vec<String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let end = data.iter().position(|b| *b == b'\n');
            self.pending.extend_from_slice(&data[..end.unwrap_or(data.len())]);
            data = match end {
                Some(nl) => &data[nl + 1..],
                None => &[],
            };
            // Pieces of a long line: cut only once a whole secret's length
            // lies past the cut.
            while self.pending.len() > self.max_line + redactor.longest() {
                out.push(self.cut(redactor));
            }
            if end.is_some() {
                out.extend(self.flush_line(redactor));
            }
        }
        out
    }

    /// What is left at end of stream, as a last line.
    pub fn finish(&mut self, redactor: &Redactor) -> Vec<String> {
        if self.pending.is_empty() { vec![] } else { self.flush_line(redactor) }
    }

    fn flush_line(&mut self, redactor: &Redactor) -> Vec<String> {
        let mut line = redactor.scrub_bytes(&std::mem::take(&mut self.pending));
        while line.last().is_some_and(|b| *b == b'\r') {
            line.pop();
        }
        // Scrubbing never lengthens a line (`****` replaces 3+ bytes)
        // except for 3-byte secrets; cut anyway so the bound holds.
        let mut out = Vec::new();
        while line.len() > self.max_line {
            let at = utf8_cut(&line, self.max_line);
            out.push(String::from_utf8_lossy(&line[..at]).into_owned());
            line.drain(..at);
        }
        out.push(String::from_utf8_lossy(&line).into_owned());
        out
    }

    /// Sends the first `max_line` bytes of a long line as a piece.
    fn cut(&mut self, redactor: &Redactor) -> String {
        let scrubbed = redactor.scrub_bytes(&self.pending);
        let at = utf8_cut(&scrubbed, self.max_line);
        let piece = String::from_utf8_lossy(&scrubbed[..at]).into_owned();
        self.pending = scrubbed[at..].to_vec();
        piece
    }
}

/// A cut position at or below `max` that does not split a UTF-8 sequence
/// (unless the bytes are not UTF-8 anyway).
fn utf8_cut(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut at = max;
    while at > max.saturating_sub(3) && at > 0 && (b[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    if (b[at] & 0xC0) == 0x80 { max } else { at }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub stream: Stream,
    /// Without the trailing newline; invalid UTF-8 replaced.
    pub line: String,
}

/// Where a step's output goes as it is produced (progress display, the
/// coordinator's log stream). Called from the reader tasks, so it must be
/// cheap and must not block.
pub type LogSink = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> LogSink {
    Arc::new(|_| {})
}

/// Replaces every occurrence of a secret value in a log line with `****`.
/// A step that prints its secret (by mistake or on purpose) must not leak it
/// into the build log, which is shown to whoever can see the build.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Values shorter than 3 bytes are not scrubbed: they would turn every
    /// log line into asterisks and protect nothing.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut secrets: Vec<String> = Vec::new();
        for v in values {
            let s = String::from_utf8_lossy(v);
            // A secret file's content and each of its lines (a multi-line
            // secret is printed line by line).
            for candidate in std::iter::once(s.trim()).chain(s.lines().map(str::trim)) {
                if candidate.len() >= 3 && !secrets.iter().any(|x| x == candidate) {
                    secrets.push(candidate.to_owned());
                }
            }
        }
        // Longest first, so a secret that contains another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// The longest secret's length in bytes (0 without secrets).
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, |s| s.len())
    }

    /// [`Self::scrub`] on raw bytes (before they are known to be UTF-8).
    pub fn scrub_bytes(&self, line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        for s in &self.secrets {
            let s = s.as_bytes();
            if out.len() < s.len() || !out.windows(s.len()).any(|w| w == s) {
                continue;
            }
            let mut next = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(s) {
                    next.extend_from_slice(b"****");
                    i += s.len();
                } else {
                    next.push(out[i]);
                    i += 1;
                }
            }
            out = next;
        }
        out
    }

    pub fn scrub(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "****");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_scrubs_whole_values_and_their_lines() {
        let r = Redactor::new([b"hunter2-secret\n".as_slice(), b"line-one\nline-two".as_slice()]);
        assert_eq!(r.scrub("token=hunter2-secret!"), "token=****!");
        assert_eq!(r.scrub("got line-two"), "got ****");
        assert_eq!(r.scrub("nothing here"), "nothing here");
    }

    #[test]
    fn long_line_is_split_into_bounded_pieces() {
        let mut s = LineSplitter::new(10);
        let r = Redactor::default();
        let mut lines = s.push(&[b'a'; 25], &r);
        lines.extend(s.push(b"b\nshort\n", &r));
        assert_eq!(lines, vec!["a".repeat(10), "a".repeat(10), "aaaaab".to_string(), "short".to_string()]);
        assert!(s.finish(&r).is_empty());
    }

    #[test]
    fn secret_across_a_split_point_is_still_scrubbed() {
        let r = Redactor::new([b"SECRETVALUE".as_slice()]);
        let mut s = LineSplitter::new(8);
        let mut lines = Vec::new();
        for b in b"xxxxxSECRETVALUEyyyyyyyyyyyy\n" {
            lines.extend(s.push(&[*b], &r));
        }
        let joined = lines.concat();
        assert!(!joined.contains("SECRET") && joined.contains("****"), "{lines:?}");
        assert!(lines.iter().all(|l| l.len() <= 8), "{lines:?}");
    }

    #[test]
    fn split_does_not_cut_a_utf8_character() {
        let mut s = LineSplitter::new(5);
        let lines = s.push("aaaaé€x\n".as_bytes(), &Redactor::default());
        assert!(lines.iter().all(|l| !l.contains('\u{FFFD}')), "{lines:?}");
        assert_eq!(lines.concat(), "aaaaé€x");
    }

    #[test]
    fn budget_sends_one_marker_then_drops() {
        let b = LogBudget::new(10);
        assert_eq!(b.admit(4), Admit::Send);
        assert_eq!(b.admit(4), Admit::Send);
        assert_eq!(b.admit(4), Admit::SendMarker);
        assert_eq!(b.admit(1), Admit::Drop);
        assert!(b.clipped());
    }
}
