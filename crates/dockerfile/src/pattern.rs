//! Glob patterns: one matcher for the three places Dockerfiles use them —
//! shell patterns in `${v#p}`-style expansion, COPY source wildcards (Go's
//! `filepath.Match`, per path segment) and `.dockerignore` / `--exclude`
//! (the same, plus `**` spanning segments).

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob over a single string (no path separators meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Vec<Tok>);

impl Glob {
    /// Compiles `*`, `?`, `[a-z]`, `[!a]`/`[^a]` and `\` escapes. A malformed
    /// class is an error for path patterns (`strict`), a literal `[` for shell
    /// patterns (as in sh).
    pub fn compile(p: &str, strict: bool) -> Result<Glob, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::Any),
                '\\' if i + 1 < chars.len() => {
                    i += 1;
                    toks.push(Tok::Lit(chars[i]));
                }
                '\\' if strict => {
                    return Err(format!("pattern '{p}' ends with an escape character"));
                }
                '[' => match class(&chars, i + 1) {
                    Some((tok, next)) => {
                        toks.push(tok);
                        i = next;
                        continue;
                    }
                    None if strict => {
                        return Err(format!(
                            "pattern '{p}' has an unterminated character class '['"
                        ));
                    }
                    None => toks.push(Tok::Lit('[')),
                },
                _ => toks.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Glob(toks))
    }

    pub fn has_magic(p: &str) -> bool {
        p.contains(['*', '?', '['])
    }

    /// For every prefix of `text`: does the pattern match it exactly?
    /// One pass of an NFA simulation, O(len(text) × len(pattern)), so the
    /// shell's `${v#p}`, `${v%p}` and `${v/p/r}` stay polynomial.
    pub fn prefix_matches(&self, text: &[char]) -> Vec<bool> {
        let m = self.0.len();
        let close = |set: &mut Vec<bool>| {
            for st in 0..m {
                if set[st] && self.0[st] == Tok::Star {
                    set[st + 1] = true;
                }
            }
        };
        let mut cur = vec![false; m + 1];
        cur[0] = true;
        close(&mut cur);
        let mut out = Vec::with_capacity(text.len() + 1);
        out.push(cur[m]);
        let mut next = vec![false; m + 1];
        for &c in text {
            next.iter_mut().for_each(|b| *b = false);
            for st in 0..m {
                if cur[st] {
                    match &self.0[st] {
                        Tok::Star => next[st] = true,
                        t if one(t, c) => next[st + 1] = true,
                        _ => {}
                    }
                }
            }
            close(&mut next);
            out.push(next[m]);
            if !next.iter().any(|b| *b) {
                out.resize(text.len() + 1, false);
                break;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        out
    }

    /// The pattern read backwards (for suffix matching).
    pub fn reversed(&self) -> Glob {
        Glob(self.0.iter().rev().cloned().collect())
    }

    /// Whole-string match. Linear-time backtracking on the last `*`.
    pub fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let p = &self.0;
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() {
                match &p[pi] {
                    Tok::Star => {
                        star = Some((pi, ti));
                        pi += 1;
                        continue;
                    }
                    tok if one(tok, t[ti]) => {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Star)
    }
}

fn one(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

fn class(chars: &[char], mut i: usize) -> Option<(Tok, usize)> {
    let mut negated = false;
    if i < chars.len() && (chars[i] == '!' || chars[i] == '^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < chars.len() {
        let mut c = chars[i];
        if c == ']' && !first {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        if c == '\\' && i + 1 < chars.len() {
            i += 1;
            c = chars[i];
        }
        if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
            let mut hi = chars[i + 2];
            i += 2;
            if hi == '\\' && i + 1 < chars.len() {
                i += 1;
                hi = chars[i];
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
        i += 1;
    }
    None
}

/// A path pattern: segments separated by `/`, each a [`Glob`], with `**` (a
/// whole segment) matching any number of segments. Used for `.dockerignore`,
/// `--exclude` and COPY sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    AnyDepth,
    One(Glob),
}

impl PathPattern {
    pub fn compile(p: &str, allow_double_star: bool) -> Result<PathPattern, String> {
        let mut segs = Vec::new();
        for s in p.split('/').filter(|s| !s.is_empty()) {
            if s == "**" && allow_double_star {
                if segs.last() != Some(&Seg::AnyDepth) {
                    segs.push(Seg::AnyDepth);
                }
            } else {
                segs.push(Seg::One(Glob::compile(s, true)?));
            }
        }
        Ok(PathPattern { segs })
    }

    /// Does the pattern match exactly this `/`-separated relative path?
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // reach[j]: pattern prefix matches the first j path parts.
        let mut reach = vec![false; parts.len() + 1];
        reach[0] = true;
        for seg in &self.segs {
            let mut next = vec![false; parts.len() + 1];
            match seg {
                Seg::AnyDepth => {
                    let mut any = false;
                    for j in 0..=parts.len() {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                Seg::One(g) => {
                    for j in 0..parts.len() {
                        if reach[j] && g.matches(parts[j]) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        reach[parts.len()]
    }

    /// Does the pattern match this path or one of its parent directories?
    /// (Docker excludes everything below an excluded directory.)
    pub fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if self.matches(parent) {
                return true;
            }
            p = parent;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_question_and_classes() {
        let g = Glob::compile("a*b?[cd]", false).unwrap();
        assert!(g.matches("axxbzc"));
        assert!(g.matches("abzd"));
        assert!(!g.matches("abze"));
        assert!(Glob::compile("[!a]", true).unwrap().matches("b"));
        assert!(Glob::compile("[", false).unwrap().matches("["));
    }

    #[test]
    fn double_star_spans_directories() {
        let p = PathPattern::compile("**/*.go", true).unwrap();
        assert!(p.matches("main.go"));
        assert!(p.matches("a/b/c.go"));
        assert!(!p.matches("a/b/c.rs"));
        let p = PathPattern::compile("src/**", true).unwrap();
        assert!(p.matches("src/a/b"));
        assert!(
            PathPattern::compile("foo", true)
                .unwrap()
                .matches_or_parent("foo/bar/baz")
        );
    }
}
