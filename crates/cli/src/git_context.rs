//! Git build contexts, fetched on the client as `docker buildx build`
//! takes them: `https://host/org/repo.git#ref:subdir`, `git@host:org/repo.git`
//! and `ssh://` URLs (through the user's ssh agent and known hosts),
//! `git://` and `file://` ones, `github.com/org/repo`.
//!
//! Each repository has a directory of its own under the client dir
//! (`git/<hash of the URL>`): a bare repository the ref is fetched into
//! (shallow, no tags) and `tree/`, the checkout, whose `.git` is kept
//! apart so it is not part of the context (BuildKit's default). The
//! checkout's path is stable, so the next build of the same repository
//! uploads only what changed. A lock file makes two builds of one
//! repository take turns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
// A URL in a message without its credentials (`https://user:token@host/...`
// → `https://***@host/...`): the one redaction ADD URLs' progress uses too.
use rbk_plan::remote_sources::shown;

/// A git context URL: where to fetch from, which ref, which subdirectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    pub remote: String,
    /// Branch, tag or commit; `HEAD` when the URL names none.
    pub reference: String,
    /// Relative, without `..`; empty for the repository's root.
    pub subdir: String,
}

/// Whether `s` names a git repository, by docker's rules: `git://`,
/// `git@`, `ssh://`, `github.com/`, or an http(s)/file URL whose path ends
/// in `.git`.
pub fn is_git_url(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git://")
        || s.starts_with("git@")
        || s.starts_with("ssh://")
        || s.starts_with("github.com/")
        || ((s.starts_with("https://") || s.starts_with("http://") || s.starts_with("file://")) && base.trim_end_matches('/').ends_with(".git"))
}

impl GitUrl {
    /// `URL[#REF][:SUBDIR]` (BuildKit's fragment, `rbk_dockerfile::GitRef`),
    /// and docker's `github.com/ORG/REPO` shorthand.
    pub fn parse(s: &str) -> anyhow::Result<GitUrl> {
        let g = rbk_dockerfile::GitRef::parse(s).map_err(|m| anyhow::anyhow!("git context {}: {m}", shown(s)))?;
        let remote = match g.remote.strip_prefix("github.com/") {
            Some(rest) => format!("https://github.com/{rest}"),
            None => g.remote,
        };
        Ok(GitUrl {
            remote,
            reference: if g.reference.is_empty() { "HEAD".into() } else { g.reference },
            subdir: g.subdir,
        })
    }
}

/// A fetched repository: the checkout's directory (the subdirectory the
/// URL names) and the lock held while the build reads it.
pub struct Checkout {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

fn git(args: &[&str], what: &str, url: &GitUrl) -> anyhow::Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // Never ask on a terminal: a build is not interactive. ssh keys come
    // from the agent; unknown host keys are refused (the user's
    // known_hosts decides), unless GIT_SSH_COMMAND says otherwise.
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let out = cmd.output().context("running git (is it installed?)")?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said: Vec<String> = said.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().map(redact_line).collect();
        bail!("git context {}#{}: {what} failed: {}", shown(&url.remote), url.reference, said.join(" / "));
    }
    Ok(())
}

/// git repeats the URL in its messages: redact every word that is one.
fn redact_line(line: &str) -> String {
    line.split(' ').map(|w| if w.contains("://") { shown(w.trim_matches('\'')) } else { w.to_owned() }).collect::<Vec<_>>().join(" ")
}

/// Fetches `url` into `work_dir/git/...` and checks it out (see the
/// module's doc).
pub fn fetch(url: &GitUrl, work_dir: &Path) -> anyhow::Result<Checkout> {
    let name = blake3::hash(url.remote.as_bytes()).to_hex();
    let dir = work_dir.join("git").join(&name.as_str()[..32]);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = crate::file_lock::lock(&dir.join("lock"))?;
    let repo = dir.join("repo.git");
    let repo_s = repo.to_str().context("the client dir's path is not UTF-8")?.to_owned();
    if !repo.join("HEAD").exists() {
        git(&["init", "-q", "--bare", &repo_s], "creating the local repository", url)?;
    }
    let git_dir = format!("--git-dir={repo_s}");
    let fetched = git(&[&git_dir, "fetch", "-q", "--depth=1", "--no-tags", "--", &url.remote, &url.reference], "fetching", url);
    let commit = match fetched {
        Ok(()) => "FETCH_HEAD".to_owned(),
        // A commit the server will not hand out by id: fetch everything,
        // then check out that commit.
        Err(e) if url.reference.len() >= 7 && url.reference.bytes().all(|b| b.is_ascii_hexdigit()) => {
            git(&[&git_dir, "fetch", "-q", "--no-tags", "--", &url.remote], "fetching", url).map_err(|_| e)?;
            url.reference.clone()
        }
        Err(e) => return Err(e),
    };
    let tree = dir.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("clearing {}", tree.display()))?;
    }
    std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    let work_tree = format!("--work-tree={}", tree.to_str().context("the client dir's path is not UTF-8")?);
    git(&[&git_dir, &work_tree, "checkout", "-q", "-f", &commit, "--", "."], "checking out", url)?;
    let sub = tree.join(&url.subdir);
    if !sub.is_dir() {
        bail!("git context {}#{}: {:?} is not a directory of the repository", shown(&url.remote), url.reference, url.subdir);
    }
    Ok(Checkout { dir: sub, _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_git_url_forms_are_recognised_and_others_are_not() {
        for u in ["https://h/o/r.git", "https://h/o/r.git#main:sub", "git@github.com:o/r.git", "ssh://git@h/o/r", "git://h/r", "github.com/o/r", "file:///srv/r.git"] {
            assert!(is_git_url(u), "{u}");
        }
        for u in ["https://h/ctx.tar.gz", ".", "dir.git/..x", "-"] {
            assert!(!is_git_url(u), "{u}");
        }
    }

    #[test]
    fn the_fragment_names_ref_and_subdir() {
        let u = GitUrl::parse("https://h/o/r.git#v1.2:app/web").unwrap();
        assert_eq!((u.remote.as_str(), u.reference.as_str(), u.subdir.as_str()), ("https://h/o/r.git", "v1.2", "app/web"));
        let u = GitUrl::parse("git@h:o/r.git").unwrap();
        assert_eq!((u.reference.as_str(), u.subdir.as_str()), ("HEAD", ""));
        assert_eq!(GitUrl::parse("github.com/o/r#:d").unwrap().remote, "https://github.com/o/r");
        assert!(GitUrl::parse("https://h/r.git#main:../up").is_err());
        assert!(GitUrl::parse("https://h/r.git#--upload-pack=x").is_err());
    }

    #[test]
    fn credentials_in_a_url_never_reach_a_message() {
        assert_eq!(shown("https://me:tok3n@h/o/r.git"), "https://***@h/o/r.git");
        assert_eq!(shown("git@h:o/r.git"), "git@h:o/r.git");
        assert!(!redact_line("fatal: unable to access 'https://me:tok3n@h/r.git/': 403").contains("tok3n"));
    }
}
