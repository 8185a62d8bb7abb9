//! The network of a RUN step that is neither `host` nor `none`: a network
//! namespace of its own, connected to the outside by `pasta` (Debian's
//! `passt` package). pasta holds a tap device in the namespace and turns
//! the step's packets into ordinary sockets of the worker, so a step
//! reaches what the worker reaches (registries, package mirrors) through
//! the worker's routes, but never the worker's loopback: with
//! `--no-map-gw` the gateway address is not mapped to the host, and
//! `127.0.0.1` in the step is the namespace's own `lo`. No port is
//! forwarded in either direction (`-t/-u/-T/-U none`). DNS queries to
//! [`DNS_ADDRESS`] are forwarded to the worker's first resolver, which may
//! be a loopback one (systemd-resolved); the step's `/etc/resolv.conf`
//! names only that address.
//!
//! pasta takes ~50 ms to start, more than the 20 ms a step's start may
//! cost, so namespaces are made ahead: a [`NetworkPool`] keeps a few ready
//! ones (each used by one step only, then torn down) and makes a new one in
//! the background each time one is taken.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{IoContext, Result, WorkerError};

/// The address a step sends DNS queries to; pasta forwards them to the
/// worker's resolver. Link-local, so it never collides with a real one.
pub const DNS_ADDRESS: &str = "169.254.1.1";

/// A network namespace, bind-mounted on a file, with pasta attached. Torn
/// down (pasta stopped, namespace unmounted) when dropped.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    pasta_pid: Option<i32>,
}

impl Netns {
    /// The file the namespace is bind-mounted on (the runtime spec's
    /// `linux.namespaces[].path`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(pid) = self.pasta_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("pid"));
    }
}

/// Ready namespaces, made ahead of the steps that take them.
#[derive(Debug, Clone)]
pub struct NetworkPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pasta: PathBuf,
    dir: PathBuf,
    ready: Mutex<Vec<Netns>>,
    size: usize,
    next: AtomicU64,
}

impl NetworkPool {
    /// A pool of up to `size` ready namespaces under `dir` (created 0700;
    /// leftovers of an earlier run are torn down).
    pub fn new(pasta: impl Into<PathBuf>, dir: impl Into<PathBuf>, size: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        crate::hygiene::private_dir(&dir)?;
        for e in std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))?.flatten() {
            let p = e.path();
            // A worker that was killed left its pasta processes running.
            if p.extension().is_some_and(|x| x == "pid") {
                stop_stale_pasta(&p);
            }
            let _ = nix::mount::umount2(&p, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&p);
        }
        Ok(NetworkPool { inner: Arc::new(Inner { pasta: pasta.into(), dir, ready: Mutex::new(Vec::new()), size, next: AtomicU64::new(0) }) })
    }

    /// A fresh namespace with egress: a ready one if there is one (and a
    /// replacement is started in the background), else one made now.
    pub async fn take(&self) -> Result<Netns> {
        let ready = self.inner.ready.lock().expect("netns pool").pop();
        self.refill();
        match ready {
            Some(ns) => Ok(ns),
            None => {
                let inner = self.inner.clone();
                tokio::task::spawn_blocking(move || inner.create())
                    .await
                    .map_err(|e| WorkerError::Runtime { program: "pasta".into(), reason: format!("namespace task failed: {e}") })?
            }
        }
    }

    /// Starts making namespaces in the background until `size` are ready.
    pub fn refill(&self) {
        let missing = self.inner.size.saturating_sub(self.inner.ready.lock().expect("netns pool").len());
        if missing == 0 || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..missing {
                if inner.ready.lock().expect("netns pool").len() >= inner.size {
                    break;
                }
                match inner.create() {
                    Ok(ns) => inner.ready.lock().expect("netns pool").push(ns),
                    Err(e) => {
                        tracing::warn!("preparing a step network namespace: {e}");
                        break;
                    }
                }
            }
        });
    }
}

impl Inner {
    fn create(&self) -> Result<Netns> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("ns-{}-{n}", std::process::id()));
        std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        // A thread of our own enters a new network namespace and pins it on
        // the file; the rest of the worker stays where it is.
        let target = path.clone();
        let pinned = std::thread::spawn(move || -> nix::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            nix::mount::mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        })
        .join()
        .map_err(|_| WorkerError::Runtime { program: "pasta".into(), reason: "network namespace thread panicked".into() })?;
        let mut ns = Netns { path, pasta_pid: None };
        pinned.ctx(|| format!("creating a network namespace on {}", ns.path.display()))?;
        let pid_file = ns.path.with_extension("pid");
        let out = std::process::Command::new(&self.pasta)
            // As root pasta would switch to `nobody` before joining the
            // namespace and fail; it keeps only the capabilities it needs.
            .args(["--runas", "0:0", "--config-net", "--quiet", "--no-map-gw"])
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .args(["--dns-forward", DNS_ADDRESS])
            .arg("--netns")
            .arg(&ns.path)
            .arg("-P")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| WorkerError::Runtime { program: self.pasta.display().to_string(), reason: format!("starting: {e}") })?;
        if !out.status.success() {
            let err: Vec<String> =
                String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.contains("syslog")).map(str::to_owned).collect();
            if err.iter().any(|l| l.contains("No external routable interface")) {
                // The worker has no route out (e.g. it runs in a network
                // namespace of its own): pasta has nothing to connect the
                // step to, and the step gets a namespace with loopback
                // only. Stricter than egress, never looser.
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| tracing::warn!("this worker has no external route: RUN steps get a network namespace without egress"));
                return Ok(ns);
            }
            return Err(WorkerError::Runtime { program: self.pasta.display().to_string(), reason: format!("{}: {}", out.status, err.join("; ")) });
        }
        ns.pasta_pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok());
        Ok(ns)
    }
}

/// SIGTERM to the pasta whose pid file is `pid_file`, if that process is
/// still a pasta (the pid may have been reused since).
fn stop_stale_pasta(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) else { return };
    // pasta is passt's alternate name: the running image is `passt` or
    // `passt.avx2` (what /proc/PID/comm shows), started as `pasta`.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim();
    let base = comm.split('.').next().unwrap_or_default();
    if base == "pasta" || base == "passt" {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// `/etc/resolv.conf` for a step: pasta's DNS address, with the worker's
/// `search` and `options` lines.
pub fn resolv_conf(host: &str) -> String {
    let mut out = format!("nameserver {DNS_ADDRESS}\n");
    for l in host.lines() {
        let l = l.trim();
        if l.starts_with("search ") || l.starts_with("options ") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// `/etc/hosts` for a step (Docker's, with the step's hostname).
pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\trbk\n";

/// pasta on `PATH` (or in `/usr/bin`), if installed.
pub fn find_pasta() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join("pasta")).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_names_only_the_forwarded_address() {
        let r = resolv_conf("nameserver 127.0.0.53\nsearch corp.example\noptions ndots:2\n");
        assert_eq!(r, "nameserver 169.254.1.1\nsearch corp.example\noptions ndots:2\n");
    }
}
