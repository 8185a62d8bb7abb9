//! A RUN step's `--mount`s: the host side (cache dirs, bind sources, the
//! tmpfs holding secrets, agent sockets) prepared before the container
//! starts, and the OCI mount entries that put them in the container.
//!
//! Secrets live on a tmpfs mounted in the step's scratch directory, outside
//! the rootfs and its upper dir, and reach the container through a read-only
//! bind mount: they can never land in the layer. Their values also scrub the
//! step's log ([`crate::logs::Redactor`]).

use std::collections::HashMap;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{Mount as OciMount, MountBuilder};

use crate::error::{IoContext, Result, WorkerError};
use crate::logs::Redactor;
use crate::rootfs::OverlayRootfs;
use crate::scope::{clean_abs, resolve_in_root};
use crate::step::{Mount, MountKind, Source};

/// A secret's bytes; `Debug` never shows them.
#[derive(Clone, Default)]
pub struct SecretValue(pub Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<{} bytes>)", self.0.len())
    }
}

/// `NAME=value` pairs of secrets given as variables; `Debug` shows the
/// names only.
#[derive(Clone, Default)]
pub struct SecretEnv(pub Vec<String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k)).collect();
        write!(f, "SecretEnv({names:?})")
    }
}

/// Host-side material a step refers to by name. The step description
/// itself holds no secrets and no host paths.
#[derive(Debug, Clone, Default)]
pub struct StepInputs {
    /// The build context (a restored context snapshot).
    pub context: Option<PathBuf>,
    /// Other stages' root filesystems, by the names steps use.
    pub stages: HashMap<String, PathBuf>,
    /// Cache mount directories by cache id (the caller restores and later
    /// captures them; the worker only mounts them).
    pub caches: HashMap<String, PathBuf>,
    pub secrets: HashMap<String, SecretValue>,
    /// SSH agent sockets by id.
    pub ssh: HashMap<String, PathBuf>,
    /// The entitlements the build's client asked for (`--allow`): a step
    /// needing one runs only when this lists it and the worker pool's
    /// policy allows it ([`crate::entitlements`]).
    pub allow: Vec<crate::entitlements::Entitlement>,
}

impl StepInputs {
    /// The root directory of `source`.
    pub fn source_root(&self, source: &Source) -> Result<&Path> {
        match source {
            Source::Context => self.context.as_deref().ok_or_else(|| WorkerError::step("from", "the step reads the build context but none was given")),
            Source::Stage(name) => self
                .stages
                .get(name)
                .map(PathBuf::as_path)
                .ok_or_else(|| WorkerError::step("from", format!("the step reads stage {name:?} but no rootfs was given for it"))),
        }
    }

    /// A redactor for every secret value in these inputs.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.values().map(|v| v.0.as_slice()))
    }
}

/// The prepared mounts of one step; host-side resources are released on
/// drop (after the container is gone).
#[derive(Debug, Default)]
pub struct PreparedMounts {
    pub oci: Vec<OciMount>,
    /// Extra environment (`SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// Secrets as variables (`env=`), `NAME=value`; `Debug` hides them.
    pub secret_env: SecretEnv,
    /// Targets in the container, for stub cleanup.
    pub targets: Vec<String>,
    secret_fs: Option<PathBuf>,
    overlays: Vec<OverlayRootfs>,
    /// Open cache subdirectories, bind-mounted through their descriptors:
    /// kept open until the container is gone.
    cache_subdirs: Vec<crate::cache_subdir::CacheSubdir>,
}

