//! The step description a worker executes: plain data (serde, JSON), with
//! nothing Dockerfile-specific. The coordinator maps build-graph nodes onto
//! it; `rbk run-step` reads it from a file.


use rbk_image::OciDigest;

pub use crate::chmod::Chmod;
use serde::{Deserialize, Serialize};

/// One unit of work: a RUN in a container, or a COPY/ADD done by the worker
/// itself, on top of a chain of base layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The layers the step starts from, bottom first (empty for scratch).
    #[serde(default)]
    pub base: Vec<LayerRef>,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// A layer of the base chain, by both its names: `digest` finds the blob
/// (OCI, compressed), `diff_id` names the unpacked content, so the same
/// content compressed twice is unpacked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRef {
    pub digest: OciDigest,
    pub diff_id: OciDigest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    Run(RunStep),
    Copy(CopyStep),
}

/// A command run in an OCI runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStep {
    pub command: Command,
    /// The shell a [`Command::Shell`] runs under (`SHELL`); default `/bin/sh -c`.
    #[serde(default = "default_shell")]
    pub shell: Vec<String>,
    /// The complete environment, `KEY=value` (image env plus step env);
    /// `PATH` gets Docker's default when absent.
    #[serde(default)]
    pub env: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved against the
    /// rootfs' `/etc/passwd` and `/etc/group`; default root.
    #[serde(default)]
    pub user: Option<String>,
    /// Absolute; created when missing; default `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub security: Security,
    /// What the container gets besides the command (`/etc/hosts` entries,
    /// `/dev/shm` size, rlimits). Absent from the bytes when all default,
    /// so the keys of ordinary steps do not change.
    #[serde(default, skip_serializing_if = "ContainerOptions::is_default")]
    pub container: ContainerOptions,
}

impl RunStep {
    /// `command` with every other field at the default a payload without
    /// it gets (serde's defaults above): `/bin/sh -c`, an empty environment,
    /// root, `/`, no mounts, the private network, no limits. Callers set
    /// what differs with struct update syntax (`..RunStep::new(c)`).
    pub fn new(command: Command) -> Self {
        RunStep {
            command,
            shell: default_shell(),
            env: vec![],
            user: None,
            workdir: None,
            mounts: vec![],
            network: Network::default(),
            limits: Limits::default(),
            security: Security::default(),
            container: ContainerOptions::default(),
        }
    }
}

/// Build-wide container options a client applies to every RUN step
/// (`docker buildx build --add-host`, `--shm-size`, `--ulimit`). The
/// worker checks them again: host names and addresses must be what an
/// `/etc/hosts` line can hold, and rlimits are capped by the worker's own
/// hard limits (a step may lower a limit, never raise it past the worker's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerOptions {
    /// Lines added to the step's `/etc/hosts` after the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// Size of `/dev/shm`; default 64 MiB (Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_bytes: Option<u64>,
    /// Resource limits the process starts with; one named `nofile`
    /// replaces the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
}

impl ContainerOptions {
    pub fn is_default(&self) -> bool {
        *self == ContainerOptions::default()
    }
}

/// An `/etc/hosts` entry: `address name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub address: std::net::IpAddr,
}

/// An rlimit by its `docker run --ulimit` name (`nofile`, `nproc`,
/// `core`, ...), soft and hard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Exec form: run exactly these arguments.
    Exec(Vec<String>),
    /// Shell form: one string handed to [`RunStep::shell`].
    Shell(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The worker's network namespace (`RUN --network=host`; an
    /// entitlement, `entitlements.rs`).
    Host,
    /// A new network namespace holding only loopback (`--network=none`).
    None,
    /// The default: a network namespace of the step's own with egress
    /// through pasta to what the worker can reach, but not the worker's
    /// loopback (`network.rs`).
    #[default]
    Private,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// The container is killed after this long and the step fails.
    pub wall_time_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Sandbox,
    /// `--security=insecure`: every capability, no masked paths, rw /sys.
    Insecure,
}

