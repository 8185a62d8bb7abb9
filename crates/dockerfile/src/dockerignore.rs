//! `.dockerignore` with Docker's semantics: Go-style patterns per path
//! segment, `**` across segments, `!` exceptions, the last matching line wins,
//! leading `/` and `./` cleaned, and a pattern that matches a directory
//! excludes everything below it.

use std::path::Path;

use crate::context::clean_relative;
use crate::error::{Error, Pos};
use crate::pattern::PathPattern;

/// A parsed ignore file (also used for `COPY --exclude`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: PathPattern,
    /// `!pattern`: re-include.
    exception: bool,
}

impl Dockerignore {
    /// Parses ignore-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Dockerignore, Error> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (exception, p) = match t.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, t),
            };
            let err = |m: String| Error {
                file: file.to_string(),
                pos: Pos::new(i + 1, 1),
                instruction: None,
                message: m,
            };
            // A pattern that climbs above the root can never match anything.
            let Some(cleaned) = clean_relative(p) else {
                continue;
            };
            let pattern = PathPattern::compile(&cleaned, true).map_err(err)?;
            rules.push(Rule { pattern, exception });
        }
        Ok(Dockerignore { rules })
    }

    /// Patterns from `--exclude` flags (no `!` exceptions there).
    pub(crate) fn from_patterns(patterns: &[String]) -> Result<Dockerignore, String> {
        let mut rules = Vec::new();
        for p in patterns {
            let Some(cleaned) = clean_relative(p) else {
                continue;
            };
            rules.push(Rule {
                pattern: PathPattern::compile(&cleaned, true)?,
                exception: false,
            });
        }
        Ok(Dockerignore { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any `!` rule exists: only then can something inside an
    /// excluded directory come back, and only then must it be walked.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Is this context-relative path excluded? The last rule that matches the
    /// path or one of its parents decides.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for r in &self.rules {
            if r.pattern.matches_or_parent(path) {
                excluded = !r.exception;
            }
        }
        excluded
    }

    /// Finds the ignore file Docker would use for this Dockerfile: a
    /// `<Dockerfile>.dockerignore` next to the Dockerfile wins over the
    /// context's `.dockerignore`. Returns the parsed file, if any.
    pub fn load(dockerfile: &Path, context_dir: &Path) -> Result<Option<Dockerignore>, Error> {
        let mut specific = dockerfile.as_os_str().to_owned();
        specific.push(".dockerignore");
        for candidate in [
            Path::new(&specific).to_path_buf(),
            context_dir.join(".dockerignore"),
        ] {
            match std::fs::read(&candidate) {
                Ok(bytes) => {
                    let name = candidate.display().to_string();
                    let text = String::from_utf8(bytes).map_err(|_| Error {
                        file: name.clone(),
                        pos: Pos::new(1, 1),
                        instruction: None,
                        message: "not valid UTF-8 text".into(),
                    })?;
                    return Dockerignore::parse(&text, &name).map(Some);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error {
                        file: candidate.display().to_string(),
                        pos: Pos::new(1, 1),
                        instruction: None,
                        message: format!("cannot read: {e}"),
                    });
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn di(t: &str) -> Dockerignore {
        Dockerignore::parse(t, ".dockerignore").unwrap()
    }

    #[test]
    fn later_lines_win_and_exceptions_reinclude() {
        let d = di("*.md\n!README.md\n");
        assert!(d.excludes("CHANGES.md"));
        assert!(!d.excludes("README.md"));
        let d = di("!README.md\n*.md\n");
        assert!(d.excludes("README.md"));
    }

    /// The file `text` excludes each path of `excluded` and none of `kept`.
    fn decides(text: &str, excluded: &[&str], kept: &[&str]) {
        let d = di(text);
        for path in excluded {
            assert!(d.excludes(path), "{text:?} should exclude {path}");
        }
        for path in kept {
            assert!(!d.excludes(path), "{text:?} should keep {path}");
        }
    }

    #[test]
    fn directory_patterns_exclude_their_contents() {
        decides("node_modules\n/target/\n./.git\n", &["node_modules/a/b.js", "target/debug/x", ".git/HEAD"], &["src/node_modules_x"]);
    }

    #[test]
    fn double_star_matches_at_any_depth() {
        decides("**/*.pyc\n**/__pycache__\n", &["a.pyc", "pkg/sub/m.pyc", "pkg/__pycache__/m.cpython.pyc"], &["pkg/m.py"]);
    }

    #[test]
    fn star_does_not_cross_directories() {
        decides("*.txt\n", &["a.txt"], &["dir/a.txt"]);
    }

    #[test]
    fn bad_pattern_names_file_and_line() {
        let e = Dockerignore::parse("ok\n[abc\n", "ctx/.dockerignore").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ctx/.dockerignore:2:1: pattern '[abc' has an unterminated character class '['"
        );
    }
}
