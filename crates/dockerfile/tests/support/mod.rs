//! Helpers shared by the Dockerfile crate's integration tests.
#![allow(dead_code)]

use rbk_dockerfile::{BuildOptions, Error, FsContext, Graph, build_graph};

/// Builds `df` with the default options against an empty context: for the
/// tests about the Dockerfile's text alone.
pub fn graph(df: &str) -> Result<Graph, Error> {
    let ctx = tempfile::tempdir().unwrap();
    build_graph(df, &BuildOptions::default(), &FsContext::new(ctx.path()), &())
}
