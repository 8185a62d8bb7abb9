//! Physical lines → logical instruction lines: line continuation with the
//! escape character, comments (also inside continuations), empty
//! continuation lines, and heredoc bodies following RUN/COPY/ADD lines.

use crate::directives::{self, Directives};
use crate::error::{Pos, RawError, RawResult};

/// Dockerfiles larger than this are refused rather than parsed: no real
/// Dockerfile comes near it, and it bounds the work a hostile input causes.
pub const MAX_DOCKERFILE_BYTES: usize = 8 << 20;

/// One instruction as written, before its arguments are interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    pub pos: Pos,
    /// The keyword as written (`run`, `Copy`, ...).
    pub keyword: String,
    /// Everything after the keyword, continuations joined, trimmed.
    pub rest: String,
    /// Column where `rest` starts on the first line.
    pub rest_col: usize,
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc body attached to an instruction (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Heredoc {
    /// The delimiter without quotes (`EOF`).
    pub name: String,
    /// The body, each line ending in `\n`, leading tabs removed for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted: the body is taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs were stripped.
    pub strip_tabs: bool,
}

/// The lexed file: directives and logical lines.
pub(crate) struct Lexed {
    pub directives: Directives,
    pub lines: Vec<LogicalLine>,
}

pub(crate) fn lex(text: &str) -> RawResult<Lexed> {
    if text.len() > MAX_DOCKERFILE_BYTES {
        return Err(RawError::new(
            Pos::new(1, 1),
            None,
            format!(
                "Dockerfile is {} bytes; at most {} bytes are accepted",
                text.len(),
                MAX_DOCKERFILE_BYTES
            ),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let physical: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let (directives, mut i) = directives::parse(&physical)?;
    let escape = directives.escape;
    let mut lines = Vec::new();
    while i < physical.len() {
        let first = physical[i];
        let trimmed = first.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let start_line = i + 1;
        let col = first.len() - trimmed.len() + 1;
        let mut joined = String::new();
        let mut cur = trimmed;
        i += 1;
        loop {
            match continuation(cur, escape) {
                Some(head) => {
                    joined.push_str(head);
                    // Skip comment lines and empty lines inside a continuation.
                    while i < physical.len() {
                        let t = physical[i].trim_start();
                        if t.is_empty() || t.starts_with('#') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    if i >= physical.len() {
                        break;
                    }
                    cur = physical[i];
                    i += 1;
                }
                None => {
                    joined.push_str(cur);
                    break;
                }
            }
        }
        let keyword_len = joined
            .find(|c: char| c.is_whitespace())
            .unwrap_or(joined.len());
        let keyword = joined[..keyword_len].to_string();
        let after = &joined[keyword_len..];
        let rest_trimmed = after.trim_start();
        let rest_col = col + keyword_len + (after.len() - rest_trimmed.len());
        let rest = rest_trimmed.trim_end().to_string();
        let pos = Pos::new(start_line, col);
        let mut heredocs = Vec::new();
        let kw = keyword.to_ascii_uppercase();
        // ONBUILD RUN/COPY/ADD take heredocs too: the trigger's own line.
        let (heredoc_kw, heredoc_rest) = if kw == "ONBUILD" {
            let (sub, sub_rest) = split_word(&rest, escape);
            (sub.to_ascii_uppercase(), sub_rest.trim_start())
        } else {
            (kw.clone(), rest.as_str())
        };
        if matches!(heredoc_kw.as_str(), "RUN" | "COPY" | "ADD")
            && !rest_after_flags(heredoc_rest, escape).starts_with('[')
        {
            for (name, expand, strip_tabs) in heredoc_markers(heredoc_rest, escape) {
                let mut content = String::new();
                let mut closed = false;
                while i < physical.len() {
                    let raw = physical[i];
                    i += 1;
                    let line = if strip_tabs {
                        raw.trim_start_matches('\t')
                    } else {
                        raw
                    };
                    if line == name {
                        closed = true;
                        break;
                    }
                    content.push_str(line);
                    content.push('\n');
                }
                if !closed {
                    return Err(RawError::new(
                        pos,
                        Some(&kw),
                        format!(
                            "heredoc <<{name} is not terminated; expected a line '{name}' before the end of the file"
                        ),
                    ));
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    strip_tabs,
                });
            }
        }
        lines.push(LogicalLine {
            pos,
            keyword,
            rest,
            rest_col,
            heredocs,
        });
    }
    Ok(Lexed { directives, lines })
}

/// If `line` ends with the escape character (optionally followed by blanks),
/// returns the line without it. As in BuildKit, an escape character that is
/// itself escaped (`x\\`) does not continue the line; a line that is only
/// the escape character does.
fn continuation(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end_matches([' ', '\t']);
    let head = t.strip_suffix(escape)?;
    if head.ends_with(escape) && !head.trim_start().is_empty() {
        return None;
    }
    Some(head)
}

/// Skips leading `--flag` words, so exec-form detection sees the command.
pub(crate) fn rest_after_flags(rest: &str, escape: char) -> &str {
    let mut r = rest.trim_start();
    while r.starts_with("--") {
        let (_, after) = split_word(r, escape);
        r = after.trim_start();
    }
    r
}

/// Splits off the first blank-delimited word, honouring quotes; inside
/// quotes the escape character is an ordinary character (how flags are
/// read: `--mount="target=/a\"` ends at its closing quote).
pub(crate) fn split_word(s: &str, escape: char) -> (&str, &str) {
    split_word_with(s, escape, false)
}

/// Splits off the first word as BuildKit's word splitter does for ENV,
/// LABEL, ARG and the like: inside double quotes the escape character still
/// protects the next character (`"a \"b\" c"` is one word).
pub(crate) fn split_arg_word(s: &str, escape: char) -> (&str, &str) {
    split_word_with(s, escape, true)
}

fn split_word_with(s: &str, escape: char, escape_in_double_quotes: bool) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (idx, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == escape && escape_in_double_quotes => escaped = true,
            Some(_) => {}
            None if c == escape => escaped = true,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => return (&s[..idx], &s[idx..]),
            None => {}
        }
    }
    (s, "")
}

/// Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`) among the words
/// of `rest`, in order: (delimiter, expand, strip_tabs).
pub(crate) fn heredoc_markers(rest: &str, escape: char) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut r = rest.trim_start();
    while !r.is_empty() {
        let (word, after) = split_word(r, escape);
        r = after.trim_start();
        if let Some(m) = heredoc_marker(word, escape) {
            out.push(m);
        }
    }
    out
}

pub(crate) fn heredoc_marker(word: &str, escape: char) -> Option<(String, bool, bool)> {
    let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let w = w.strip_prefix("<<")?;
    let (strip_tabs, w) = match w.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, w),
    };
    if w.is_empty() || w.contains('<') {
        return None;
    }
    // Unquote the delimiter; any quoting disables expansion of the body.
    let mut name = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut chars = w.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => name.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                quoted = true;
            }
            None if c == escape => {
                quoted = true;
                if let Some(n) = chars.next() {
                    name.push(n);
                }
            }
            None => name.push(c),
        }
    }
    if quote.is_some() || name.is_empty() {
        return None;
    }
    Some((name, !quoted, strip_tabs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_joins_lines_and_drops_inner_comments_and_blank_lines() {
        let l = lex("RUN a \\\n# comment\n\n  b\nCMD x").unwrap();
        assert_eq!(l.lines.len(), 2);
        assert_eq!(l.lines[0].rest, "a   b");
        assert_eq!(l.lines[1].pos, Pos::new(5, 1));
    }

    #[test]
    fn heredoc_bodies_follow_their_line() {
        let l = lex("RUN <<A cat <<-'B'\nhello $x\nA\n\tworld\n\tB\nCMD y").unwrap();
        let h = &l.lines[0].heredocs;
        assert_eq!(
            h[0],
            Heredoc {
                name: "A".into(),
                content: "hello $x\n".into(),
                expand: true,
                strip_tabs: false
            }
        );
        assert_eq!(
            h[1],
            Heredoc {
                name: "B".into(),
                content: "world\n".into(),
                expand: false,
                strip_tabs: true
            }
        );
        assert_eq!(l.lines[1].keyword, "CMD");
    }
}