impl PreparedMounts {
    /// A directory on the secrets tmpfs for the runtime bundle, when the
    /// step's `config.json` will hold secret variables: they then never
    /// touch the worker's disk.
    pub fn secret_bundle_dir(&self) -> Option<PathBuf> {
        if self.secret_env.0.is_empty() {
            return None;
        }
        self.secret_fs.as_ref().map(|d| d.join("bundle"))
    }
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        self.overlays.clear();
        if let Some(p) = self.secret_fs.take() {
            if let Err(e) = nix::mount::umount2(&p, MntFlags::MNT_DETACH) {
                tracing::error!(path = %p.display(), error = %e, "unmounting the secrets tmpfs");
            }
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

fn bind(target: &str, source: &Path, readonly: bool) -> Result<OciMount> {
    let opts = vec!["rbind".to_owned(), if readonly { "ro" } else { "rw" }.to_owned()];
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(opts)
        .build()
        .map_err(|e| WorkerError::mount(target, e.to_string()))
}

/// Prepares `mounts` using `inputs`, with scratch space under `scratch`
/// (outside the rootfs).
pub fn prepare(mounts: &[Mount], inputs: &StepInputs, scratch: &Path) -> Result<PreparedMounts> {
    let mut out = PreparedMounts::default();
    let mut ssh_count = 0;
    for (i, m) in mounts.iter().enumerate() {
        let target = match (&m.kind, m.target.is_empty()) {
            (MountKind::Secret { env: Some(_), .. }, true) => String::new(),
            (MountKind::Secret { id, .. }, true) => format!("/run/secrets/{id}"),
            (MountKind::Ssh { .. }, true) => {
                ssh_count += 1;
                format!("/run/buildkit/ssh_agent.{}", ssh_count - 1)
            }
            (_, true) => return Err(WorkerError::step(format!("mounts[{i}].target"), "is empty")),
            (_, false) => clean_abs("/", &m.target),
        };
        match &m.kind {
            MountKind::Cache { id, subdir, readonly, mode, uid, gid, .. } => {
                let dir = inputs.caches.get(id).ok_or_else(|| WorkerError::mount(&target, format!("no host directory was given for cache id {id:?}")))?;
                std::fs::create_dir_all(dir).ctx(|| format!("creating cache dir {}", dir.display()))?;
                let empty = std::fs::read_dir(dir).ctx(|| format!("reading cache dir {}", dir.display()))?.next().is_none();
                if empty {
                    // A new cache gets the requested owner and mode; a used
                    // one keeps what its users made of it.
                    chown(dir, Some(*uid), Some(*gid)).ctx(|| format!("chown of cache dir {}", dir.display()))?;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode)).ctx(|| format!("chmod of cache dir {}", dir.display()))?;
                }
                if subdir.is_empty() {
                    out.oci.push(bind(&target, dir, *readonly)?);
                } else {
                    let at = scratch.join(format!("cache-{i}"));
                    let sub = crate::cache_subdir::open(dir, subdir, &at, &target, *mode, *uid, *gid)?;
                    out.oci.push(bind(&target, sub.mount_source(), *readonly)?);
                    out.cache_subdirs.push(sub);
                }
            }
            MountKind::Bind { from, source, rw } => {
                let root = inputs.source_root(from)?;
                let host = resolve_in_root(root, source)?;
                let md = std::fs::metadata(&host).map_err(|e| WorkerError::mount(&target, format!("bind source {source:?}: {e}")))?;
                if *rw && md.is_dir() {
                    // Writable, but writes are thrown away: an overlay with
                    // a scratch upper dir.
                    let ov = OverlayRootfs::mount(std::slice::from_ref(&host), &scratch.join(format!("bind-{i}")), true)?;
                    out.oci.push(bind(&target, &ov.merged, false)?);
                    out.overlays.push(ov);
                } else if *rw {
                    let copy = scratch.join(format!("bind-{i}"));
                    std::fs::copy(&host, &copy).ctx(|| format!("copying bind source {}", host.display()))?;
                    out.oci.push(bind(&target, &copy, false)?);
                } else {
                    out.oci.push(bind(&target, &host, true)?);
                }
            }
            MountKind::Tmpfs { size_bytes } => {
                let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned(), "mode=1777".to_owned()];
                if let Some(s) = size_bytes {
                    opts.push(format!("size={s}"));
                }
                out.oci.push(
                    MountBuilder::default()
                        .destination(target.as_str())
                        .typ("tmpfs")
                        .source("tmpfs")
                        .options(opts)
                        .build()
                        .map_err(|e| WorkerError::mount(&target, e.to_string()))?,
                );
            }
            MountKind::Secret { id, env, required, mode, uid, gid } => {
                let Some(value) = inputs.secrets.get(id) else {
                    if *required {
                        return Err(WorkerError::mount(&target, format!("secret {id:?} is required but the client did not send it")));
                    }
                    continue;
                };
                if let Some(name) = env {
                    let text = std::str::from_utf8(&value.0)
                        .map_err(|_| WorkerError::mount(name, format!("secret {id:?} is not UTF-8 text, so it cannot be a variable; mount it as a file")))?;
                    if text.contains('\0') {
                        return Err(WorkerError::mount(name, format!("secret {id:?} holds a NUL byte, so it cannot be a variable; mount it as a file")));
                    }
                    secret_fs(&mut out, scratch)?;
                    out.secret_env.0.push(format!("{name}={text}"));
                    if target.is_empty() {
                        continue;
                    }
                }
                let dir = secret_fs(&mut out, scratch)?;
                let file = dir.join(format!("{i}"));
                std::fs::write(&file, &value.0).ctx(|| format!("writing secret {id:?} to its tmpfs"))?;
                chown(&file, Some(*uid), Some(*gid)).ctx(|| format!("chown of secret {id:?}"))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).ctx(|| format!("chmod of secret {id:?}"))?;
                out.oci.push(bind(&target, &file, true)?);
            }
            MountKind::File { content, mode } => {
                let file = scratch.join(format!("file-{i}"));
                std::fs::write(&file, content).ctx(|| format!("writing {}", file.display()))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).ctx(|| format!("chmod of {}", file.display()))?;
                out.oci.push(bind(&target, &file, true)?);
            }
            MountKind::Ssh { id, required, .. } => {
                let Some(sock) = inputs.ssh.get(id) else {
                    if *required {
                        return Err(WorkerError::mount(&target, format!("ssh agent {id:?} is required but none was forwarded")));
                    }
                    continue;
                };
                if !sock.exists() {
                    return Err(WorkerError::mount(&target, format!("ssh agent socket {} does not exist", sock.display())));
                }
                out.oci.push(bind(&target, sock, false)?);
                if !out.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
        out.targets.push(target);
    }
    Ok(out)
}

