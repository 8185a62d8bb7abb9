//! Helpers shared by the Dockerfile crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rbk_dockerfile::{BuildOptions, Error, FsContext, Graph, build_graph};

/// Builds `df` with the default options against an empty context: for the
/// tests about the Dockerfile's text alone.
pub fn graph(df: &str) -> Result<Graph, Error> {
    let ctx = tempfile::tempdir().unwrap();
    build_graph(df, &BuildOptions::default(), &FsContext::new(ctx.path()), &())
}

/// The entries of `dir` that `keep` keeps, in name order: a corpus's cases.
pub fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("an entry of {}: {e}", dir.display())).path())
        .filter(|p| keep(p))
        .collect();
    found.sort();
    found
}
