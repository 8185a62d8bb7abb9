//! Property: for generated Dockerfiles — every instruction and flag, random
//! keyword case, indentation, line continuations, comments and blank lines —
//! parse → print canonical → parse gives the same syntax tree, and printing
//! is stable.

use proptest::prelude::*;
use rbk_dockerfile::{BuildOptions, FsContext, build_graph, parse, print};

/// `text` parsed, and what its printed form parses back to.
fn reprinted(text: &str) -> (rbk_dockerfile::Dockerfile, rbk_dockerfile::Dockerfile) {
    let df = parse(text, "Dockerfile").unwrap();
    let again = parse(&print(&df), "Dockerfile").unwrap();
    (df, again)
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,7}"
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..4).prop_map(|v| format!("/{}", v.join("/")))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        word(),
        "[a-z ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        "[a-z]{1,5}".prop_map(|s| format!("${{{s}:-x}}")),
        "[a-z]{1,5}".prop_map(|s| format!("'${s}'")),
    ]
}

fn json_list() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z/-][a-z $/-]{0,5}", 1..4)
        .prop_map(|v| serde_json::to_string(&v).unwrap())
}

fn mount() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            path(),
            word(),
            prop::sample::select(vec!["shared", "private", "locked"])
        )
            .prop_map(|(t, id, s)| format!("--mount=type=cache,target={t},id={id},sharing={s}")),
        (path(), word()).prop_map(|(t, s)| format!("--mount=type=bind,source={s},target={t},rw")),
        (path(), word()).prop_map(|(t, f)| format!("--mount=type=bind,from={f},src=/x,dst={t}")),
        path().prop_map(|t| format!("--mount=type=tmpfs,target={t},size=10m")),
        word().prop_map(|id| format!("--mount=type=secret,id={id},required,mode=0400")),
        word().prop_map(|id| format!("--mount=type=secret,id={id},env=TOKEN")),
        Just("--mount=type=ssh".to_string()),
    ]
}

fn copy_flags(add: bool) -> impl Strategy<Value = Vec<String>> {
    let mut opts: Vec<BoxedStrategy<String>> = vec![
        word().prop_map(|w| format!("--chown={w}:{w}")).boxed(),
        Just("--chmod=0755".to_string()).boxed(),
        Just("--link".to_string()).boxed(),
        word().prop_map(|w| format!("--exclude=*.{w}")).boxed(),
    ];
    if add {
        opts.push(Just("--checksum=sha256:abcd".to_string()).boxed());
        opts.push(Just("--keep-git-dir".to_string()).boxed());
        opts.push(Just("--unpack=false".to_string()).boxed());
    } else {
        opts.push(word().prop_map(|w| format!("--from={w}")).boxed());
        opts.push(Just("--parents".to_string()).boxed());
    }
    prop::collection::vec(prop::strategy::Union::new(opts), 0..4).prop_map(|flags| {
        // Each flag once, except --exclude, which repeats.
        let mut seen = std::collections::BTreeSet::new();
        flags
            .into_iter()
            .filter(|f| {
                f.starts_with("--exclude") || seen.insert(f.split('=').next().unwrap().to_string())
            })
            .collect()
    })
}

