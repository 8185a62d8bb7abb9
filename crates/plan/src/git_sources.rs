//! `ADD <git url>` resolved at planning, on every build: the ref the URL
//! names → the commit it names now, which the step is keyed by and which
//! the worker fetches (`rbk_worker::git_source`).
//!
//! The ref is picked from `git ls-remote` as BuildKit's git source picks
//! it (git checkout's order): an exact or `refs/`-relative full ref, then
//! a branch, then a tag (an annotated tag peeled to its commit); a
//! 40-digit lowercase hex ref is the commit itself, and nothing is asked.
//! `ADD --checksum=<commit>` pins the result: a ref that resolves to
//! another commit fails the build, naming both.

use rbk_dockerfile::{GitRef, is_commit_id};
use rbk_worker::git_source::ls_remote;

/// The commit `git` names now (see the module docs); the error says what
/// went wrong, without credentials (the caller names the URL and line).
pub async fn resolve_git(git: &GitRef, checksum: Option<&str>) -> Result<String, String> {
    let commit = if is_commit_id(&git.reference) {
        git.reference.clone()
    } else {
        let wanted = if git.reference.is_empty() { "HEAD" } else { git.reference.as_str() };
        let refs = ls_remote(&git.remote, wanted).await?;
        pick_ref(&refs, wanted).ok_or_else(|| format!("the repository has no branch, tag or ref {wanted:?}"))?
    };
    if let Some(pin) = checksum {
        check_pin(&commit, pin)?;
    }
    Ok(commit)
}

/// The commit of `wanted` among `ls-remote`'s (commit, name) lines.
fn pick_ref(refs: &[(String, String)], wanted: &str) -> Option<String> {
    let tail = wanted.strip_prefix("refs/").unwrap_or(wanted);
    let branch = format!("refs/heads/{}", tail.strip_prefix("heads/").unwrap_or(tail));
    let tag = format!("refs/tags/{}", tail.strip_prefix("tags/").unwrap_or(tail));
    let full = format!("refs/{tail}");
    let find = |name: &str| refs.iter().find(|(_, n)| n == name).map(|(c, _)| c.clone());
    find(wanted)
        .or_else(|| find(&full))
        .or_else(|| find(&branch))
        .or_else(|| find(&format!("{tag}^{{}}")))
        .or_else(|| find(&tag))
        .filter(|c| is_commit_id(c))
}

/// `ADD --checksum` on a git source: a prefix of the commit id (BuildKit
/// compares by prefix), at least 7 hex digits so a typo is not a match.
fn check_pin(commit: &str, pin: &str) -> Result<(), String> {
    let pin = pin.to_ascii_lowercase();
    if pin.len() < 7 || pin.len() > 40 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("--checksum={pin}: a git source is pinned by its commit id (7 to 40 hex digits)"));
    }
    if !commit.starts_with(&pin) {
        return Err(format!("the ref resolves to commit {commit}, not the {pin} --checksum pins"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> Vec<(String, String)> {
        [
            ("1", "HEAD"),
            ("2", "refs/heads/main"),
            ("3", "refs/heads/v1"),
            ("4", "refs/tags/v1"),
            ("5", "refs/tags/v2"),
            ("6", "refs/tags/v2^{}"),
            ("7", "refs/pull/9/head"),
            ("8", "refs/heads/feature/main"),
        ]
        .into_iter()
        .map(|(c, n)| (c.repeat(40), n.to_owned()))
        .collect()
    }

    #[test]
    fn refs_are_picked_in_git_checkouts_order() {
        let pick = |w| pick_ref(&refs(), w).map(|c| c[..1].to_owned());
        assert_eq!(pick("HEAD").as_deref(), Some("1"));
        assert_eq!(pick("main").as_deref(), Some("2"), "the branch, not feature/main");
        assert_eq!(pick("v1").as_deref(), Some("3"), "a branch wins over a tag of the same name");
        assert_eq!(pick("tags/v1").as_deref(), Some("4"));
        assert_eq!(pick("v2").as_deref(), Some("6"), "an annotated tag is peeled to its commit");
        assert_eq!(pick("refs/pull/9/head").as_deref(), Some("7"));
        assert_eq!(pick("pull/9/head").as_deref(), Some("7"));
        assert_eq!(pick("nope"), None);
    }

    #[test]
    fn a_checksum_pins_the_commit_by_prefix() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(check_pin(c, "0123456"), Ok(()));
        assert_eq!(check_pin(c, c), Ok(()));
        assert!(check_pin(c, "0123457").unwrap_err().contains("not the 0123457"));
        assert!(check_pin(c, "012").unwrap_err().contains("7 to 40"));
        assert!(check_pin(c, "sha256:0123456").is_err());
    }
}
