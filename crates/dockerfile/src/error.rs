//! Errors of the frontend. Every error points at a place in the Dockerfile
//! (file, line, column), names the instruction it was reading and says what
//! was expected, because the person reading it is editing that file.

use std::fmt;

/// Where in a Dockerfile something was found. Lines and columns are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Self {
        Pos { line, col }
    }
}

/// A frontend error with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// The Dockerfile's name as the user gave it (e.g. `Dockerfile`).
    pub file: String,
    pub pos: Pos,
    /// The instruction being read (`COPY`), or `None` for file-level errors.
    pub instruction: Option<String>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        if let Some(i) = &self.instruction {
            write!(f, "{i}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// An error before the file name is attached: the parser works on text and
/// the caller knows which file the text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError {
    pub pos: Pos,
    pub instruction: Option<String>,
    pub message: String,
}

impl RawError {
    pub fn new(pos: Pos, instruction: Option<&str>, message: impl Into<String>) -> Self {
        RawError {
            pos,
            instruction: instruction.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn in_file(self, file: &str) -> Error {
        Error {
            file: file.to_string(),
            pos: self.pos,
            instruction: self.instruction,
            message: self.message,
        }
    }
}

pub type RawResult<T> = std::result::Result<T, RawError>;

/// The closest candidate to a misspelt word, for "did you mean" hints.
/// Only suggests when the edit distance is small relative to the word.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > 64 {
        return None;
    }
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = levenshtein(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if d <= (c.len() / 3).max(1) && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_flag() {
        assert_eq!(
            did_you_mean("chmodd", ["chown", "chmod", "from"]),
            Some("chmod")
        );
        assert_eq!(did_you_mean("zzzzz", ["chown", "chmod"]), None);
    }
}
