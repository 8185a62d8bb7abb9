//! Variable expansion and quote removal for one word, with the semantics of
//! BuildKit's shell lexer (`shell/lex.go`): `$v`, `${v}`, `${v:-w}`,
//! `${v:+w}`, `${v-w}`, `${v+w}`, `${v:?msg}`, `${v?msg}`, `${v#p}`,
//! `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`; single quotes
//! are literal, double quotes expand, the escape character escapes.
//!
//! Only the instructions Docker expands call this; RUN, CMD and ENTRYPOINT
//! leave `$` to the shell.

use crate::pattern::Glob;

/// Nesting deeper than this (`${a:-${b:-${c:-...}}}`) is refused so that
/// hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;
/// Expanded words larger than this are refused: `ENV a=$a$a` repeated would
/// otherwise double without bound.
pub const MAX_EXPANDED: usize = 1 << 20;
/// Pattern operators on longer values are refused (their cost is quadratic).
const MAX_PATTERN_VALUE: usize = 1 << 10;

/// Where expansion finds a variable's value (`None`: unset).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands `word` with `lookup` for variables. Errors are messages; the caller
/// adds the position.
pub fn expand(word: &str, escape: char, lookup: Lookup<'_>) -> Result<String, String> {
    run(word, escape, lookup, false)
}

/// Expands a heredoc body: variables are substituted but quotes are
/// ordinary characters (it is file content, not a shell word).
pub fn expand_heredoc(body: &str, escape: char, lookup: Lookup<'_>) -> Result<String, String> {
    run(body, escape, lookup, true)
}

/// Expands `word` and splits the result into words where an unquoted
/// variable's value has blanks (BuildKit's `ProcessWords`, used by EXPOSE):
/// `ARG P="80 443"` then `EXPOSE $P` exposes two ports, `"$P"` is one word.
pub fn expand_words(word: &str, escape: char, lookup: Lookup<'_>) -> Result<Vec<String>, String> {
    let mut lx = Lexer::new(word, escape, lookup, false);
    lx.split = true;
    let out = lx.finish(word)?;
    Ok(out
        .split(SPLIT)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect())
}

/// Marks a blank from an unquoted expansion in [`expand_words`].
const SPLIT: char = '\u{0}';

fn run(
    word: &str,
    escape: char,
    lookup: Lookup<'_>,
    literal_quotes: bool,
) -> Result<String, String> {
    Lexer::new(word, escape, lookup, literal_quotes).finish(word)
}

impl<'a> Lexer<'a> {
    fn new(
        word: &str,
        escape: char,
        lookup: Lookup<'a>,
        literal_quotes: bool,
    ) -> Self {
        Lexer {
            chars: word.chars().collect(),
            i: 0,
            escape,
            lookup,
            depth: 0,
            literal_quotes,
            split: false,
            raw_escapes: false,
        }
    }

    fn finish(mut self, word: &str) -> Result<String, String> {
        let out = self.process(&[])?;
        if self.i < self.chars.len() {
            return Err(format!("unexpected '{}' in '{}'", self.chars[self.i], word));
        }
        Ok(out)
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    i: usize,
    escape: char,
    lookup: Lookup<'a>,
    depth: usize,
    literal_quotes: bool,
    /// Mark blanks of unquoted expansions for word splitting.
    split: bool,
    /// Keep escapes as glob escapes (`\*` is a literal star in a pattern).
    raw_escapes: bool,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.i += usize::from(c.is_some());
        c
    }

    fn push(out: &mut String, s: &str) -> Result<(), String> {
        if out.len() + s.len() > MAX_EXPANDED {
            return Err(format!(
                "expanded value is larger than {MAX_EXPANDED} bytes"
            ));
        }
        out.push_str(s);
        Ok(())
    }