/// One instruction as a list of tokens (the first is the keyword), plus any
/// heredoc body lines that follow it.
fn instruction() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    let none = Vec::<String>::new;
    prop_oneof![
        (word(), prop::option::of(word()), prop::option::of(word())).prop_map(
            move |(img, plat, alias)| {
                let mut t = vec!["FROM".to_string()];
                if let Some(p) = plat {
                    t.push(format!("--platform=linux/{p}"));
                }
                t.push(img);
                if let Some(a) = alias {
                    t.push("AS".into());
                    t.push(a);
                }
                (t, none())
            }
        ),
        (
            prop::collection::vec(mount(), 0..3),
            prop::option::of(prop::sample::select(vec!["none", "host", "default"])),
            prop::collection::vec(value(), 1..5)
        )
            .prop_map(move |(m, n, cmd)| {
                let mut t = vec!["RUN".to_string()];
                t.extend(m);
                if let Some(n) = n {
                    t.push(format!("--network={n}"));
                }
                t.extend(cmd);
                (t, none())
            }),
        json_list().prop_map(move |j| (vec!["RUN".into(), j], none())),
        (
            prop::collection::vec("[a-z $\"']{0,10}", 0..4),
            prop::bool::ANY
        )
            .prop_map(|(body, dash)| {
                let marker = if dash { "<<-EOF" } else { "<<EOF" };
                let mut lines: Vec<String> = body
                    .iter()
                    .map(|l| if dash { format!("\t{l}") } else { l.clone() })
                    .collect();
                lines.push("EOF".into());
                (vec!["RUN".into(), marker.into()], lines)
            }),
        (
            prop::bool::ANY,
            copy_flags(false),
            prop::collection::vec(word(), 1..3),
            path()
        )
            .prop_map(move |(json, f, srcs, dest)| {
                let mut t = vec!["COPY".to_string()];
                t.extend(f);
                if json {
                    let mut all = srcs.clone();
                    all.push(format!("{dest}/"));
                    t.push(serde_json::to_string(&all).unwrap());
                } else {
                    t.extend(srcs);
                    t.push(format!("{dest}/"));
                }
                (t, none())
            }),
        (copy_flags(true), word(), path()).prop_map(move |(f, s, d)| {
            let mut t = vec!["ADD".to_string()];
            t.extend(f);
            t.push(format!("https://example.com/{s}"));
            t.push(d);
            (t, none())
        }),
        (path(), "[a-z ]{0,12}").prop_map(|(d, body)| (
            vec!["COPY".into(), "<<'DATA'".into(), d],
            vec![body, "DATA".into()]
        )),
        prop::collection::vec((word(), value()), 1..4).prop_map(move |kv| {
            let mut t = vec!["ENV".to_string()];
            t.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
            (t, none())
        }),
        (word(), prop::collection::vec(word(), 1..3)).prop_map(move |(k, v)| {
            let mut t = vec!["ENV".to_string(), k];
            t.extend(v);
            (t, none())
        }),
        prop::collection::vec((word(), value()), 1..3).prop_map(move |kv| {
            let mut t = vec!["LABEL".to_string()];
            t.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
            (t, none())
        }),
        prop::collection::vec(
            (1u16..65535, prop::sample::select(vec!["", "/tcp", "/udp"])),
            1..3
        )
        .prop_map(move |p| {
            let mut t = vec!["EXPOSE".to_string()];
            t.extend(p.into_iter().map(|(n, pr)| format!("{n}{pr}")));
            (t, none())
        }),
        json_list().prop_map(move |j| (vec!["VOLUME".into(), j], none())),
        prop::collection::vec(path(), 1..3).prop_map(move |p| {
            let mut t = vec!["VOLUME".to_string()];
            t.extend(p);
            (t, none())
        }),
        (
            prop::sample::select(vec!["USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"]),
            word()
        )
            .prop_map(move |(k, w)| (vec![k.to_string(), w], none())),
        prop::collection::vec((word(), prop::option::of(value())), 1..3).prop_map(move |a| {
            let mut t = vec!["ARG".to_string()];
            t.extend(a.into_iter().map(|(n, v)| match v {
                Some(v) => format!("{}={v}", n.replace(['.', '-'], "_")),
                None => n.replace(['.', '-'], "_"),
            }));
            (t, none())
        }),
        prop::collection::vec(value(), 1..3).prop_map(move |c| {
            let mut t = vec!["ONBUILD".to_string(), "RUN".to_string()];
            t.extend(c);
            (t, none())
        }),
        Just((vec!["HEALTHCHECK".to_string(), "NONE".to_string()], none())),
        (
            prop::option::of(1u32..100),
            prop::collection::vec(word(), 1..3)
        )
            .prop_map(move |(r, c)| {
                let mut t = vec!["HEALTHCHECK".to_string(), "--interval=5s".to_string()];
                if let Some(r) = r {
                    t.push(format!("--retries={r}"));
                }
                t.push("CMD".into());
                t.extend(c);
                (t, none())
            }),
        json_list().prop_map(move |j| (vec!["SHELL".into(), j], none())),
        (
            prop::sample::select(vec!["CMD", "ENTRYPOINT"]),
            prop::bool::ANY,
            json_list(),
            prop::collection::vec(value(), 1..3)
        )
            .prop_map(move |(k, json, j, w)| (
                vec![k.to_string(), if json { j } else { w.join(" ") }],
                none()
            )),
    ]
}

