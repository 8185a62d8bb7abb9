//! The Dockerfile corpus under `tests/dockerfiles/` (repository root): each
//! case is a directory with a `Dockerfile`, an optional `context/` (a case
//! without its own `Dockerfile` uses `context/Dockerfile`, as `docker build`
//! does when not given `-f`: the workload cases are a workload's directory,
//! Dockerfile included, so it is one file, not a copy beside the context), an
//! optional `options` file (`target=NAME`, `build-arg=K=V` lines) and an
//! optional `Dockerfile.dockerignore`. Its canonical form and graph are
//! pinned by reviewed snapshots, and printing then re-parsing it changes
//! nothing. Each Dockerfile ends with a `# Rule:` comment citing the Docker
//! rule its snapshot's values follow (at the end, so lines do not move).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbk_dockerfile::{BuildOptions, Dockerignore, FsContext, Graph, build_graph, parse, print};

struct Case {
    name: String,
    text: String,
    context: PathBuf,
    opts: BuildOptions,
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dockerfiles")
}

fn cases() -> Vec<Case> {
    support::sorted_entries(&corpus_root(), |p| p.is_dir()).into_iter().map(|d| load(&d)).collect()
}

fn load(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let context = dir.join("context");
    let dockerfile = match dir.join("Dockerfile") {
        own if own.is_file() => own,
        _ => context.join("Dockerfile"),
    };
    let text = std::fs::read_to_string(&dockerfile)
        .unwrap_or_else(|e| panic!("{}: {e}", dockerfile.display()));
    let mut opts = BuildOptions {
        file_name: format!("{name}/Dockerfile"),
        ..BuildOptions::default()
    };
    if let Ok(o) = std::fs::read_to_string(dir.join("options")) {
        for line in o.lines() {
            if let Some(t) = line.strip_prefix("target=") {
                opts.target = Some(t.to_string());
            } else if let Some(a) = line.strip_prefix("build-arg=") {
                let (k, v) = a.split_once('=').expect("build-arg=K=V");
                opts.build_args.insert(k.to_string(), v.to_string());
            }
        }
    }
    opts.dockerignore = Dockerignore::load(&dockerfile, &context)
        .unwrap()
        .unwrap_or_default();
    Case {
        name,
        text,
        context,
        opts,
    }
}

fn graph_of(case: &Case, text: &str) -> Graph {
    let empty = tempfile::tempdir().unwrap();
    let ctx_dir = if case.context.is_dir() {
        case.context.clone()
    } else {
        empty.path().to_path_buf()
    };
    build_graph(
        text,
        &case.opts,
        &FsContext::new(ctx_dir),
        &BTreeMap::<String, String>::new(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

#[test]
fn corpus_holds_at_least_one_hundred_dockerfiles() {
    assert!(cases().len() >= 100, "only {} cases", cases().len());
}

#[test]
fn corpus_canonical_forms_and_graphs_match_reviewed_snapshots() {
    for case in cases() {
        let df = parse(&case.text, &case.opts.file_name).unwrap_or_else(|e| panic!("{e}"));
        let graph = graph_of(&case, &case.text);
        let snap = format!(
            "=== canonical\n{}\n=== graph\n{}",
            print(&df),
            graph.render()
        );
        insta::assert_snapshot!(case.name.clone(), snap);
    }
}

#[test]
fn corpus_round_trips_through_the_canonical_form() {
    for case in cases() {
        let df = parse(&case.text, &case.opts.file_name).unwrap();
        let printed = print(&df);
        let again = parse(&printed, &case.opts.file_name)
            .unwrap_or_else(|e| panic!("{}: reparse failed: {e}\n{printed}", case.name));
        let strip = |d: &rbk_dockerfile::Dockerfile| {
            d.instructions
                .iter()
                .map(|l| l.inst.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&df),
            strip(&again),
            "{}: syntax tree changed\n{printed}",
            case.name
        );
        assert_eq!(df.directives, again.directives, "{}", case.name);
        assert_eq!(
            print(&again),
            printed,
            "{}: printing is not stable",
            case.name
        );
        let g1 = graph_of(&case, &case.text);
        let g2 = graph_of(&case, &printed);
        let facts = |g: &Graph| {
            g.steps
                .iter()
                .map(|s| (s.key, s.kind.clone(), s.instruction.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(facts(&g1), facts(&g2), "{}: graph changed", case.name);
        let keys = |g: &Graph| {
            g.stages
                .iter()
                .map(|s| (s.key, s.config.clone(), s.needed))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&g1), keys(&g2), "{}: stages changed", case.name);
    }
}
