//! `ADD <git url>`: the commit planning resolved, checked out for the copy.
//!
//! The step names the commit its key holds; the worker fetches exactly
//! that (`git fetch --depth=1 origin <commit>`, which every smart server
//! of protocol v2 — and GitHub, GitLab on v0 — answers). A server that
//! hands out only refs gets the ref fetched instead, and the step fails
//! unless it still names that commit: a branch moved during the build
//! fails rather than cache another tree under this key.
//!
//! As BuildKit's git source: the checkout is made with modes 0644/0755
//! (BuildKit runs git under umask 022), submodules are checked out
//! (`--recursive --depth=1`), `.git` is kept only with `--keep-git-dir`
//! and without a subdirectory — then its `origin` names the repository
//! without credentials, HEAD is detached at the commit, and `FETCH_HEAD`
//! and the reflogs are gone. With a subdirectory, only its contents are
//! copied.
//!
//! The step comes from a client, so the repository is checked here too:
//! only network transports (`git://`, `http(s)://`), never a path or
//! `file://` on the worker, and git is told the same (`protocol.allow`),
//! submodules included. Nor does git get the machine's credentials: no
//! config, no `~/.netrc` (`HOME` is `/nonexistent`), and no ssh — a tenant
//! naming `git@host:` would otherwise fetch with the worker's own key.
//! BuildKit fetches ssh sources through the client's forwarded agent;
//! rbk does not forward it to ADD yet, so they are refused saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::error::{Result, WorkerError};
use crate::scope::resolve_in_root;

/// Transports a git source may use (`protocol.<name>.allow=always`; every
/// other one, `file`, `ext` and `ssh` included, is refused by git itself
/// too).
const TRANSPORTS: &[&str] = &["git", "http", "https"];
/// Why an ssh source is refused, and what to do instead.
const NO_SSH: &str = "ssh git sources are not fetched by ADD yet (rbk does not forward an ssh agent to it, and never uses the machine's own keys): use an https:// or git:// URL, or RUN --mount=type=ssh git clone";
/// A fetch that says nothing for this long is given up.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// `url` without a password or token (`https://user:token@host/...` →
/// `https://***@host/...`), for messages and for a kept `.git`'s origin.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

/// Why `repo` may not be fetched, if it may not: it must use one of
/// [`TRANSPORTS`] (an scp-like `user@host:path` is ssh, refused).
pub fn check_remote(repo: &str) -> std::result::Result<(), String> {
    if repo.starts_with('-') {
        return Err("a repository may not start with '-'".into());
    }
    match repo.split_once("://") {
        Some((scheme, rest)) if TRANSPORTS.contains(&scheme.to_ascii_lowercase().as_str()) && !rest.is_empty() => Ok(()),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("ssh") => Err(NO_SSH.into()),
        Some((scheme, _)) => Err(format!("{scheme}:// is not a transport for a git source (git, http or https)")),
        None => match repo.split_once(':') {
            Some((user_host, path)) if user_host.contains('@') && !user_host.contains('/') && !path.is_empty() => Err(NO_SSH.into()),
            _ => Err("not a git URL (git:// or http(s)://)".into()),
        },
    }
}

