//! The typed syntax tree: every Dockerfile instruction with its flags, as
//! written (variables not yet expanded — expansion needs the build's args,
//! which the graph builder has and the parser does not).

use std::collections::BTreeMap;

use crate::directives::Directives;
use crate::error::Pos;
pub use crate::lexer::Heredoc;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    pub instructions: Vec<Located>,
}

/// An instruction and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub pos: Pos,
    pub inst: Instruction,
    /// The keyword as written (`from`, `Run`): the
    /// `ConsistentInstructionCasing` check compares them.
    pub keyword: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd(CmdForm),
    Entrypoint(CmdForm),
    Label(NameValues),
    Expose(Vec<String>),
    Env(NameValues),
    /// ADD and COPY share one shape; `Copy::add` tells them apart.
    Copy(Copy),
    Volume(ListForm),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    Onbuild(Box<Instruction>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
    Maintainer(String),
}

impl Instruction {
    /// The keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Copy(c) if c.add => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// All instruction keywords, for "did you mean" hints.
pub const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub platform: Option<String>,
    pub image: String,
    pub alias: Option<String>,
}

/// Shell form (a string for the shell) or exec form (an argv).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CmdForm {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub mounts: Vec<MountSpec>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub cmd: CmdForm,
    pub heredocs: Vec<Heredoc>,
}

/// The kinds of `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }

    /// Options this kind accepts (canonical names).
    pub fn options(self) -> &'static [&'static str] {
        match self {
            MountKind::Bind => &["target", "source", "from", "readonly"],
            MountKind::Cache => &[
                "target", "id", "source", "from", "sharing", "mode", "uid", "gid", "readonly",
            ],
            MountKind::Tmpfs => &["target", "size"],
            MountKind::Secret => &["target", "id", "required", "mode", "uid", "gid", "env"],
            MountKind::Ssh => &["target", "id", "required", "mode", "uid", "gid"],
        }
    }
}

/// A `--mount=` spec with option names made canonical (`dst` → `target`,
/// `ro` → `readonly=true`, `rw` → `readonly=false`). Values are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountKind,
    pub opts: BTreeMap<String, String>,
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    pub add: bool,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
    /// Sources as written; `<<NAME` refers to a heredoc.
    pub sources: Vec<String>,
    pub dest: String,
    /// Written in JSON form (`COPY ["a", "b"]`).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
}

/// `KEY=VALUE` pairs (ENV, LABEL), raw words with their quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameValues {
    pub pairs: Vec<(String, String)>,
    /// The legacy one-pair form `ENV KEY value with spaces`.
    pub legacy: bool,
}

/// A list written either in JSON form or as blank-separated words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListForm {
    pub items: Vec<String>,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// The default as written (unexpanded, quotes kept).
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Check {
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<String>,
        cmd: CmdForm,
    },
}
