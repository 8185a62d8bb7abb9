//! Build checks: BuildKit's warnings about a Dockerfile that builds but
//! probably does not mean what it says (a host-port mapping in EXPOSE, the
//! legacy `ENV key value` form, ...). Each check has BuildKit's rule name
//! and wording, so that a user can look the rule up in Docker's reference
//! (<https://docs.docker.com/reference/build-checks/>). They never stop a
//! build; `rbk graph --check` prints them without building.

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

/// The checks that need only the syntax tree (the graph adds those that
/// need expanded values, like EXPOSE's).
pub(crate) fn syntax(df: &Dockerfile) -> Vec<Check> {
    let mut out = Vec::new();
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
