//! Cache keys: what changes them and, as importantly, what must not.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rbk_dockerfile::{BuildOptions, Dockerignore, FsContext, Graph, Key, build_graph};

const MULTI: &str = r#"FROM alpine:3.19 AS a
RUN echo before
COPY app/ /app/
RUN echo after
COPY tool.sh /tool.sh

FROM debian:bookworm AS b
COPY other.txt /other.txt
RUN echo b-before
COPY --from=a /app /from-a
RUN echo b-after

FROM alpine:3.19 AS unrelated
ARG FLAVOUR
COPY other.txt /o
RUN echo $FLAVOUR

FROM scratch
COPY --from=b /from-a /final
COPY --from=unrelated /o /o
"#;

/// Writes the test context with the given permission bits and mtime, as a
/// checkout under a different umask at a different time would.
fn checkout(root: &Path, file_mode: u32, exec_mode: u32, dir_mode: u32, mtime: SystemTime) {
    let files: &[(&str, &[u8], bool)] = &[
        ("app/main.py", b"print('hello')\n", false),
        ("app/lib/util.py", b"X = 1\n", false),
        ("tool.sh", b"#!/bin/sh\necho tool\n", true),
        ("other.txt", b"other\n", false),
    ];
    for (p, content, exec) in files {
        let full = root.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        std::fs::set_permissions(
            &full,
            std::fs::Permissions::from_mode(if *exec { exec_mode } else { file_mode }),
        )
        .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&full)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    std::os::unix::fs::symlink("main.py", root.join("app/link.py")).unwrap();
    for d in ["app", "app/lib"] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(dir_mode)).unwrap();
    }
}

fn graph(dockerfile: &str, ctx: &Path, opts: &BuildOptions) -> Graph {
    build_graph(dockerfile, opts, &FsContext::new(ctx), &()).unwrap_or_else(|e| panic!("{e}"))
}

/// (stage, instruction) → key, for every step.
fn keys(g: &Graph) -> BTreeMap<(usize, String), Key> {
    g.steps
        .iter()
        .map(|s| ((s.stage, s.instruction.clone()), s.key))
        .collect()
}

fn default_ctx() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    checkout(
        d.path(),
        0o644,
        0o755,
        0o755,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    d
}

#[test]
fn same_context_checked_out_with_different_umask_and_mtimes_gives_same_keys() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    // umask 022, an old mtime / umask 077, now / umask 002, a future mtime
    checkout(
        one.path(),
        0o644,
        0o755,
        0o755,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    checkout(two.path(), 0o600, 0o700, 0o700, SystemTime::now());
    let three = tempfile::tempdir().unwrap();
    checkout(
        three.path(),
        0o664,
        0o775,
        0o775,
        SystemTime::now() + Duration::from_secs(86_400),
    );
    let opts = BuildOptions::default();
    let g1 = graph(MULTI, one.path(), &opts);
    let g2 = graph(MULTI, two.path(), &opts);
    let g3 = graph(MULTI, three.path(), &opts);
    assert_eq!(keys(&g1), keys(&g2));
    assert_eq!(keys(&g1), keys(&g3));
    assert_eq!(g1.stages[g1.target].key, g3.stages[g3.target].key);
}

#[test]
fn changing_one_byte_of_a_copied_file_changes_exactly_that_copy_and_what_follows() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let before = keys(&graph(MULTI, ctx.path(), &opts));
    std::fs::write(ctx.path().join("app/lib/util.py"), b"X = 2\n").unwrap();
    let after = keys(&graph(MULTI, ctx.path(), &opts));
    let changed: Vec<(usize, &str)> = before
        .iter()
        .filter(|(k, v)| after[*k] != **v)
        .map(|((s, i), _)| (*s, i.as_str()))
        .collect();
    assert_eq!(
        changed,
        vec![
            (0, "COPY app/ /app/"),
            (0, "COPY tool.sh /tool.sh"),
            (0, "RUN echo after"),
            (1, "COPY --from=a /app /from-a"),
            (1, "RUN echo b-after"),
            (3, "COPY --from=b /from-a /final"),
            (3, "COPY --from=unrelated /o /o"),
        ]
    );
}

