//! The Dockerfile frontend: Dockerfile + context + options → build graph with
//! cache keys.
//!
//! It knows nothing of workers, stores or runtimes (BuildKit's
//! frontend/solver split): [`parse`] gives the syntax tree, [`build_graph`]
//! resolves it against build options and a [`Context`] into [`Step`]s a
//! worker can execute, each with a content-derived cache [`Key`].

mod canonical;
mod check_config;
mod checks;
mod context;
mod directives;
mod dockerignore;
mod error;
mod expand;
mod git_ref;
mod graph;
mod instruction;
mod key;
mod lexer;
mod parser;
mod pattern;
mod step;

pub use canonical::print;
pub use check_config::{CHECK_BUILD_ARG, CheckConfig};
pub use checks::Check;
pub use context::{Context, Entry, EntryKind, FsContext};
pub use directives::Directives;
pub use dockerignore::Dockerignore;
pub use error::{Error, Pos};
pub use git_ref::{GitRef, is_commit_id};
pub use graph::{BaseResolver, BuildOptions, Graph, Stage, build_graph, check};
pub use instruction::*;
pub use key::{Key, context_file_mode};
pub use parser::{decode, parse, parse_bytes};
pub use step::*;