    /// Processes until one of `stop` (not consumed) or the end.
    fn process(&mut self, stop: &[char]) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            match c {
                '\'' | '"' if self.literal_quotes => {
                    self.next();
                    out.push(c);
                }
                c if c == self.escape && self.literal_quotes => {
                    self.next();
                    match self.peek() {
                        // BuildKit: an escaped newline in an expanded heredoc
                        // is written as the newline alone.
                        Some(n) if n == '$' || n == self.escape || n == '\n' => {
                            self.next();
                            out.push(n);
                        }
                        _ => out.push(c),
                    }
                }
                '\'' => {
                    self.next();
                    let mut lit = String::new();
                    loop {
                        match self.next() {
                            None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                            Some('\'') => break,
                            Some(ch) if self.raw_escapes && matches!(ch, '*' | '?' | '[' | '\\') => {
                                lit.push('\\');
                                lit.push(ch);
                            }
                            Some(ch) => lit.push(ch),
                        }
                    }
                    Self::push(&mut out, &lit)?;
                }
                '"' => {
                    self.next();
                    let s = self.double_quoted()?;
                    Self::push(&mut out, &s)?;
                }
                '$' => {
                    let mut s = self.dollar()?;
                    if self.split && self.depth == 0 {
                        s = s.replace(char::is_whitespace, &SPLIT.to_string());
                    }
                    Self::push(&mut out, &s)?;
                }
                c if c == self.escape => {
                    self.next();
                    if let Some(n) = self.next() {
                        if self.raw_escapes {
                            out.push('\\');
                        }
                        Self::push(&mut out, n.encode_utf8(&mut [0; 4]))?;
                    }
                }
                c => {
                    self.next();
                    Self::push(&mut out, c.encode_utf8(&mut [0; 4]))?;
                }
            }
        }
        Ok(out)
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.dollar()?;
                    Self::push(&mut out, &s)?;
                }
                Some(c) if c == self.escape => {
                    self.next();
                    match self.peek() {
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            self.next();
                            out.push(n);
                        }
                        _ => out.push(c),
                    }
                }
                Some(c) => {
                    self.next();
                    Self::push(&mut out, c.encode_utf8(&mut [0; 4]))?;
                }
            }
        }
    }

    /// A variable name as BuildKit reads one: a positional parameter (all
    /// its digits: `$1`, `${10}`), a special parameter (one of `@*#?-$!`),
    /// or letters, digits and `_`. Positional and special parameters are
    /// never set in a build, so they expand to nothing.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            Some(c) if is_special_param(c) => {
                self.next();
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' {
                name.push(c);
                self.next();
            } else {
                break;
            }
        }
        name
    }

    /// A variable's value; positional and special parameters are unset.
    fn get(&self, name: &str) -> Option<String> {
        if name.starts_with(|c: char| c.is_ascii_digit() || is_special_param(c)) {
            return None;
        }
        (self.lookup)(name)
    }

    /// A shell pattern operand: escapes stay as glob escapes, so `\*` and
    /// `\/` match a literal `*` and `/`.
    fn pattern(&mut self, stop: &[char]) -> Result<String, String> {
        let raw = std::mem::replace(&mut self.raw_escapes, true);
        let r = self.process(stop);
        self.raw_escapes = raw;
        r
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next(); // '$'
        match self.peek() {
            Some('{') => {
                self.next();
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!(
                        "variable substitutions nested deeper than {MAX_DEPTH}"
                    ));
                }
                let r = self.braced();
                self.depth -= 1;
                r
            }
            Some(c) if c.is_alphanumeric() || c == '_' || is_special_param(c) => {
                let name = self.name();
                Ok(self.get(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    fn braced(&mut self) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err(match self.peek() {
                Some(c) => format!("bad substitution: '${{{c}' is not a variable name"),
                None => "missing '}' in '${'".into(),
            });
        }
        let value = self.get(&name);
        let op = self
            .next()
            .ok_or_else(|| format!("missing '}}' in '${{{name}'"))?;
        let result = match op {
            '}' => return Ok(value.unwrap_or_default()),
            ':' => {
                let op2 = self
                    .next()
                    .ok_or_else(|| format!("missing '}}' in '${{{name}:'"))?;
                let word = self.process(&['}'])?;
                let set = value.as_deref().is_some_and(|v| !v.is_empty());
                match op2 {
                    '-' => {
                        if set {
                            value.unwrap_or_default()
                        } else {
                            word
                        }
                    }
                    '+' => {
                        if set {
                            word
                        } else {
                            String::new()
                        }
                    }
                    '?' if set => value.unwrap_or_default(),
                    '?' => {
                        return Err(if word.is_empty() {
                            format!("{name}: is not allowed to be empty")
                        } else {
                            format!("{name}: {word}")
                        });
                    }
                    c => {
                        return Err(format!(
                            "unsupported modifier ':{c}' in '${{{name}:{c}...}}'; expected ':-', ':+' or ':?'"
                        ));
                    }
                }
            }
            '-' | '+' | '?' => {
                let word = self.process(&['}'])?;
                match (op, value) {
                    ('-', Some(v)) => v,
                    ('-', None) => word,
                    ('+', Some(_)) => word,
                    ('+', None) => String::new(),
                    ('?', Some(v)) => v,
                    _ => {
                        return Err(if word.is_empty() {
                            format!("{name}: is not allowed to be unset")
                        } else {
                            format!("{name}: {word}")
                        });
                    }
                }
            }
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.next();
                }
                let pat = self.pattern(&['}'])?;
                let v = value.unwrap_or_default();
                trim_pattern(&v, &pat, op == '#', longest)?
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pat = self.pattern(&['/', '}'])?;
                let repl = if self.peek() == Some('/') {
                    self.next();
                    self.process(&['}'])?
                } else {
                    String::new()
                };
                replace_pattern(&value.unwrap_or_default(), &pat, &repl, all)?
            }
            c => return Err(format!("unsupported modifier '{c}' in '${{{name}{c}...}}'")),
        };
        match self.next() {
            Some('}') => Ok(result),
            _ => Err(format!("missing '}}' in '${{{name}{op}...'")),
        }
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!')
}