#[test]
fn an_arg_the_stage_does_not_declare_does_not_change_its_keys() {
    let ctx = default_ctx();
    let mut one = BuildOptions::default();
    one.build_args.insert("FLAVOUR".into(), "vanilla".into());
    let mut two = one.clone();
    two.build_args.insert("FLAVOUR".into(), "chocolate".into());
    let (g1, g2) = (
        graph(MULTI, ctx.path(), &one),
        graph(MULTI, ctx.path(), &two),
    );
    for stage in [0, 1] {
        assert_eq!(
            g1.stages[stage].key, g2.stages[stage].key,
            "stage {stage} does not declare FLAVOUR"
        );
        for (a, b) in g1.stages[stage].steps.iter().zip(&g2.stages[stage].steps) {
            assert_eq!(g1.steps[*a].key, g2.steps[*b].key);
        }
    }
    // The stage that declares it, and the final stage that copies from it, do change.
    assert_ne!(g1.stages[2].key, g2.stages[2].key);
    assert_ne!(g1.stages[3].key, g2.stages[3].key);
}

#[test]
fn the_executable_bit_is_part_of_the_key() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let before = keys(&graph(MULTI, ctx.path(), &opts));
    std::fs::set_permissions(
        ctx.path().join("tool.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let after = keys(&graph(MULTI, ctx.path(), &opts));
    assert_ne!(
        before[&(0, "COPY tool.sh /tool.sh".to_string())],
        after[&(0, "COPY tool.sh /tool.sh".to_string())]
    );
    assert_eq!(
        before[&(0, "RUN echo after".to_string())],
        after[&(0, "RUN echo after".to_string())]
    );
}

#[test]
fn a_symlink_target_is_part_of_the_key() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let before = keys(&graph(MULTI, ctx.path(), &opts));
    std::fs::remove_file(ctx.path().join("app/link.py")).unwrap();
    std::os::unix::fs::symlink("lib/util.py", ctx.path().join("app/link.py")).unwrap();
    let after = keys(&graph(MULTI, ctx.path(), &opts));
    assert_ne!(
        before[&(0, "COPY app/ /app/".to_string())],
        after[&(0, "COPY app/ /app/".to_string())]
    );
}

#[test]
fn renaming_a_copied_file_changes_the_key() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let before = keys(&graph(MULTI, ctx.path(), &opts));
    std::fs::rename(
        ctx.path().join("app/main.py"),
        ctx.path().join("app/main2.py"),
    )
    .unwrap();
    let after = keys(&graph(MULTI, ctx.path(), &opts));
    assert_ne!(
        before[&(0, "COPY app/ /app/".to_string())],
        after[&(0, "COPY app/ /app/".to_string())]
    );
}

#[test]
fn changes_to_dockerignored_files_do_not_change_keys() {
    let ctx = default_ctx();
    let df = "FROM alpine:3.19\nCOPY . /src/\n";
    let opts = BuildOptions {
        dockerignore: Dockerignore::parse("app/lib\n", ".dockerignore").unwrap(),
        ..BuildOptions::default()
    };
    let before = keys(&graph(df, ctx.path(), &opts));
    std::fs::write(ctx.path().join("app/lib/util.py"), b"X = 3\n").unwrap();
    std::fs::write(ctx.path().join("app/lib/new.py"), b"new\n").unwrap();
    assert_eq!(before, keys(&graph(df, ctx.path(), &opts)));
    std::fs::write(ctx.path().join("other.txt"), b"changed\n").unwrap();
    assert_ne!(before, keys(&graph(df, ctx.path(), &opts)));
}

