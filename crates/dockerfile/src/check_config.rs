//! Which build checks run and whether they fail the build: the
//! `# check=` parser directive, or the `BUILDKIT_DOCKERFILE_CHECK` build
//! arg, which replaces it (BuildKit's `linter.ParseLintOptions`):
//! `skip=all`, `skip=RuleA,RuleB`, `error=true`, joined by `;`
//! (`# check=skip=JSONArgsRecommended;error=true`).


/// The build arg that overrides the `# check=` directive, as in BuildKit.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// A parsed `check=` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`: no check runs.
    pub skip_all: bool,
    /// `skip=A,B`: these rules do not run.
    pub skip: Vec<String>,
    /// `error=true`: a warning fails the build before any step runs.
    pub error: bool,
}

impl CheckConfig {
    /// Parses a `check=` value; the error is a message in BuildKit's
    /// wording (the caller names the directive's line or the build arg).
    pub fn parse(value: &str) -> Result<CheckConfig, String> {
        let value = value.trim();
        let mut c = CheckConfig::default();
        if value.is_empty() {
            return Ok(c);
        }
        // BuildKit splits into at most three parts (skip, error,
        // experimental).
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option \"{part}\""));
            };
            let v = v.trim();
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = v.split(',').map(|r| r.trim().to_string()).collect(),
                // rbk has no experimental rules: accepted, nothing to enable.
                "experimental" => {}
                "error" => {
                    c.error = parse_bool(v).ok_or_else(|| {
                        format!("failed to parse check option \"{part}\": invalid syntax")
                    })?
                }
                other => return Err(format!("invalid check option \"{other}\"")),
            }
        }
        Ok(c)
    }

    /// Whether `rule` runs.
    pub fn runs(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.iter().any(|s| s == rule)
    }

    /// With `error=true` and warnings (the rules that fired, one per
    /// warning): BuildKit's error, naming each rule once (`lint violation
    /// found for rules: A, B`).
    pub fn violation<'a>(&self, fired: impl IntoIterator<Item = &'a str>) -> Option<String> {
        if !self.error {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for rule in fired {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        (!rules.is_empty()).then(|| format!("lint violation found for rules: {}", rules.join(", ")))
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_list_error_and_their_combination_parse_as_buildkit_reads_them() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error && !c.skip_all);
        assert!(!c.runs("StageNameCasing") && c.runs("UndefinedVar"));
        let all = CheckConfig::parse("skip=all").unwrap();
        assert!(!all.runs("UndefinedVar"));
    }

    #[test]
    fn unknown_options_and_bad_booleans_are_refused_in_buildkits_words() {
        assert_eq!(CheckConfig::parse("skp=all").unwrap_err(), "invalid check option \"skp\"");
        assert_eq!(CheckConfig::parse("error").unwrap_err(), "invalid check option \"error\"");
        assert!(CheckConfig::parse("error=maybe").unwrap_err().contains("error=maybe"));
    }

    #[test]
    fn a_violation_names_each_rule_once_and_only_with_error_true() {
        let fired = ["JSONArgsRecommended", "JSONArgsRecommended", "UndefinedVar"];
        let on = CheckConfig::parse("error=true").unwrap();
        assert_eq!(on.violation(fired).unwrap(), "lint violation found for rules: JSONArgsRecommended, UndefinedVar");
        assert_eq!(on.violation([]), None);
        assert_eq!(CheckConfig::default().violation(fired), None);
    }
}