/// The step's secrets tmpfs (mounted on first use).
fn secret_fs(out: &mut PreparedMounts, scratch: &Path) -> Result<PathBuf> {
    if let Some(p) = &out.secret_fs {
        return Ok(p.clone());
    }
    let dir = scratch.join("secrets");
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some("mode=0700,size=16m"))
        .ctx(|| format!("mounting the secrets tmpfs at {}", dir.display()))?;
    out.secret_fs = Some(dir.clone());
    Ok(dir)
}

/// Paths a container run creates in the rootfs only to mount something
/// on them (a secret's `/run/secrets/x`, `/proc` in a bare rootfs).
/// BuildKit removes such stubs afterwards, so mounts leave no trace in the
/// layer; so do we, when they are still empty.
#[derive(Debug, Default)]
pub struct MountStubs {
    /// Container paths that did not exist before the run, shallowest first.
    missing: Vec<String>,
    /// Existing parents of those paths and their mtimes, restored after
    /// cleanup so the parent is unchanged in the layer.
    parents: Vec<(String, std::time::SystemTime)>,
}

impl MountStubs {
    /// Records which of `targets` (and their parents) are missing in the
    /// rootfs at `root`.
    pub fn before(root: &Path, targets: &[String]) -> Result<Self> {
        let mut missing: Vec<String> = Vec::new();
        let mut parents = Vec::new();
        for t in targets {
            let mut prefix = String::new();
            for part in t.split('/').filter(|p| !p.is_empty()) {
                let parent = if prefix.is_empty() { "/".to_owned() } else { prefix.clone() };
                prefix = format!("{prefix}/{part}");
                let host = resolve_in_root(root, &prefix)?;
                if std::fs::symlink_metadata(&host).is_err() {
                    if !missing.contains(&prefix) {
                        missing.push(prefix.clone());
                    }
                    if let Ok(m) = std::fs::symlink_metadata(resolve_in_root(root, &parent)?).and_then(|md| md.modified())
                        && !parents.iter().any(|(p, _)| *p == parent) && !missing.contains(&parent) {
                            parents.push((parent, m));
                        }
                }
            }
        }
        Ok(MountStubs { missing, parents })
    }

    /// Removes the recorded paths that are now empty directories or empty
    /// files, deepest first.
    pub fn cleanup(&self, root: &Path) -> Result<()> {
        let mut paths = self.missing.clone();
        paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for p in paths {
            let host = resolve_in_root(root, &p)?;
            let Ok(md) = std::fs::symlink_metadata(&host) else { continue };
            if md.is_dir() {
                let _ = std::fs::remove_dir(&host);
            } else if md.is_file() && md.len() == 0 {
                let _ = std::fs::remove_file(&host);
            }
        }
        for (p, mtime) in &self.parents {
            let host = resolve_in_root(root, p)?;
            if let Ok(f) = std::fs::File::open(&host) {
                let _ = f.set_modified(*mtime);
            }
        }
        Ok(())
    }
}
