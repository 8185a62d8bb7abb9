//! Output of a step, line by line, with the time each line was read, and the
//! scrubbing that keeps secret values out of it.

use std::sync::Arc;
use std::time::SystemTime;

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
}
