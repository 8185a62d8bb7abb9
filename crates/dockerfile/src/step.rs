//! What a worker executes: one step of the build graph, with every variable
//! expanded and every Dockerfile-ism resolved (no ARG, no stage names, no
//! `.dockerignore`). A worker needs nothing else to run it.

use crate::error::Pos;
use crate::key::Key;

/// Index of a step in [`crate::Graph::steps`].
pub type StepId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: StepId,
    /// The stage (index) this step belongs to.
    pub stage: usize,
    pub pos: Pos,
    /// The instruction in canonical form, for display.
    pub instruction: String,
    /// The step whose filesystem this step starts from.
    pub parent: Option<StepId>,
    pub kind: StepKind,
    pub key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// `FROM image`: the base image's filesystem.
    Image {
        reference: String,
        platform: Option<String>,
        /// The manifest digest from the caller's resolver; `None` when no
        /// resolver knew the image (the key then uses the reference).
        digest: Option<String>,
    },
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// `FROM <earlier stage>`: that stage's result (the parent step).
    Stage {
        stage: usize,
    },
    /// WORKDIR: create the directory (owned by `user` if set).
    Mkdir {
        path: String,
        user: Option<String>,
    },
    Run(RunStep),
    Copy(CopyStep),
}

/// A command to execute in the step's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The full argv (the shell already applied for shell form).
    pub argv: Vec<String>,
    /// Variables set by ENV and ARG for this command (ENV wins), sorted. The
    /// worker puts these over the base image's configured environment.
    pub env: Vec<(String, String)>,
    /// Proxy variables from build args (`HTTP_PROXY` ...) that the stage did
    /// not declare: set for the command, but not part of the key (Docker's
    /// rule: proxies do not invalidate the cache).
    pub proxy_env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: String,
    pub mounts: Vec<Mount>,
    pub network: Network,
    /// `--security=insecure`.
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

/// Where a mount or copy takes its files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRef {
    /// The build context (after `.dockerignore`).
    Context,
    /// The result of a stage (its last step).
    Stage { stage: usize, step: StepId },
    /// An image by reference (with a digest when resolved).
    Image {
        reference: String,
        digest: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind {
        target: String,
        from: FromRef,
        /// Path inside `from` (context-relative for the context).
        source: String,
        /// Bind mounts are read-only unless `rw`; writes are discarded.
        readonly: bool,
        /// For the context: the context paths under `source` (after
        /// `.dockerignore`), sorted, as a COPY lists them; only these enter
        /// the step's key and reach the worker. Empty for other sources.
        paths: Vec<String>,
    },
    Cache {
        target: String,
        /// The cache id, already scoped to the caller's namespace
        /// (`namespace/id`). Different namespaces never share a cache.
        id: String,
        sharing: Sharing,
        /// Seed the empty cache from here (`from=`/`source=`).
        from: Option<(FromRef, String)>,
        /// Without `from=`, `source=`: the subdirectory of the cache that
        /// is mounted (relative, clean; empty for the whole cache).
        subdir: String,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size: Option<String>,
    },
    Secret {
        id: String,
        /// File path for the secret (default `/run/secrets/<id>`), unless
        /// only `env` is given.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A small read-only file with given contents (heredoc scripts).
    File {
        target: String,
        content: String,
        mode: u32,
    },
}

impl StepKind {
    /// The context paths the step reads (COPY sources from the context,
    /// context bind mounts); `None` when it does not read the context.
    pub fn context_paths(&self) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        let mut reads = false;
        match self {
            StepKind::Copy(c) => {
                for s in &c.sources {
                    if let CopySource::Context { paths, .. } = s {
                        reads = true;
                        out.extend(paths.iter().map(String::as_str));
                    }
                }
            }
            StepKind::Run(r) => {
                for m in &r.mounts {
                    if let Mount::Bind { from: FromRef::Context, paths, .. } = m {
                        reads = true;
                        out.extend(paths.iter().map(String::as_str));
                    }
                }
            }
            _ => {}
        }
        reads.then_some(out)
    }
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    pub from: FromRef,
    pub sources: Vec<CopySource>,
    /// Absolute destination; ends with `/` when it names a directory.
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    /// `--exclude` patterns (already applied to context sources; the worker
    /// applies them to stage and image sources).
    pub exclude: Vec<String>,
    /// ADD: extract tar archives (Docker detects them by content). On by
    /// default for local sources, off for URLs unless `--unpack=true`.
    pub unpack: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// Context paths matched by `pattern`, after `.dockerignore` and
    /// `--exclude`, sorted. A directory match lists the directory and all
    /// that is under it and kept.
    Context {
        pattern: String,
        paths: Vec<String>,
        /// `--parents` with BuildKit's pivot (`COPY --parents x/./y/z`):
        /// the part of `pattern` above it (`x`); what is copied keeps only
        /// its path below it (`y/z`).
        pivot: Option<String>,
    },
    /// A path (or wildcard) inside a stage or image; with `--parents`, a
    /// pivot stays in it as `/./` (`/x/./y/z`).
    Path(String),
    /// A heredoc used as a file (`COPY <<EOF /dest`).
    Inline { name: String, content: String },
    /// ADD of a remote file; `checksum` (`--checksum`) pins its content.
    Url {
        url: String,
        checksum: Option<String>,
        /// Without a pin: the content's `sha256:<hex>` the caller's
        /// [`crate::BaseResolver::url`] found for this build (re-validated
        /// every build), which the key holds instead of the URL alone.
        /// `None` when nothing resolved it (keyed by the URL).
        resolved: Option<String>,
    },
    /// ADD of a git repository (`REPO#REF:SUBDIR`, see [`crate::GitRef`]).
    Git {
        url: String,
        keep_git_dir: bool,
        /// `--checksum`: the commit the ref must resolve to (a prefix of
        /// its id, as BuildKit takes it).
        checksum: Option<String>,
        /// The commit the ref resolved to for this build
        /// ([`crate::BaseResolver::git`]); `None` when nothing resolved it.
        commit: Option<String>,
    },
}
