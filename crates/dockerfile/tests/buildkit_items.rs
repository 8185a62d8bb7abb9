//! Issue #16, one test per numbered item: where rbk differed from BuildKit's
//! documented behaviour. Each test names the behaviour; the comment says
//! which item and which BuildKit rule it follows.

use std::collections::BTreeMap;

use rbk_dockerfile::{
    BuildOptions, CopySource, Error, FsContext, Graph, Mount, StepKind, build_graph, check, decode,
    parse_bytes,
};

/// Builds `df` against a context holding `files`, with `args` as build args.
fn build(df: &str, files: &[(&str, &str)], args: &[(&str, &str)]) -> Result<Graph, Error> {
    let ctx = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = ctx.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let opts = BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BuildOptions::default()
    };
    build_graph(df, &opts, &FsContext::new(ctx.path()), &())
}

fn graph(df: &str) -> Graph {
    build(df, &[], &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn err(df: &str) -> String {
    match build(df, &[], &[]) {
        Ok(_) => panic!("expected an error for:\n{df}"),
        Err(e) => e.to_string(),
    }
}

/// The target stage's image environment.
fn env(g: &Graph) -> BTreeMap<String, String> {
    g.stages[g.target].config.env.iter().cloned().collect()
}

fn labels(g: &Graph) -> BTreeMap<String, String> {
    g.stages[g.target].config.labels.clone()
}

fn ports(g: &Graph) -> Vec<String> {
    g.stages[g.target]
        .config
        .exposed_ports
        .iter()
        .cloned()
        .collect()
}

/// Mounts of every RUN of the target stage, in order.
fn mounts(g: &Graph) -> Vec<Mount> {
    g.stages[g.target]
        .steps
        .iter()
        .filter_map(|id| match &g.steps[*id].kind {
            StepKind::Run(r) => Some(r.mounts.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn rules(g: &Graph) -> Vec<(&'static str, usize)> {
    g.checks.iter().map(|c| (c.rule, c.line)).collect()
}

/// Item 1. BuildKit: a bind mount without `target` goes on the working
/// directory (BuildKit's own Dockerfile relies on it).
#[test]
fn bind_mount_without_target_goes_on_the_working_directory() {
    let g = graph(
        "FROM alpine AS stage\nFROM alpine\nWORKDIR /src\nRUN --mount=type=bind ls\nRUN --mount=from=stage ls\n",
    );
    let targets: Vec<String> = mounts(&g)
        .iter()
        .map(|m| match m {
            Mount::Bind { target, .. } => target.clone(),
            other => panic!("not a bind mount: {other:?}"),
        })
        .collect();
    assert_eq!(targets, ["/src", "/src"]);
}

/// Item 2. BuildKit allows a wildcard source that matches nothing (only a
/// missing plain path is an error).
#[test]
fn wildcard_source_that_matches_nothing_is_not_an_error() {
    let g = build(
        "FROM alpine\nCOPY package.json yarn.lock* ./\n",
        &[("package.json", "{}")],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let copy = g
        .steps
        .iter()
        .find_map(|s| match &s.kind {
            StepKind::Copy(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let sources: Vec<(String, usize)> = copy
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Context { pattern, paths, .. } => (pattern.clone(), paths.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("package.json".to_string(), 1),
            ("yarn.lock*".to_string(), 0)
        ]
    );
}

/// Item 3. An escaped quote inside a double-quoted LABEL value.
#[test]
fn label_value_with_escaped_double_quotes() {
    let g = graph("FROM alpine\nLABEL d=\"a \\\"b\\\" c\" v=1\n");
    assert_eq!(labels(&g)["d"], "a \"b\" c");
    assert_eq!(labels(&g)["v"], "1");
}

/// Item 4. BuildKit expands every mount option, the type included, with the
/// step's build args and environment.
#[test]
fn mount_options_are_expanded_with_args_and_env() {
    let df = "FROM alpine\nARG T=cache\nENV D=/c\nRUN --mount=type=$T,target=$D,sharing=${S:-locked} true\n";
    match &mounts(&graph(df))[..] {
        [
            Mount::Cache {
                target, sharing, ..
            },
        ] => {
            assert_eq!(target, "/c");
            assert_eq!(format!("{sharing:?}"), "Locked");
        }
        other => panic!("{other:?}"),
    }
    let df = "FROM alpine\nARG T=cache\nENV D=/c\nRUN --mount=type=$T,target=$D true\n";
    let g = build(df, &[], &[("T", "tmpfs")]).unwrap();
    assert!(matches!(&mounts(&g)[..], [Mount::Tmpfs { target, .. }] if target == "/c"));
}

/// Item 5. EXPOSE splits words after expansion; a host-port mapping is
/// accepted with BuildKit's ExposeInvalidFormat warning.
#[test]
fn expose_splits_expanded_words_and_warns_about_mappings() {
    let g = graph("FROM alpine\nARG P=\"80 443\"\nEXPOSE $P\n");
    assert_eq!(ports(&g), ["443/tcp", "80/tcp"]);
    let g = graph("FROM alpine\nEXPOSE 8080:80\n");
    assert_eq!(ports(&g), ["80/tcp"]);
    assert_eq!(rules(&g), [("ExposeInvalidFormat", 2)]);
    assert_eq!(
        g.checks[0].to_string(),
        "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80' (line 2)"
    );
}

/// Item 6. Heredocs in ONBUILD triggers.
#[test]
fn onbuild_run_takes_a_heredoc() {
    let g = graph("FROM alpine AS base\nONBUILD RUN <<EOF\necho hi\nEOF\nFROM base\n");
    assert_eq!(g.stages[0].config.onbuild, ["RUN <<EOF\necho hi\nEOF"]);
    let argv: Vec<Vec<String>> = g.stages[1]
        .steps
        .iter()
        .filter_map(|id| match &g.steps[*id].kind {
            StepKind::Run(r) => Some(r.argv.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(argv, [["/bin/sh", "-c", "echo hi\n"]]);
}

/// Item 7. BuildKit reads bytes; a Latin-1 byte (even in a comment) builds.
#[test]
fn latin1_bytes_parse_and_read_as_latin1_characters() {
    let bytes = b"# caf\xe9\nFROM alpine\nLABEL a=caf\xe9\n";
    parse_bytes(bytes, "Dockerfile").unwrap();
    let g = graph(&decode(bytes));
    assert_eq!(labels(&g)["a"], "caf\u{e9}");
}

/// Item 8. An escaped quote inside a double-quoted ENV value ends neither
/// the value nor the instruction, with either escape character.
#[test]
fn env_value_with_an_escaped_quote_keeps_the_next_pair() {
    let g = graph("FROM alpine\nENV a=\"x\\\"y\" b=2\n");
    assert_eq!(env(&g)["a"], "x\"y");
    assert_eq!(env(&g)["b"], "2");
    let g = graph("# escape=`\nFROM alpine\nENV a=\"x`\"y\" b=2\n");
    assert_eq!(env(&g)["a"], "x\"y");
    assert_eq!(env(&g)["b"], "2");
}

/// Item 9. An escaped escape character at the end of a line does not
/// continue the line.
#[test]
fn escaped_escape_at_line_end_is_not_a_continuation() {
    let g = graph("FROM alpine\nENV C=x\\\\\nENV D=d\n");
    assert_eq!(env(&g)["C"], "x\\");
    assert_eq!(env(&g)["D"], "d");
    let g = graph("# escape=`\nFROM alpine\nENV C=x``\nENV D=d\n");
    assert_eq!(env(&g)["C"], "x`");
    assert_eq!(env(&g)["D"], "d");
}

/// Item 10. Docker's reference: all pairs of one ENV are expanded with the
/// environment from before the instruction.
#[test]
fn env_pairs_expand_with_the_environment_before_the_instruction() {
    let g = graph("FROM alpine\nENV a=1\nENV a=2 b=$a\n");
    assert_eq!(env(&g)["a"], "2");
    assert_eq!(env(&g)["b"], "1");
    let g = graph("FROM alpine\nENV GOPATH=/go PATH=$GOPATH/bin:$PATH\n");
    assert_eq!(
        env(&g)["PATH"],
        "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

/// Item 11. A port range exposes every port; protocols are lower-cased
/// (with BuildKit's ExposeProtoCasing warning).
#[test]
fn expose_ranges_expand_and_protocols_are_lower_cased() {
    let g = graph("FROM alpine\nEXPOSE 7000-7002 80/TCP\n");
    assert_eq!(ports(&g), ["7000/tcp", "7001/tcp", "7002/tcp", "80/tcp"]);
    assert_eq!(rules(&g), [("ExposeProtoCasing", 2)]);
}

/// Item 12. In an expanded heredoc, an escaped newline is written as the
/// newline; a quoted delimiter keeps the body as written.
#[test]
fn heredoc_escaped_newline_is_a_newline() {
    let inline = |df: &str| {
        graph(df)
            .steps
            .iter()
            .find_map(|s| match &s.kind {
                StepKind::Copy(c) => match &c.sources[0] {
                    CopySource::Inline { content, .. } => Some(content.clone()),
                    _ => None,
                },
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(inline("FROM alpine\nCOPY <<EOF /f\n\\\nEOF\n"), "\n");
    assert_eq!(inline("FROM alpine\nCOPY <<\"EOF\" /f\n\\\nEOF\n"), "\\\n");
}

/// Item 13. `TARGETSTAGE` is the stage being built.
#[test]
fn targetstage_is_the_stage_being_built() {
    let df = "FROM alpine AS build\nARG TARGETSTAGE\nENV S=$TARGETSTAGE\nFROM alpine AS final\nARG TARGETSTAGE\nENV S=$TARGETSTAGE\n";
    assert_eq!(env(&graph(df))["S"], "final");
    let ctx = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        target: Some("build".into()),
        ..BuildOptions::default()
    };
    let g = build_graph(df, &opts, &FsContext::new(ctx.path()), &()).unwrap();
    assert_eq!(env(&g)["S"], "build");
}

/// Item 14. Without from=, BuildKit mounts the `source` subdirectory of
/// the cache.
#[test]
fn cache_mount_source_without_from_mounts_that_subdirectory_of_the_cache() {
    let g = graph("FROM alpine\nRUN --mount=type=cache,target=/c,source=./sub/x/ true\n");
    match &mounts(&g)[..] {
        [Mount::Cache { subdir, from: None, .. }] => assert_eq!(subdir, "sub/x"),
        other => panic!("{other:?}"),
    }
    let whole = graph("FROM alpine\nRUN --mount=type=cache,target=/c true\n");
    assert!(matches!(&mounts(&whole)[..], [Mount::Cache { subdir, .. }] if subdir.is_empty()));
}

/// Item 14: a cache subdirectory that could leave the cache is refused
/// when the graph is built, naming the line.
#[test]
fn cache_mount_source_leaving_the_cache_is_refused_naming_the_line() {
    for src in ["../x", "a/../../x", "/abs"] {
        let e = err(&format!("FROM alpine\nRUN true\nRUN --mount=type=cache,target=/c,source={src} true\n"));
        assert_eq!(
            e,
            format!("Dockerfile:3:1: RUN: cache mount source={src}: must be a path inside the cache (relative, without '..')")
        );
    }
}

/// Item 15. Positional and special parameters expand to nothing; escaped
/// `*` in a pattern is a literal star.
#[test]
fn shell_expansion_corners_follow_buildkit() {
    let g = graph("FROM alpine\nENV a=he$1x b=x$@y c=${@:-d} e=$$ f=${10}z g=$#$?$-$!$*\n");
    let e = env(&g);
    assert_eq!(
        [&e["a"], &e["b"], &e["c"], &e["e"], &e["f"], &e["g"]],
        ["hex", "xy", "d", "", "z", ""]
    );
    let g = graph(
        "FROM alpine\nARG v=a*b*c\nARG u=a/b/c\nENV x=${v%\\*c} y=${v//\\*/-} z=${u//\\//_}\n",
    );
    let e = env(&g);
    assert_eq!([&e["x"], &e["y"], &e["z"]], ["a*b", "a-b-c", "a_b_c"]);
}

/// Item 16. A JSON array with an item that is not a string is an error, as
/// in BuildKit, not shell form.
#[test]
fn json_arrays_must_hold_only_strings() {
    for (inst, col) in [
        ("CMD [\"echo\", [\"x\"]]", 5),
        ("ENTRYPOINT [\"a\", 1]", 12),
        ("RUN [\"a\", 1]", 5),
        ("VOLUME [\"/a\", {\"b\":1}]", 8),
        ("SHELL [\"sh\", null]", 7),
        ("COPY [\"a\", 2, \"/b/\"]", 6),
    ] {
        let kw = inst.split(' ').next().unwrap();
        assert_eq!(
            err(&format!("FROM alpine\n{inst}\n")),
            format!(
                "Dockerfile:2:{col}: {kw}: when using JSON array syntax, arrays must be comprised of strings only"
            )
        );
    }
}

/// Item 17. Variables in `--from` are refused, with BuildKit's messages.
#[test]
fn variables_in_from_are_refused() {
    assert_eq!(
        err("ARG x=a\nFROM alpine AS a\nFROM alpine\nCOPY --from=$x /f /f\n"),
        "Dockerfile:4:1: COPY: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    );
    assert_eq!(
        err("FROM alpine AS a\nFROM alpine\nARG x=a\nRUN --mount=from=${x},target=/m true\n"),
        "Dockerfile:4:5: RUN: 'from' doesn't support variable expansion, define alias stage instead"
    );
}

/// Messages. A misspelt `type` is suggested.
#[test]
fn misspelt_mount_type_option_suggests_type() {
    assert_eq!(
        err("FROM alpine\nRUN --mount=typ=tmpfs,target=/t true\n"),
        "Dockerfile:2:5: RUN: unknown option 'typ' for a bind mount; did you mean 'type'?"
    );
}

/// `check` returns the build checks without building, in line order.
#[test]
fn check_lists_buildkit_warnings_in_line_order() {
    let df = "FROM alpine\nMAINTAINER me\nENV K v\nARG API_TOKEN\nWORKDIR app\nEXPOSE 80/Udp 1.2.3.4:80:80\nCMD a\nCMD b\n";
    let ctx = tempfile::tempdir().unwrap();
    let checks = check(
        df,
        &BuildOptions::default(),
        &FsContext::new(ctx.path()),
        &(),
    )
    .unwrap();
    let shown: Vec<String> = checks.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)",
            "LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 3)",
            "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"API_TOKEN\") (line 4)",
            "WorkdirRelativePath: Relative workdir \"app\" can have unexpected results if the base image changes (line 5)",
            "ExposeProtoCasing: Defined protocol '80/Udp' in EXPOSE instruction should be lowercase (line 6)",
            "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found '1.2.3.4:80:80' (line 6)",
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 7)",
            "MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used (line 7)",
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 8)",
        ]
    );
    assert_eq!(
        checks[0].url(),
        "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    );
}
