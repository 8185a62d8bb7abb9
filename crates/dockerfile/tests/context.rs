//! How the frontend reads the context: only what it needs, never through
//! symlinks, never inside directories `.dockerignore` excludes for good.

use std::cell::RefCell;
use std::collections::BTreeMap;

use rbk_dockerfile::{BuildOptions, Context, Dockerignore, Entry, EntryKind, build_graph};

/// An in-memory context that records which directories were listed.
struct Recording {
    tree: BTreeMap<&'static str, Vec<Entry>>,
    listed: RefCell<Vec<String>>,
}

fn file(name: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: EntryKind::File {
            mode: 0o644,
            size: 1,
        },
    }
}

fn dir(name: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: EntryKind::Dir { mode: 0o755 },
    }
}

impl Recording {
    fn new() -> Self {
        let mut tree = BTreeMap::new();
        tree.insert("", vec![file("app.js"), dir("node_modules")]);
        tree.insert("node_modules", vec![dir("dep"), file("keep.txt")]);
        tree.insert("node_modules/dep", vec![file("index.js")]);
        Recording {
            tree,
            listed: RefCell::new(Vec::new()),
        }
    }
}

impl Context for Recording {
    fn list(&self, d: &str) -> std::io::Result<Vec<Entry>> {
        self.listed.borrow_mut().push(d.to_string());
        Ok(self.tree.get(d).cloned().unwrap_or_default())
    }

    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        Ok(path.as_bytes().to_vec())
    }
}

fn copied(g: &rbk_dockerfile::Graph) -> Vec<String> {
    match &g.steps[1].kind {
        rbk_dockerfile::StepKind::Copy(c) => match &c.sources[0] {
            rbk_dockerfile::CopySource::Context { paths, .. } => paths.clone(),
            other => panic!("unexpected source {other:?}"),
        },
        other => panic!("unexpected step {other:?}"),
    }
}

#[test]
fn excluded_directories_are_not_walked_without_exceptions() {
    let ctx = Recording::new();
    let opts = BuildOptions {
        dockerignore: Dockerignore::parse("node_modules\n", ".dockerignore").unwrap(),
        ..BuildOptions::default()
    };
    let g = build_graph("FROM alpine\nCOPY . /app/\n", &opts, &ctx, &()).unwrap();
    assert_eq!(copied(&g), vec!["app.js"]);
    assert_eq!(*ctx.listed.borrow(), vec![""]);
}

#[test]
fn an_exception_reaches_inside_an_excluded_directory() {
    let ctx = Recording::new();
    let opts = BuildOptions {
        dockerignore: Dockerignore::parse(
            "node_modules\n!node_modules/keep.txt\n",
            ".dockerignore",
        )
        .unwrap(),
        ..BuildOptions::default()
    };
    let g = build_graph("FROM alpine\nCOPY . /app/\n", &opts, &ctx, &()).unwrap();
    assert_eq!(copied(&g), vec!["app.js", "node_modules/keep.txt"]);
}

#[test]
fn a_graph_without_context_sources_never_reads_the_context() {
    let ctx = Recording::new();
    build_graph(
        "FROM alpine\nRUN true\nCOPY --from=busybox:1.36 /bin/busybox /bin/\n",
        &BuildOptions::default(),
        &ctx,
        &(),
    )
    .unwrap();
    assert!(ctx.listed.borrow().is_empty());
}