/// Checks `commit` of `repo` out into a new directory under `dir`
/// (`reference`, empty for the remote's HEAD, is fetched instead when the
/// server will not hand out the commit); returns the directory to copy:
/// the checkout, or `subdir` inside it.
pub async fn fetch_git(repo: &str, reference: &str, commit: &str, subdir: &str, keep_git_dir: bool, dir: &Path) -> Result<PathBuf> {
    let shown = redact_url(repo);
    let err = |reason: String| WorkerError::Fetch { url: shown.clone(), reason };
    check_remote(repo).map_err(err)?;
    if !(commit.len() == 40 && commit.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
        return Err(err(format!("commit {commit:?} is not 40 lowercase hex digits")));
    }
    let checkout = tempfile::Builder::new().prefix("git-").tempdir_in(dir).map_err(|e| err(format!("creating a checkout directory: {e}")))?.keep();
    let git = Git { dir: Some(&checkout) };
    git.run(&["-c", "init.defaultBranch=master", "init", "-q"]).await.map_err(err)?;
    git.run(&["remote", "add", "origin", repo]).await.map_err(err)?;
    if git.run(&["fetch", "-q", "--depth=1", "--no-tags", "origin", commit]).await.is_err() {
        let wanted = if reference.is_empty() { "HEAD" } else { reference };
        git.run(&["fetch", "-q", "--depth=1", "--no-tags", "origin", wanted]).await.map_err(err)?;
        let fetched = git.run(&["rev-parse", "--verify", "FETCH_HEAD^{commit}"]).await.map_err(err)?;
        if fetched.trim() != commit {
            return Err(err(format!(
                "{wanted} is now {}, not the {commit} this build was planned with: the repository changed during the build",
                fetched.trim()
            )));
        }
    }
    git.run(&["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit]).await.map_err(err)?;
    if checkout.join(".gitmodules").exists() {
        git.run(&["submodule", "update", "-q", "--init", "--recursive", "--depth=1"]).await.map_err(err)?;
    }
    let dot_git = checkout.join(".git");
    if keep_git_dir && subdir.is_empty() {
        git.run(&["remote", "set-url", "origin", &shown]).await.map_err(err)?;
        git.run(&["reflog", "expire", "--all", "--expire=now"]).await.map_err(err)?;
        match std::fs::remove_file(dot_git.join("FETCH_HEAD")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(format!("removing FETCH_HEAD: {e}"))),
            _ => {}
        }
    } else {
        std::fs::remove_dir_all(&dot_git).map_err(|e| err(format!("removing {}: {e}", dot_git.display())))?;
    }
    standard_modes(&checkout).map_err(|e| err(format!("setting the checkout's modes: {e}")))?;
    if subdir.is_empty() {
        return Ok(checkout);
    }
    let inside = resolve_in_root(&checkout, subdir)?;
    if !inside.is_dir() {
        return Err(err(format!("{subdir:?} is not a directory of the repository at {commit}")));
    }
    Ok(inside)
}

/// Gives every file and directory under `root` the mode git makes under
/// umask 022 (0755 for directories and executables, else 0644), whatever
/// the worker's own umask: the layer is the same on every worker.
fn standard_modes(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let md = entry.path().symlink_metadata()?;
        let mode = if md.is_dir() || (md.is_file() && md.permissions().mode() & 0o100 != 0) { 0o755 } else { 0o644 };
        if md.file_type().is_symlink() {
            continue;
        }
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
        if md.is_dir() {
            standard_modes(&entry.path())?;
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
}

/// The refs `repo` advertises that match `pattern` (`git ls-remote`'s
/// matching: the pattern's last components), as (commit, ref name) — a
/// peeled annotated tag as `refs/tags/T^{}`. The repository is checked as
/// [`fetch_git`] checks it.
pub async fn ls_remote(repo: &str, pattern: &str) -> std::result::Result<Vec<(String, String)>, String> {
    check_remote(repo)?;
    let out = Git { dir: None }.run(&["ls-remote", "--", repo, pattern]).await?;
    Ok(out.lines().filter_map(|l| l.split_once('\t')).map(|(c, n)| (c.to_owned(), n.to_owned())).collect())
}

/// git (in one checkout, or none), without the host's config or a
/// terminal prompt, allowed only [`TRANSPORTS`].
struct Git<'a> {
    dir: Option<&'a Path>,
}

impl Git<'_> {
    /// Runs `git [-C DIR] ARGS`; returns stdout, or git's last lines of
    /// stderr (credentials removed) as the error.
    async fn run(&self, args: &[&str]) -> std::result::Result<String, String> {
        let mut cmd = tokio::process::Command::new("git");
        if let Some(dir) = self.dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(["-c", "protocol.allow=never"]);
        for t in TRANSPORTS {
            cmd.args(["-c", &format!("protocol.{t}.allow=always")]);
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/nonexistent")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(out) => out.map_err(|e| format!("running git (is it installed?): {e}"))?,
            Err(_) => return Err(format!("git {}: no answer in {} s", args[0], GIT_TIMEOUT.as_secs())),
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<String> = stderr.lines().rev().take(5).map(scrub).collect();
            let verb = args.iter().find(|a| !a.starts_with('-') && !a.contains('=')).unwrap_or(&"");
            return Err(format!("git {verb}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A line of git's output with every URL in it redacted.
fn scrub(line: &str) -> String {
    line.split(' ').map(|w| if w.contains("://") { redact_url(w.trim_matches('\'')) } else { w.to_owned() }).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_transports_pass_and_local_paths_and_ssh_do_not() {
        for ok in ["git://h/r.git", "https://h/r.git", "HTTP://h/r.git"] {
            assert_eq!(check_remote(ok), Ok(()), "{ok}");
        }
        for bad in ["file:///srv/r.git", "/srv/r.git", "../r.git", "ext::sh -c id", "-oProxyCommand=x", "h:r.git", "git://"] {
            assert!(check_remote(bad).is_err(), "{bad}");
        }
        for ssh in ["ssh://git@h/r", "git@github.com:o/r.git"] {
            assert!(check_remote(ssh).unwrap_err().contains("use an https:// or git:// URL"), "{ssh}");
        }
    }

    #[test]
    fn credentials_never_reach_a_message() {
        assert_eq!(redact_url("https://me:tok3n@h/o/r.git"), "https://***@h/o/r.git");
        assert_eq!(redact_url("git@h:o/r.git"), "git@h:o/r.git");
        assert!(!scrub("fatal: unable to access 'https://me:tok3n@h/r.git/': 403").contains("tok3n"));
    }
}