#[test]
fn a_bind_mounted_file_is_keyed_by_content() {
    let ctx = default_ctx();
    let df = "FROM alpine:3.19\nRUN --mount=type=bind,source=other.txt,target=/o cat /o\nRUN echo next\n";
    let opts = BuildOptions::default();
    let before = graph(df, ctx.path(), &opts);
    std::fs::write(ctx.path().join("other.txt"), b"other!\n").unwrap();
    let after = graph(df, ctx.path(), &opts);
    assert_eq!(before.steps[0].key, after.steps[0].key);
    assert_ne!(before.steps[1].key, after.steps[1].key);
    assert_ne!(before.steps[2].key, after.steps[2].key);
}

#[test]
fn cache_mount_spec_is_in_the_key_and_ids_are_scoped_to_the_namespace() {
    let ctx = default_ctx();
    let k = |df: &str, ns: &str| {
        let opts = BuildOptions {
            namespace: ns.into(),
            ..BuildOptions::default()
        };
        graph(df, ctx.path(), &opts).steps[1].key
    };
    let base = "FROM alpine:3.19\nRUN --mount=type=cache,target=/c,id=x true\n";
    assert_eq!(k(base, "team-a"), k(base, "team-a"));
    assert_ne!(k(base, "team-a"), k(base, "team-b"));
    assert_ne!(
        k(base, "team-a"),
        k(
            "FROM alpine:3.19\nRUN --mount=type=cache,target=/c,id=y true\n",
            "team-a"
        )
    );
    assert_ne!(
        k(base, "team-a"),
        k(
            "FROM alpine:3.19\nRUN --mount=type=cache,target=/c,id=x,sharing=locked true\n",
            "team-a"
        )
    );
}

#[test]
fn the_base_image_digest_from_the_resolver_keys_every_step() {
    let ctx = default_ctx();
    let df = "FROM alpine:3.19\nRUN echo hi\n";
    let opts = BuildOptions::default();
    let with = |d: &str| {
        let r: BTreeMap<String, String> = [("alpine:3.19".to_string(), d.to_string())].into();
        build_graph(df, &opts, &FsContext::new(ctx.path()), &r).unwrap()
    };
    let g1 = with("sha256:1111");
    let g2 = with("sha256:2222");
    assert_ne!(g1.steps[0].key, g2.steps[0].key);
    assert_ne!(g1.steps[1].key, g2.steps[1].key);
    assert_eq!(with("sha256:1111").steps[1].key, g1.steps[1].key);
}

#[test]
fn proxy_build_args_reach_the_command_but_not_the_key() {
    let ctx = default_ctx();
    let df = "FROM alpine:3.19\nRUN wget http://example.com/\n";
    let mut opts = BuildOptions::default();
    let before = graph(df, ctx.path(), &opts);
    opts.build_args
        .insert("HTTPS_PROXY".into(), "http://proxy:3128".into());
    let after = graph(df, ctx.path(), &opts);
    assert_eq!(before.steps[1].key, after.steps[1].key);
    let rbk_dockerfile::StepKind::Run(r) = &after.steps[1].kind else {
        panic!("not a RUN")
    };
    assert_eq!(
        r.proxy_env,
        vec![("HTTPS_PROXY".to_string(), "http://proxy:3128".to_string())]
    );
}

#[test]
fn comments_case_and_line_breaks_do_not_change_keys() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let a = graph(
        "FROM alpine:3.19\nRUN apk add gcc make\nCOPY other.txt /o\n",
        ctx.path(),
        &opts,
    );
    let b = graph(
        "# a comment\nfrom alpine:3.19\n\nrun apk add gcc \\\n  # inline comment\nmake\ncopy   other.txt   /o\n",
        ctx.path(),
        &opts,
    );
    let ks = |g: &Graph| g.steps.iter().map(|s| s.key).collect::<Vec<_>>();
    // `RUN apk add gcc \` + `make` joins to "apk add gcc make": same command, same key.
    assert_eq!(ks(&a)[0], ks(&b)[0]);
    assert_eq!(ks(&a)[1], ks(&b)[1]);
    assert_eq!(ks(&a)[2], ks(&b)[2]);
}

