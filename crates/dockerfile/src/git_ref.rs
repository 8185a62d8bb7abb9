//! Git URLs in BuildKit's syntax, `REPO#REF:SUBDIR` — an `ADD <git url>`
//! source, or a git build context.
//!
//! The fragment is split as BuildKit's `gitutil` splits it: the ref up to
//! the first `:`, the subdirectory after it, each optional (`REPO`,
//! `REPO#REF`, `REPO#:SUBDIR`). Only the form is checked here (a ref or
//! repository cannot pass for a git option, a subdirectory stays inside
//! the repository); which transports may be fetched is the fetcher's
//! business.

use std::path::{Component, Path};

/// A git URL split into what to fetch, which ref, and which subdirectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The repository, without the fragment.
    pub remote: String,
    /// Branch, tag, full ref or commit; empty: the remote's HEAD.
    pub reference: String,
    /// Relative, without `..` or a leading `/`; empty: the whole tree.
    pub subdir: String,
}

impl GitRef {
    /// Splits `url`; the error says what is wrong with it (the caller
    /// names the URL and where it was written).
    pub fn parse(url: &str) -> Result<GitRef, String> {
        let (remote, fragment) = url.split_once('#').unwrap_or((url, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let subdir = subdir.trim_matches('/');
        if Path::new(subdir).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("subdirectory {subdir:?} must stay inside the repository"));
        }
        if remote.starts_with('-') || reference.starts_with('-') {
            return Err("a repository or ref may not start with '-'".into());
        }
        if remote.is_empty() {
            return Err("no repository before '#'".into());
        }
        Ok(GitRef { remote: remote.to_owned(), reference: reference.to_owned(), subdir: subdir.to_owned() })
    }
}

/// Whether `reference` is a full commit id (BuildKit takes a 40-digit hex
/// ref as the commit itself, without asking the remote).
pub fn is_commit_id(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, String) {
        let g = GitRef::parse(url).unwrap();
        (g.remote, g.reference, g.subdir)
    }

    #[test]
    fn the_fragment_names_the_ref_then_the_subdirectory() {
        assert_eq!(parts("https://h/r.git#v1.2:docs/api/"), ("https://h/r.git".into(), "v1.2".into(), "docs/api".into()));
        assert_eq!(parts("https://h/r.git#:sub"), ("https://h/r.git".into(), "".into(), "sub".into()));
        assert_eq!(parts("git@h:o/r.git#main"), ("git@h:o/r.git".into(), "main".into(), "".into()));
        assert_eq!(parts("git://h/r.git"), ("git://h/r.git".into(), "".into(), "".into()));
        assert_eq!(parts("git://h/r.git#refs/pull/1/head:/"), ("git://h/r.git".into(), "refs/pull/1/head".into(), "".into()));
    }

    #[test]
    fn a_subdirectory_leaving_the_repository_or_an_option_like_ref_is_refused() {
        assert!(GitRef::parse("https://h/r.git#main:../etc").unwrap_err().contains("inside the repository"));
        assert!(GitRef::parse("https://h/r.git#main:a/../../b").is_err());
        assert!(GitRef::parse("https://h/r.git#--upload-pack=x").unwrap_err().contains("'-'"));
        assert!(GitRef::parse("--upload-pack=x#main").is_err());
    }

    #[test]
    fn only_forty_lowercase_hex_digits_are_a_commit_id() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(!is_commit_id(&"a".repeat(39)));
        assert!(!is_commit_id(&"A".repeat(40)));
        assert!(!is_commit_id("main"));
    }
}