/// Layout choices between tokens: a space, several, or a continuation
/// (possibly with a comment or blank line inside it).
fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        " ",
        "   ",
        " \\\n  ",
        " \\\n# inner comment\n  ",
        " \\\n\n  ",
    ])
}

fn random_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

fn dockerfile() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            instruction(),
            prop::collection::vec(separator(), 12),
            any::<u64>(),
            prop::bool::ANY,
        ),
        1..12,
    )
    .prop_map(|insts| {
        let mut out = String::from("# a leading comment\n");
        for ((tokens, body), seps, mask, blank) in insts {
            let mut line = random_case(&tokens[0], mask);
            for (i, t) in tokens[1..].iter().enumerate() {
                line.push_str(seps[i % seps.len()]);
                line.push_str(t);
            }
            out.push_str(&line);
            out.push('\n');
            for b in body {
                out.push_str(&b);
                out.push('\n');
            }
            if blank {
                out.push_str("\n# between instructions\n");
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_print_parse_gives_the_same_tree(text in dockerfile()) {
        let df = parse(&text, "Dockerfile").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let printed = print(&df);
        let again = parse(&printed, "Dockerfile").map_err(|e| TestCaseError::fail(format!("reparse: {e}\n{printed}")))?;
        let insts = |d: &rbk_dockerfile::Dockerfile| d.instructions.iter().map(|l| l.inst.clone()).collect::<Vec<_>>();
        prop_assert_eq!(insts(&df), insts(&again), "printed:\n{}", printed);
        prop_assert_eq!(&print(&again), &printed);
        // And the same graph: both build, with the same keys, or both fail.
        let ctx = tempfile::tempdir().unwrap();
        let opts = BuildOptions::default();
        let build = |t: &str| build_graph(&format!("FROM alpine\n{t}"), &opts, &FsContext::new(ctx.path()), &());
        match (build(&text), build(&printed)) {
            (Ok(a), Ok(b)) => {
                let keys = |g: &rbk_dockerfile::Graph| g.steps.iter().map(|s| (s.key, s.kind.clone())).collect::<Vec<_>>();
                prop_assert_eq!(keys(&a), keys(&b));
                prop_assert_eq!(a.stages.iter().map(|s| s.key).collect::<Vec<_>>(), b.stages.iter().map(|s| s.key).collect::<Vec<_>>());
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "one built, the other did not: {:?} / {:?}\n{}", a.err(), b.err(), printed),
        }
    }
}

#[test]
fn arguments_that_look_like_flags_survive_printing() {
    let text = "FROM alpine\nRUN -- --version\nCMD -- --help\nONBUILD RUN -- --x\n";
    let df = parse(text, "Dockerfile").unwrap();
    let printed = print(&df);
    assert_eq!(
        printed,
        "FROM alpine\nRUN -- --version\nCMD -- --help\nONBUILD RUN -- --x\n"
    );
    assert_eq!(
        parse(&printed, "Dockerfile").unwrap().instructions[1].inst,
        df.instructions[1].inst
    );
}

#[test]
fn a_word_list_that_would_read_back_as_json_keeps_its_words() {
    let text = "FROM alpine\nVOLUME [\"\u{b}var/lib\"]\nVOLUME [\"a\",\u{b}\"b\"]\n";
    let (df, again) = reprinted(text);
    assert_eq!(df.instructions[1].inst, again.instructions[1].inst);
    assert_eq!(df.instructions[2].inst, again.instructions[2].inst);
}

#[test]
fn a_mount_value_ending_in_the_escape_character_survives_printing() {
    let text =
        "FROM alpine\nRUN --mount=type=secret,id=x,target=/run/a[\\,required=true cat /run/a\n";
    let (df, again) = reprinted(text);
    assert_eq!(df.instructions[1].inst, again.instructions[1].inst);
}

#[test]
fn a_heredoc_line_ending_in_carriage_return_survives_printing() {
    let text = "FROM alpine\nRUN <<EOT\nab\r\r\nEOT\n";
    let (df, again) = reprinted(text);
    assert_eq!(df.instructions[1].inst, again.instructions[1].inst);
}
