//! `ADD <git url>`: the commit planning resolved, checked out for the copy.
//!
//! The worker fetches the ref as planning named it (`git fetch --depth=1`,
//! no tags, no prompts) and refuses to go on unless it is still the commit
//! the step is keyed by — a branch moved during the build fails the step
//! rather than cache another tree under this key. Without
//! `--keep-git-dir` the `.git` directory is removed before the copy.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Result, WorkerError};
use crate::scope::resolve_in_root;

/// Checks `commit` of `repo` (reached through `reference`, empty for the
/// remote's HEAD) out into a new directory under `dir`; returns the
/// directory to copy: the checkout, or `subdir` inside it.
pub async fn fetch_git(repo: &str, reference: &str, commit: &str, subdir: &str, keep_git_dir: bool, dir: &Path) -> Result<PathBuf> {
    let err = |reason: String| WorkerError::Fetch { url: repo.to_owned(), reason };
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(format!("commit {commit:?} is not 40 hex digits")));
    }
    let checkout = tempfile::Builder::new().prefix("git-").tempdir_in(dir).map_err(|e| err(format!("creating a checkout directory: {e}")))?.keep();
    let wanted = if reference.is_empty() { "HEAD" } else { reference };
    git(&checkout, &["init", "-q"]).await.map_err(err)?;
    git(&checkout, &["fetch", "-q", "--depth=1", "--no-tags", "--", repo, wanted]).await.map_err(err)?;
    let fetched = git(&checkout, &["rev-parse", "--verify", "FETCH_HEAD^{commit}"]).await.map_err(err)?;
    if fetched.trim() != commit.to_ascii_lowercase() {
        return Err(err(format!("{wanted} is now {}, not the {commit} this build was planned with: the repository changed during the build", fetched.trim())));
    }
    git(&checkout, &["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit]).await.map_err(err)?;
    if !keep_git_dir {
        let dot_git = checkout.join(".git");
        std::fs::remove_dir_all(&dot_git).map_err(|e| err(format!("removing {}: {e}", dot_git.display())))?;
    }
    if subdir.is_empty() {
        return Ok(checkout);
    }
    let inside = resolve_in_root(&checkout, subdir)?;
    if !inside.is_dir() {
        return Err(err(format!("subdirectory {subdir:?} is not a directory at {commit}")));
    }
    Ok(inside)
}

/// Runs `git -C dir ARGS` without a terminal prompt or the host's config;
/// returns stdout, or stderr's last lines as the error.
async fn git(dir: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("git {}: {}", args[0], tail.into_iter().rev().collect::<Vec<_>>().join(" / ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
