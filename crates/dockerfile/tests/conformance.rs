//! The differential corpus: small Dockerfiles, each with the result
//! BuildKit documents for it, pinned by an insta snapshot (the resolved
//! graph without cache keys: ENV/LABEL maps, EXPOSE sets, mount options,
//! COPY sources, build checks, or the error).
//!
//! Cases live in `tests/conformance/*.txt`, separated by `=== name` lines.
//! A case starts with meta lines, then its Dockerfile:
//! - `#! rule: ...` the documented behaviour it follows (required),
//! - `#! arg K=V` a build arg, `#! target NAME` the stage to build,
//! - `#! file PATH=CONTENT` a context file (`\n` for newlines),
//! - `#! expect TEXT` a line the result must contain (checked before the
//!   snapshot, so a regression names the broken fact),
//! - `#! absent TEXT` text the result must not contain (a check that
//!   must not fire),
//! - `#! error` the Dockerfile must be refused.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbk_dockerfile::{BuildOptions, FsContext, Graph, build_graph, decode};

struct Case {
    file: String,
    name: String,
    rule: String,
    args: BTreeMap<String, String>,
    target: Option<String>,
    files: Vec<(String, String)>,
    expect: Vec<String>,
    absent: Vec<String>,
    error: bool,
    dockerfile: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn cases() -> Vec<Case> {
    let files = support::sorted_entries(&dir(), |p| p.extension().is_some_and(|e| e == "txt"));
    let mut out = Vec::new();
    for f in files {
        let text = decode(&std::fs::read(&f).unwrap()).into_owned();
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        let mut cur: Option<Case> = None;
        for line in text.split_inclusive('\n') {
            if let Some(name) = line.strip_prefix("=== ") {
                out.extend(cur.take());
                cur = Some(Case {
                    file: file.clone(),
                    name: name.trim().to_string(),
                    rule: String::new(),
                    args: BTreeMap::new(),
                    target: None,
                    files: Vec::new(),
                    expect: Vec::new(),
                    absent: Vec::new(),
                    error: false,
                    dockerfile: String::new(),
                });
                continue;
            }
            let Some(c) = cur.as_mut() else {
                continue; // text before the first case: the file's header
            };
            let meta = line
                .strip_prefix("#! ")
                .map(|m| m.trim_end_matches(['\n', '\r']));
            match meta {
                Some(m) if c.dockerfile.is_empty() => {
                    if let Some(r) = m.strip_prefix("rule: ") {
                        c.rule = r.to_string();
                    } else if let Some(a) = m.strip_prefix("arg ") {
                        let (k, v) = a.split_once('=').expect("#! arg K=V");
                        c.args.insert(k.into(), v.into());
                    } else if let Some(t) = m.strip_prefix("target ") {
                        c.target = Some(t.into());
                    } else if let Some(f) = m.strip_prefix("file ") {
                        let (p, v) = f.split_once('=').expect("#! file PATH=CONTENT");
                        c.files.push((p.into(), v.replace("\\n", "\n")));
                    } else if let Some(e) = m.strip_prefix("expect ") {
                        c.expect.push(e.to_string());
                    } else if let Some(a) = m.strip_prefix("absent ") {
                        c.absent.push(a.to_string());
                    } else if m == "error" {
                        c.error = true;
                    } else {
                        panic!("{file}: {}: unknown meta line '{m}'", c.name);
                    }
                }
                _ => c.dockerfile.push_str(line),
            }
        }
        out.extend(cur);
    }
    out
}

/// The graph as `render` shows it, without cache keys (they pin the hash
/// format, not Docker's behaviour).
fn result(g: &Graph) -> String {
    let mut out = String::new();
    for line in g.render().lines() {
        if line.trim_start().starts_with("image key:") {
            continue;
        }
        let line = match line.strip_prefix("  #") {
            Some(rest) => {
                // "  #3 0123456789abcdef L4: ..." -> "  #3 L4: ..."
                let mut parts = rest.splitn(3, ' ');
                let id = parts.next().unwrap_or_default();
                let _key = parts.next();
                format!("  #{id} {}", parts.next().unwrap_or_default())
            }
            None => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if !g.checks.is_empty() {
        out.push_str("checks:\n");
        for c in &g.checks {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}

fn run(case: &Case) -> Result<String, String> {
    let ctx = tempfile::tempdir().unwrap();
    for (p, content) in &case.files {
        let path = ctx.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let opts = BuildOptions {
        build_args: case.args.clone(),
        target: case.target.clone(),
        ..BuildOptions::default()
    };
    let out = match build_graph(&case.dockerfile, &opts, &FsContext::new(ctx.path()), &()) {
        Ok(_) if case.error => return Err("expected an error".into()),
        Ok(g) => result(&g),
        Err(e) if case.error => format!("error: {e}\n"),
        Err(e) => return Err(format!("unexpected error: {e}")),
    };
    for e in &case.expect {
        if !out.contains(e.as_str()) {
            return Err(format!("expected '{e}' in:\n{out}"));
        }
    }
    for a in &case.absent {
        if out.contains(a.as_str()) {
            return Err(format!("did not expect '{a}' in:\n{out}"));
        }
    }
    Ok(out)
}

#[test]
fn conformance_corpus_has_at_least_150_cases_each_citing_a_rule() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(!c.rule.is_empty(), "{}: {}: no '#! rule:'", c.file, c.name);
        assert!(
            names.insert(c.name.clone()),
            "duplicate case name {}",
            c.name
        );
    }
}

#[test]
fn conformance_cases_give_their_expected_results() {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|c| run(c).err().map(|e| format!("{}: {}: {e}", c.file, c.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn conformance_results_match_reviewed_snapshots() {
    for case in cases() {
        let result = run(&case).unwrap_or_else(|e| format!("FAILED: {e}"));
        let snap = format!(
            "rule: {}\n=== Dockerfile\n{}=== result\n{result}",
            case.rule, case.dockerfile
        );
        insta::assert_snapshot!(case.name.clone(), snap);
    }
}