#[test]
fn an_env_change_changes_later_run_keys_and_the_image_key() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let a = graph(
        "FROM alpine:3.19\nRUN one\nENV A=1\nRUN two\n",
        ctx.path(),
        &opts,
    );
    let b = graph(
        "FROM alpine:3.19\nRUN one\nENV A=2\nRUN two\n",
        ctx.path(),
        &opts,
    );
    assert_eq!(a.steps[1].key, b.steps[1].key);
    assert_ne!(a.steps[2].key, b.steps[2].key);
    assert_ne!(a.stages[0].key, b.stages[0].key);
}

#[test]
fn renaming_or_reordering_stages_keeps_the_keys() {
    let ctx = default_ctx();
    let opts = BuildOptions::default();
    let a = "FROM alpine:3.19 AS build\nRUN make\nFROM build AS test\nRUN make test\nFROM scratch\nCOPY --from=build /out /out\nRUN --mount=type=bind,from=test,target=/t true\n";
    let b = "FROM debian:12 AS docs\nRUN mkdocs\nFROM alpine:3.19 AS compile\nRUN make\nFROM compile AS check\nRUN make test\nFROM scratch\nCOPY --from=compile /out /out\nRUN --mount=type=bind,from=check,target=/t true\n";
    let (ga, gb) = (graph(a, ctx.path(), &opts), graph(b, ctx.path(), &opts));
    assert_eq!(ga.stages[ga.target].key, gb.stages[gb.target].key);
    let last = |g: &Graph| g.steps.last().unwrap().key;
    assert_eq!(last(&ga), last(&gb));
}

/// A resolver that knows digests and image environments.
struct Images;

impl rbk_dockerfile::BaseResolver for Images {
    fn resolve(&self, reference: &str, _: Option<&str>) -> Option<String> {
        Some(format!("sha256:{}", reference.len()))
    }

    fn env(&self, reference: &str, _: Option<&str>) -> Option<Vec<(String, String)>> {
        (reference == "golang:1.22").then(|| {
            vec![
                ("PATH".to_string(), "/usr/local/go/bin:/usr/bin".to_string()),
                ("GOPATH".to_string(), "/go".to_string()),
            ]
        })
    }
}

#[test]
fn the_base_image_env_is_seen_by_expansion_and_by_run() {
    let ctx = default_ctx();
    let df = "FROM golang:1.22 AS build\nENV PATH=/opt/bin:$PATH\nRUN go version\nFROM build\nRUN echo $GOPATH\n";
    let g = build_graph(
        df,
        &BuildOptions::default(),
        &FsContext::new(ctx.path()),
        &Images,
    )
    .unwrap();
    let rbk_dockerfile::StepKind::Run(r) = &g.steps[1].kind else {
        panic!("not a RUN")
    };
    assert_eq!(
        r.env,
        vec![
            ("GOPATH".to_string(), "/go".to_string()),
            (
                "PATH".to_string(),
                "/opt/bin:/usr/local/go/bin:/usr/bin".to_string()
            )
        ]
    );
    let rbk_dockerfile::StepKind::Run(r2) = &g.steps[3].kind else {
        panic!("not a RUN")
    };
    assert_eq!(
        r2.env, r.env,
        "a stage based on a stage inherits its full env"
    );
    assert_eq!(
        g.stages[0].config.env,
        vec![(
            "PATH".to_string(),
            "/opt/bin:/usr/local/go/bin:/usr/bin".to_string()
        )]
    );
}

#[test]
fn without_the_image_env_path_expands_to_dockers_default() {
    let ctx = default_ctx();
    let g = graph(
        "FROM python:3.12\nENV PATH=/opt/venv/bin:$PATH\n",
        ctx.path(),
        &BuildOptions::default(),
    );
    assert_eq!(
        g.stages[0].config.env,
        vec![(
            "PATH".to_string(),
            "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                .to_string()
        )]
    );
}
