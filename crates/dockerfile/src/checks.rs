//! Build checks: BuildKit's warnings about a Dockerfile that builds but
//! probably does not mean what it says (a host-port mapping in EXPOSE, the
//! legacy `ENV key value` form, ...). Each check has BuildKit's rule name
//! and wording, so that a user can look the rule up in Docker's reference
//! (<https://docs.docker.com/reference/build-checks/>). They stop a build
//! only with `# check=error=true` (see `check_config`); `rbk build` and
//! `rbk submit` print them after the build, `rbk graph --check` without
//! building.

use std::fmt;

use crate::instruction::*;

/// One warning: the BuildKit rule, the line it is about, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// BuildKit's rule name, e.g. `ExposeInvalidFormat`.
    pub rule: &'static str,
    /// 1-based line of the instruction.
    pub line: usize,
    /// One line, in BuildKit's wording.
    pub message: String,
}

impl Check {
    pub(crate) fn new(rule: &'static str, line: usize, message: impl Into<String>) -> Self {
        Check {
            rule,
            line,
            message: message.into(),
        }
    }

    /// The rule's page in Docker's reference.
    pub fn url(&self) -> String {
        let mut slug = String::new();
        for (i, c) in self.rule.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

/// `RuleName: message (line N)`, as `docker build` lists its warnings.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (line {})", self.rule, self.message, self.line)
    }
}

/// Words in a variable name that BuildKit takes for a secret.
const SECRET_WORDS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

fn looks_secret(name: &str) -> bool {
    name.split('_')
        .any(|w| SECRET_WORDS.iter().any(|s| w.eq_ignore_ascii_case(s)))
}

/// BuildKit's `suggest.Search` for checks: the first option at the
/// smallest edit distance under 3, case-sensitive; none when the word is
/// itself an option.
pub(crate) fn suggest<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > 64 {
        return None;
    }
    let mut best: Option<(&str, usize)> = None;
    for o in options {
        if o == word {
            return None;
        }
        let d = crate::error::levenshtein(word, o);
        if d < best.map_or(3, |(_, bd)| bd) {
            best = Some((o, d));
        }
    }
    best.map(|(o, _)| o)
}

/// `UndefinedVar`: an instruction Docker expands used a variable that no
/// ENV, ARG of the stage or base image defines.
pub(crate) fn undefined_var(line: usize, name: &str, suggestion: Option<&str>) -> Check {
    let mut m = format!("Usage of undefined variable '${name}'");
    if let Some(s) = suggestion {
        m.push_str(&format!(" (did you mean ${s}?)"));
    }
    Check::new("UndefinedVar", line, m)
}

/// `UndefinedArgInFrom`: FROM used a variable that no global ARG declares.
pub(crate) fn undefined_arg_in_from(line: usize, name: &str, suggestion: Option<&str>) -> Check {
    let mut m = format!("FROM argument '{name}' is not declared");
    if let Some(s) = suggestion {
        m.push_str(&format!(" (did you mean {s}?)"));
    }
    Check::new("UndefinedArgInFrom", line, m)
}

/// `ConsistentInstructionCasing`: each keyword of the stages (FROM and what
/// follows; not the global ARGs, as in BuildKit) should be all upper or all
/// lower case, as the majority is (upper on a tie).
fn casing(df: &Dockerfile) -> Vec<Check> {
    let Some(first_from) = df
        .instructions
        .iter()
        .position(|l| matches!(l.inst, Instruction::From(_)))
    else {
        return Vec::new();
    };
    let stages = &df.instructions[first_from..];
    let (mut lower, mut upper) = (0usize, 0usize);
    for l in stages {
        if l.keyword == l.keyword.to_ascii_lowercase() {
            lower += 1;
        } else if l.keyword == l.keyword.to_ascii_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    let mut out = Vec::new();
    for l in stages {
        let want = if majority_lower && l.keyword != l.keyword.to_ascii_lowercase() {
            "lowercase"
        } else if !majority_lower && l.keyword != l.keyword.to_ascii_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(Check::new(
            "ConsistentInstructionCasing",
            l.pos.line,
            format!("Command '{}' should match the case of the command majority ({want})", l.keyword),
        ));
    }
    out
}

/// The checks that need only the syntax tree (the graph adds those that
/// need expanded values, like EXPOSE's).
pub(crate) fn syntax(df: &Dockerfile) -> Vec<Check> {
    let mut out = casing(df);
    // Per stage: lines of CMD, ENTRYPOINT and HEALTHCHECK.
    let mut seen: Vec<(&'static str, usize)> = Vec::new();
    // BuildKit does not recommend JSON form in a stage that set its SHELL.
    let mut shell_set = false;
    let flush = |seen: &mut Vec<(&'static str, usize)>, out: &mut Vec<Check>| {
        for kw in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let lines: Vec<usize> = seen
                .iter()
                .filter(|(k, _)| *k == kw)
                .map(|(_, l)| *l)
                .collect();
            if lines.len() > 1 {
                for l in &lines[..lines.len() - 1] {
                    out.push(Check::new(
                        "MultipleInstructionsDisallowed",
                        *l,
                        format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
                    ));
                }
            }
        }
        seen.clear();
    };
    for l in &df.instructions {
        let line = l.pos.line;
        match &l.inst {
            Instruction::From(f) => {
                flush(&mut seen, &mut out);
                shell_set = false;
                if f.alias.as_deref() == Some("scratch") {
                    out.push(Check::new(
                        "ReservedStageName",
                        line,
                        "Stage name should not use the same name as reserved stage \"scratch\"",
                    ));
                }
                if let Some(p) = &f.platform
                    && matches!(p.as_str(), "$TARGETPLATFORM" | "${TARGETPLATFORM}")
                {
                    out.push(Check::new(
                        "RedundantTargetPlatform",
                        line,
                        format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                    ));
                }
            }
            Instruction::Env(nv) | Instruction::Label(nv) => {
                let kw = l.inst.keyword();
                if nv.legacy {
                    out.push(Check::new(
                        "LegacyKeyValueFormat",
                        line,
                        format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                    ));
                }
                if kw == "ENV" {
                    for (k, _) in &nv.pairs {
                        if looks_secret(k) {
                            out.push(Check::new(
                                "SecretsUsedInArgOrEnv",
                                line,
                                format!("Do not use ARG or ENV instructions for sensitive data (ENV \"{k}\")"),
                            ));
                        }
                    }
                }
            }
            Instruction::Arg(decls) => {
                for d in decls {
                    if looks_secret(&d.name) {
                        out.push(Check::new(
                            "SecretsUsedInArgOrEnv",
                            line,
                            format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{}\")", d.name),
                        ));
                    }
                }
            }
            Instruction::Maintainer(_) => out.push(Check::new(
                "MaintainerDeprecated",
                line,
                "Maintainer instruction is deprecated in favor of using label",
            )),
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let kw = l.inst.keyword();
                seen.push((kw, line));
                if let CmdForm::Shell(_) = c
                    && !shell_set
                {
                    out.push(Check::new(
                        "JSONArgsRecommended",
                        line,
                        format!("JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"),
                    ));
                }
            }
            Instruction::Healthcheck(_) => seen.push(("HEALTHCHECK", line)),
            Instruction::Shell(_) => shell_set = true,
            _ => {}
        }
    }
    flush(&mut seen, &mut out);
    out
}