/// A `--mount` of a RUN step. Host-side material (cache dirs, secret
/// values, agent sockets, the context, other stages) is not in the step: the
/// caller supplies it in [`crate::StepInputs`] by id, so a step description
/// never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container (relative paths are taken from `/`).
    pub target: String,
    #[serde(flatten)]
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// A persistent directory, supplied by the caller under `id`.
    Cache {
        id: String,
        /// The subdirectory of the cache to mount (`source=`), relative;
        /// empty for the whole cache. Opened without following symlinks
        /// and created when missing.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        subdir: String,
        #[serde(default)]
        readonly: bool,
        /// Applied to the directory's root when it is first used (empty).
        #[serde(default = "default_cache_mode")]
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
        /// `from=`/`source=`: what a new (empty) cache starts with, as
        /// BuildKit seeds it; a used cache keeps its own content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<CacheSeed>,
    },
    /// A directory or file of the context or of another stage's rootfs.
    Bind {
        from: Source,
        /// Path inside the source; default its root.
        #[serde(default)]
        source: String,
        /// Writes are allowed but discarded after the step.
        #[serde(default)]
        rw: bool,
    },
    Tmpfs {
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// A file from the client; default target `/run/secrets/<id>` when
    /// `target` is empty, unless `env` is set (then only the variable).
    Secret {
        id: String,
        /// `env=NAME`: the value is also the variable `NAME` of the
        /// command (never of the image); the file is mounted only when
        /// `target` is set too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        #[serde(default)]
        required: bool,
        #[serde(default = "default_secret_mode")]
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
    /// An SSH agent socket supplied by the caller under `id` (default
    /// `default`); `SSH_AUTH_SOCK` points at it. `mode`, `uid`, `gid` are
    /// what a caller that creates the socket gives it (BuildKit's 0600,
    /// root), so a step running as another user can be let in.
    Ssh {
        #[serde(default = "default_ssh_id")]
        id: String,
        #[serde(default)]
        required: bool,
        #[serde(default = "default_ssh_mode")]
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
    /// A read-only file with the given content (a `RUN <<EOF` heredoc
    /// starting with `#!`, run as a program from `/dev/pipes/`).
    File {
        content: String,
        #[serde(default = "default_file_mode")]
        mode: u32,
    },
}

/// Where a new cache mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSeed {
    pub from: Source,
    /// Directory inside `from` (default its root).
    #[serde(default)]
    pub path: String,
}

fn default_file_mode() -> u32 {
    0o755
}
fn default_cache_mode() -> u32 {
    0o755
}
fn default_secret_mode() -> u32 {
    0o400
}
fn default_ssh_id() -> String {
    "default".into()
}
fn default_ssh_mode() -> u32 {
    0o600
}

/// Where files come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The build context (a restored context snapshot directory).
    Context,
    /// The rootfs of another stage, by the name the caller gives it.
    Stage(String),
}

/// COPY, or ADD when `add` is set (unpack local archives, allow URLs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyStep {
    pub sources: Vec<CopySource>,
    /// Ending in `/` (or several sources) means "into this directory".
    pub dest: String,
    /// Relative `dest` is taken from here (`WORKDIR`); default `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user[:group]`, names resolved in the destination rootfs.
    #[serde(default)]
    pub chown: Option<String>,
    /// `--chmod`: octal bits for every copied file and directory, or a
    /// symbolic change of each one's own mode ([`crate::chmod`]).
    #[serde(default)]
    pub chmod: Option<Chmod>,
    /// `--parents`: each source lands under `dest` at its path relative
    /// to its source's root (`a/b/c.txt` → `dest/a/b/c.txt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// `--link`: the files land in an empty layer, independent of the base
    /// (destination paths do not follow the base's symlinks).
    #[serde(default)]
    pub link: bool,
    /// Patterns (relative to each source) that are not copied.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// ADD semantics: local tar archives (plain, gzip, xz, bzip2) are
    /// unpacked into `dest`.
    #[serde(default)]
    pub add: bool,
    /// `ADD --unpack=true <url>`: a downloaded tar archive is unpacked
    /// into `dest` too (BuildKit's `AttemptUnpack` for HTTP sources).
    /// Absent from the bytes when false, so other steps' keys stay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpack_urls: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySource {
    /// A path (globs `*`, `?`, `[...]` allowed) inside a source tree.
    Path { from: Source, path: String },
    /// A heredoc (`COPY <<EOF /dest`): a file named `name` holding
    /// `content` (mode 0644 unless `--chmod`, owned by root unless
    /// `--chown`).
    Inline { name: String, content: String },
    /// ADD of a URL; `checksum` is `sha256:<hex>` and is verified.
    Url {
        url: String,
        #[serde(default)]
        checksum: Option<String>,
    },
    /// ADD of a git repository at `commit` (reached through `reference`,
    /// empty for the remote's HEAD); `subdir` (relative, may be empty) is
    /// what is copied; `.git` is kept only with `keep_git_dir`.
    Git {
        repo: String,
        #[serde(default)]
        reference: String,
        commit: String,
        #[serde(default)]
        subdir: String,
        #[serde(default)]
        keep_git_dir: bool,
    },
}

