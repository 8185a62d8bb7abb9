//! Parser directives: `# syntax=`, `# escape=`, `# check=` at the very top of
//! a Dockerfile. They change how the rest of the file is read (the escape
//! character), so they are parsed before anything else.

use crate::check_config::CheckConfig;
use crate::error::{Pos, RawError, RawResult};

/// The directives of one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=`: recorded, not acted upon (rbk has one frontend).
    pub syntax: Option<String>,
    /// `# escape=`: `\` (default) or `` ` `` (Windows-style Dockerfiles).
    pub escape: char,
    /// `# check=`: which build checks run and whether they fail the build
    /// (see [`CheckConfig`]); valid when set.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// Reads directives from the first lines of `lines`; returns them and the
/// number of lines they used. Directive parsing stops at the first line that
/// is not a known directive (an unknown directive is a comment, and a
/// comment ends the directive section, as in BuildKit).
pub(crate) fn parse(lines: &[&str]) -> RawResult<(Directives, usize)> {
    let mut d = Directives::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut used = 0;
    for (i, raw) in lines.iter().enumerate() {
        let Some((key, value)) = directive(raw) else {
            break;
        };
        let key_lc = key.to_ascii_lowercase();
        let known = match key_lc.as_str() {
            "syntax" => "syntax",
            "escape" => "escape",
            "check" => "check",
            _ => break,
        };
        let pos = Pos::new(i + 1, 1);
        if seen.contains(&known) {
            return Err(RawError::new(
                pos,
                None,
                format!("parser directive '{known}' given twice; each directive may appear once"),
            ));
        }
        seen.push(known);
        match known {
            "syntax" => d.syntax = Some(value.to_string()),
            "check" => {
                // Checked here so that a typo names its line.
                CheckConfig::parse(value).map_err(|m| {
                    RawError::new(pos, None, format!("failed to parse check options: {m}"))
                })?;
                d.check = Some(value.to_string())
            }
            _ => {
                d.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(RawError::new(
                            pos,
                            None,
                            format!("invalid escape directive '{other}'; expected '\\' or '`'"),
                        ));
                    }
                }
            }
        }
        used = i + 1;
    }
    Ok((d, used))
}

/// `# key=value` with optional blanks around each part.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    let value = value.trim();
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric()) || value.is_empty() {
        return None;
    }
    Some((key, value))
}

impl Directives {
    /// The `# check=` configuration (default when absent).
    pub fn check_config(&self) -> CheckConfig {
        self.check
            .as_deref()
            .and_then(|c| CheckConfig::parse(c).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_directive_that_does_not_parse_names_its_line() {
        let e = parse(&["# syntax=docker/dockerfile:1", "# check=skip=all;eror=true"]).unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("invalid check option \"eror\""), "{}", e.message);
    }

    #[test]
    fn directives_stop_at_the_first_non_directive_line() {
        let (d, n) = parse(&[
            "# syntax=docker/dockerfile:1",
            "# escape=`",
            "",
            "# check=skip=all",
        ])
        .unwrap();
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.escape, '`');
        assert_eq!(d.check, None);
        assert_eq!(n, 2);
    }

    #[test]
    fn unknown_directive_is_a_comment_and_ends_directives() {
        let (d, n) = parse(&["# foo=bar", "# escape=`"]).unwrap();
        assert_eq!(d.escape, '\\');
        assert_eq!(n, 0);
    }
}