fn trim_pattern(v: &str, pat: &str, prefix: bool, longest: bool) -> Result<String, String> {
    if v.len() > MAX_PATTERN_VALUE {
        return Err(format!(
            "value is longer than {MAX_PATTERN_VALUE} bytes; pattern removal refused"
        ));
    }
    let g = Glob::compile(pat, false)?;
    let mut chars: Vec<char> = v.chars().collect();
    let ends = if prefix {
        g.prefix_matches(&chars)
    } else {
        chars.reverse();
        g.reversed().prefix_matches(&chars)
    };
    let found = if longest {
        ends.iter().rposition(|b| *b)
    } else {
        ends.iter().position(|b| *b)
    };
    let Some(k) = found else {
        return Ok(v.to_string());
    };
    let all: Vec<char> = v.chars().collect();
    Ok(if prefix {
        all[k..].iter().collect()
    } else {
        all[..all.len() - k].iter().collect()
    })
}

fn replace_pattern(v: &str, pat: &str, repl: &str, all: bool) -> Result<String, String> {
    if v.len() > MAX_PATTERN_VALUE {
        return Err(format!(
            "value is longer than {MAX_PATTERN_VALUE} bytes; pattern replacement refused"
        ));
    }
    if pat.is_empty() {
        return Ok(v.to_string());
    }
    let g = Glob::compile(pat, false)?;
    let chars: Vec<char> = v.chars().collect();
    let mut out = String::new();
    let mut s = 0;
    let mut replaced = false;
    while s < chars.len() {
        // Leftmost, then longest, non-empty match.
        let longest = if replaced && !all {
            None
        } else {
            g.prefix_matches(&chars[s..])
                .iter()
                .rposition(|b| *b)
                .filter(|k| *k > 0)
        };
        match longest {
            Some(k) => {
                out.push_str(repl);
                s += k;
                replaced = true;
            }
            None => {
                out.push(chars[s]);
                s += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "a" => Some("hello.tar.gz".into()),
            "e" => Some(String::new()),
            _ => None,
        }
    }

    fn x(w: &str) -> String {
        expand(w, '\\', &env).unwrap()
    }

    #[test]
    fn every_form() {
        assert_eq!(x("$a"), "hello.tar.gz");
        assert_eq!(x("${a}x"), "hello.tar.gzx");
        assert_eq!(x("${u:-def}"), "def");
        assert_eq!(x("${e:-def}"), "def");
        assert_eq!(x("${e-def}"), "");
        assert_eq!(x("${u-def}"), "def");
        assert_eq!(x("${a:+yes}"), "yes");
        assert_eq!(x("${e:+yes}"), "");
        assert_eq!(x("${e+yes}"), "yes");
        assert_eq!(x("${u+yes}"), "");
        assert_eq!(x("${a#*.}"), "tar.gz");
        assert_eq!(x("${a##*.}"), "gz");
        assert_eq!(x("${a%.*}"), "hello.tar");
        assert_eq!(x("${a%%.*}"), "hello");
        assert_eq!(x("${a/l/L}"), "heLlo.tar.gz");
        assert_eq!(x("${a//l/L}"), "heLLo.tar.gz");
        assert_eq!(x("${u:-${a%%.*}}"), "hello");
        assert_eq!(x("${a/?a/_}"), "hello._r.gz");
        assert_eq!(x("${a//[.]/-}"), "hello-tar-gz");
        assert_eq!(x("${a#nomatch}"), "hello.tar.gz");
        assert_eq!(x("${a%%*}"), "");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$a'"), "$a");
        assert_eq!(x("\"$a b\""), "hello.tar.gz b");
        assert_eq!(x("\\$a"), "$a");
        assert_eq!(x("\"\\$a\\n\""), "$a\\n");
        assert_eq!(x("$"), "$");
    }

    #[test]
    fn required_variable_error_carries_the_message() {
        assert_eq!(
            expand("${u:?must be set}", '\\', &env).unwrap_err(),
            "u: must be set"
        );
        assert_eq!(
            expand("${e:?}", '\\', &env).unwrap_err(),
            "e: is not allowed to be empty"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let w = "${a:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(
            expand(&w, '\\', &env)
                .unwrap_err()
                .contains("nested deeper")
        );
    }
}
