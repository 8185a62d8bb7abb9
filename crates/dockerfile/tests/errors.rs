//! Bad input: every error names the file, line and column, the
//! instruction, and what was expected. The exact messages are the
//! specification.

mod support;

use rbk_dockerfile::{BuildOptions, FsContext, build_graph, parse_bytes};
use support::graph;


/// Builds `df` against a context holding `a.txt` and `b.txt` and returns the
/// error message.
fn err(df: &str, target: Option<&str>) -> String {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.txt"), "a").unwrap();
    std::fs::write(ctx.path().join("b.txt"), "b").unwrap();
    let opts = BuildOptions {
        target: target.map(str::to_string),
        ..BuildOptions::default()
    };
    match build_graph(df, &opts, &FsContext::new(ctx.path()), &()) {
        Ok(_) => panic!("expected an error for:\n{df}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_instruction_suggests_the_nearest() {
    assert_eq!(
        err("FROM alpine\nRUNN echo\n", None),
        "Dockerfile:2:1: unknown instruction 'RUNN'; did you mean RUN?"
    );
}

#[test]
fn unknown_flag_suggests_the_nearest() {
    assert_eq!(
        err("FROM alpine\nCOPY --chmodd=755 a /a\n", None),
        "Dockerfile:2:6: COPY: unknown flag --chmodd for COPY; did you mean --chmod?"
    );
}

#[test]
fn flag_on_an_instruction_without_flags() {
    assert_eq!(
        err("FROM alpine\nENV --x=1 A=b\n", None),
        "Dockerfile:2:5: ENV: unknown flag --x for ENV; ENV takes no flags"
    );
}

#[test]
fn string_flag_without_value() {
    assert_eq!(
        err("FROM alpine\nCOPY --chown a /a\n", None),
        "Dockerfile:2:6: COPY: flag --chown needs a value: --chown=VALUE"
    );
}

#[test]
fn boolean_flag_with_a_bad_value() {
    assert_eq!(
        err("FROM alpine\nCOPY --link=maybe a /a\n", None),
        "Dockerfile:2:6: COPY: flag --link=maybe is not a boolean; expected true or false"
    );
}

#[test]
fn flag_given_twice() {
    assert_eq!(
        err("FROM alpine\nCOPY --chown=a --chown=b a /a\n", None),
        "Dockerfile:2:16: COPY: flag --chown given twice; it may be given once"
    );
}

#[test]
fn from_with_wrong_arguments() {
    assert_eq!(
        err("FROM alpine AS\n", None),
        "Dockerfile:1:6: FROM: expected 'FROM image' or 'FROM image AS name'"
    );
}

#[test]
fn invalid_stage_name() {
    assert_eq!(
        err("FROM alpine AS 1build\n", None),
        "Dockerfile:1:6: FROM: invalid stage name '1build'; expected a letter followed by letters, digits, '-', '_' or '.'"
    );
}

#[test]
fn stage_names_are_case_insensitive() {
    let g = graph("FROM alpine AS Build\nFROM BUILD\n").unwrap();
    assert_eq!(g.stages[0].name.as_deref(), Some("build"));
    assert_eq!(
        g.stages[1].deps.iter().copied().collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn duplicate_stage_name() {
    assert_eq!(
        err("FROM alpine AS a\nFROM alpine AS a\n", None),
        "Dockerfile:2:1: FROM: duplicate stage name 'a'; stage names must be unique"
    );
}

#[test]
fn no_from() {
    assert_eq!(
        err("# nothing\nARG A=1\n", None),
        "Dockerfile:2:1: no FROM instruction; a Dockerfile needs at least one stage"
    );
}

#[test]
fn instruction_before_from() {
    assert_eq!(
        err("ARG A=1\nRUN echo\nFROM alpine\n", None),
        "Dockerfile:2:1: RUN: RUN before the first FROM; only ARG may come before FROM"
    );
}

#[test]
fn unterminated_heredoc() {
    assert_eq!(
        err("FROM alpine\nRUN <<EOF\necho hi\n", None),
        "Dockerfile:2:1: RUN: heredoc <<EOF is not terminated; expected a line 'EOF' before the end of the file"
    );
}

#[test]
fn invalid_escape_directive() {
    assert_eq!(
        err("# escape=x\nFROM alpine\n", None),
        "Dockerfile:1:1: invalid escape directive 'x'; expected '\\' or '`'"
    );
}

#[test]
fn directive_given_twice() {
    assert_eq!(
        err("# escape=`\n# escape=\\\nFROM alpine\n", None),
        "Dockerfile:2:1: parser directive 'escape' given twice; each directive may appear once"
    );
}

#[test]
fn run_without_command() {
    assert_eq!(
        err("FROM alpine\nRUN --network=none\n", None),
        "Dockerfile:2:1: RUN: expected a command to run"
    );
}

#[test]
fn run_bad_network() {
    assert_eq!(
        err("FROM alpine\nRUN --network=bridge true\n", None),
        "Dockerfile:2:1: RUN: invalid --network=bridge; expected default, none or host"
    );
}

#[test]
fn run_bad_security() {
    assert_eq!(
        err("FROM alpine\nRUN --security=root true\n", None),
        "Dockerfile:2:1: RUN: invalid --security=root; expected sandbox or insecure"
    );
}

#[test]
fn mount_unknown_type() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=volume,target=/x true\n",
            None
        ),
        "Dockerfile:2:5: RUN: unknown mount type 'volume'; expected bind, cache, tmpfs, secret or ssh"
    );
}

#[test]
fn mount_unknown_option_suggests() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=cache,target=/x,sharng=locked true\n",
            None
        ),
        "Dockerfile:2:5: RUN: unknown option 'sharng' for a cache mount; did you mean 'sharing'?"
    );
}

#[test]
fn mount_option_of_another_kind() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=tmpfs,target=/x,id=foo true\n",
            None
        ),
        "Dockerfile:2:5: RUN: unknown option 'id' for a tmpfs mount; expected one of type, target, size"
    );
}

/// BuildKit mounts at the working directory when target= is absent, and
/// refuses the root as a mount target.
#[test]
fn mount_without_target_in_the_root_directory() {
    assert_eq!(
        err("FROM alpine\nRUN --mount=type=cache,id=x true\n", None),
        "Dockerfile:2:1: RUN: invalid mount target \"/\"; set target=PATH (without it the mount goes on the working directory, here /)"
    );
}

#[test]
fn mount_bad_sharing() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=cache,target=/x,sharing=exclusive true\n",
            None
        ),
        "Dockerfile:2:5: RUN: invalid sharing=exclusive; expected shared, private or locked"
    );
}

#[test]
fn mount_bad_mode() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=cache,target=/x,mode=0999 true\n",
            None
        ),
        "Dockerfile:2:1: RUN: invalid mode=0999 in --mount; expected an octal mode like 0755"
    );
}

#[test]
fn mount_bad_uid() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=cache,target=/x,uid=root true\n",
            None
        ),
        "Dockerfile:2:1: RUN: invalid uid=root in --mount; expected a number"
    );
}

#[test]
fn secret_without_id_or_target() {
    assert_eq!(
        err("FROM alpine\nRUN --mount=type=secret,required true\n", None),
        "Dockerfile:2:1: RUN: secret mount needs id=ID or target=PATH"
    );
}

#[test]
fn shell_not_json() {
    assert_eq!(
        err("FROM alpine\nSHELL /bin/bash -c\n", None),
        "Dockerfile:2:7: SHELL: expected a JSON array of strings, e.g. SHELL [\"/bin/bash\", \"-c\"]"
    );
}

#[test]
fn copy_with_one_argument() {
    assert_eq!(
        err("FROM alpine\nCOPY onlyone\n", None),
        "Dockerfile:2:1: COPY: COPY requires at least two arguments (sources and a destination), but 1 given"
    );
}

#[test]
fn copy_of_a_url() {
    assert_eq!(
        err("FROM alpine\nCOPY https://example.com/x /x\n", None),
        "Dockerfile:2:1: COPY: COPY cannot fetch 'https://example.com/x'; use ADD for URLs and git repositories"
    );
}

#[test]
fn copy_source_outside_context() {
    assert_eq!(
        err("FROM alpine\nCOPY ../secret /x\n", None),
        "Dockerfile:2:1: COPY: source '../secret' is outside the build context"
    );
}

#[test]
fn copy_source_not_found() {
    assert_eq!(
        err("FROM alpine\nCOPY missing.txt /x\n", None),
        "Dockerfile:2:1: COPY: source 'missing.txt' not found in the build context (or excluded by .dockerignore)"
    );
}

#[test]
fn copy_several_sources_to_a_file() {
    assert_eq!(
        err("FROM alpine\nCOPY a.txt b.txt /dest\n", None),
        "Dockerfile:2:1: COPY: with more than one source the destination must be a directory ending in '/', not '/dest'"
    );
}

#[test]
fn checksum_on_a_local_source() {
    assert_eq!(
        err("FROM alpine\nADD --checksum=sha256:abc a.txt /a\n", None),
        "Dockerfile:2:1: ADD: --checksum can only be used with HTTP(S) and git sources"
    );
}

#[test]
fn copy_from_unknown_stage_suggests() {
    assert_eq!(
        err(
            "FROM alpine AS builder\nFROM alpine\nCOPY --from=buidler /x /x\n",
            None
        ),
        "Dockerfile:3:1: COPY: unknown stage 'buidler'; did you mean 'builder'? (to use an image, name it with a tag: 'buidler:latest')"
    );
}

#[test]
fn copy_from_stage_index_out_of_range() {
    assert_eq!(
        err("FROM alpine\nCOPY --from=3 /x /x\n", None),
        "Dockerfile:2:1: COPY: stage index 3 does not name an earlier stage (this is stage 0)"
    );
}

#[test]
fn copy_from_itself() {
    assert_eq!(
        err("FROM alpine AS me\nCOPY --from=me /x /x\n", None),
        "Dockerfile:2:1: COPY: stage 'me' cannot copy or mount from itself"
    );
}

#[test]
fn stages_in_a_cycle() {
    assert_eq!(
        err(
            "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n",
            Some("b")
        ),
        "Dockerfile:2:1: circular dependency between stages: b -> a -> b"
    );
}

#[test]
fn target_not_found_suggests() {
    assert_eq!(
        err("FROM alpine AS build\nFROM alpine AS test\n", Some("tset")),
        "Dockerfile:1:1: target stage 'tset' not found; stages are: build, test"
    );
}

#[test]
fn required_variable_unset() {
    assert_eq!(
        err(
            "FROM alpine\nENV A=\"${MISSING:?set MISSING with --build-arg}\"\n",
            None
        ),
        "Dockerfile:2:1: ENV: MISSING: set MISSING with --build-arg"
    );
}

#[test]
fn bad_substitution() {
    assert_eq!(
        err("FROM alpine\nENV A=${}\n", None),
        "Dockerfile:2:1: ENV: bad substitution: '${}' is not a variable name"
    );
}

#[test]
fn unterminated_quote() {
    assert_eq!(
        err("FROM alpine\nENV A=\"open\n", None),
        "Dockerfile:2:1: ENV: unexpected end of statement while looking for matching double-quote"
    );
}

#[test]
fn empty_base_image() {
    assert_eq!(
        err("ARG BASE\nFROM $BASE\n", None),
        "Dockerfile:2:1: FROM: base image '$BASE' expands to an empty string"
    );
}

#[test]
fn invalid_port() {
    assert_eq!(
        err("FROM alpine\nEXPOSE http\n", None),
        "Dockerfile:2:1: EXPOSE: invalid port 'http'; expected PORT[-PORT][/tcp|/udp|/sctp]"
    );
}

#[test]
fn invalid_healthcheck_duration() {
    assert_eq!(
        err("FROM alpine\nHEALTHCHECK --interval=10 CMD true\n", None),
        "Dockerfile:2:1: HEALTHCHECK: invalid --interval=10; expected a duration like 30s or 1m30s"
    );
}

#[test]
fn invalid_healthcheck_retries() {
    assert_eq!(
        err("FROM alpine\nHEALTHCHECK --retries=many CMD true\n", None),
        "Dockerfile:2:1: HEALTHCHECK: invalid --retries=many; expected a whole number"
    );
}

#[test]
fn healthcheck_without_cmd() {
    assert_eq!(
        err("FROM alpine\nHEALTHCHECK curl localhost\n", None),
        "Dockerfile:2:13: HEALTHCHECK: expected 'HEALTHCHECK [flags] CMD command' or 'HEALTHCHECK NONE'"
    );
}

#[test]
fn onbuild_onbuild() {
    assert_eq!(
        err("FROM alpine\nONBUILD ONBUILD RUN true\n", None),
        "Dockerfile:2:9: ONBUILD: ONBUILD ONBUILD is not allowed"
    );
}

#[test]
fn onbuild_from() {
    assert_eq!(
        err("FROM alpine\nONBUILD FROM alpine\n", None),
        "Dockerfile:2:9: ONBUILD: FROM is not allowed as an ONBUILD trigger"
    );
}

#[test]
fn invalid_chmod() {
    assert_eq!(
        err("FROM alpine\nCOPY --chmod=999 a.txt /a\n", None),
        "Dockerfile:2:1: COPY: invalid --chmod=999; expected an octal mode like 0755 or a symbolic one like u+x"
    );
}

#[test]
fn env_without_value() {
    assert_eq!(
        err("FROM alpine\nENV LONELY\n", None),
        "Dockerfile:2:5: ENV: expected a value after 'LONELY'; use ENV name=value"
    );
}

#[test]
fn env_pair_without_equals() {
    assert_eq!(
        err("FROM alpine\nENV A=1 B\n", None),
        "Dockerfile:2:5: ENV: expected name=value, found 'B' without '='"
    );
}

#[test]
fn arg_with_bad_name() {
    assert_eq!(
        err("FROM alpine\nARG 1abc=2\n", None),
        "Dockerfile:2:5: ARG: invalid ARG name '1abc'; expected letters, digits and '_'"
    );
}

/// BuildKit reads bytes: text that is not UTF-8 parses, each stray byte
/// read as its Latin-1 character, and errors after it keep their line.
#[test]
fn text_that_is_not_utf8_keeps_its_lines() {
    let e = parse_bytes(b"FROM alpine\nRUN echo \xff\xfe\nRUNN x\n", "Dockerfile").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:3:1: unknown instruction 'RUNN'; did you mean RUN?"
    );
}

#[test]
fn a_dockerfile_larger_than_the_limit_is_refused() {
    let big = format!("FROM alpine\nRUN echo {}\n", "x".repeat(9 << 20));
    assert_eq!(
        err(&big, None),
        format!(
            "Dockerfile:1:1: Dockerfile is {} bytes; at most 8388608 bytes are accepted",
            big.len()
        )
    );
}

#[test]
fn a_huge_line_parses_in_linear_time() {
    let long = "x".repeat(2 << 20);
    let env = "y".repeat(512 << 10);
    let df = format!("FROM alpine\nENV A={env}\nRUN echo {long} \\\n  {long}\n");
    let g = graph(&df).unwrap();
    assert_eq!(g.steps.len(), 2);
}

#[test]
fn deeply_nested_substitutions_are_an_error_not_a_stack_overflow() {
    let deep = "${A:-".repeat(100_000) + &"}".repeat(100_000);
    let e = err(&format!("FROM alpine\nENV B={deep}\n"), None);
    assert_eq!(
        e,
        "Dockerfile:2:1: ENV: variable substitutions nested deeper than 32"
    );
}

#[test]
fn deeply_nested_json_falls_back_to_shell_form() {
    let deep = "[".repeat(100_000);
    let g = graph(&format!("FROM alpine\nRUN {deep}\n")).unwrap();
    let rbk_dockerfile::StepKind::Run(r) = &g.steps[1].kind else {
        panic!("not a RUN")
    };
    assert_eq!(r.argv[2].len(), 100_000);
}

#[test]
fn exponential_variable_growth_is_an_error() {
    let mut df = String::from("FROM alpine\nENV A=0123456789abcdef\n");
    for _ in 0..20 {
        df.push_str("ENV A=$A$A\n");
    }
    assert_eq!(
        err(&df, None),
        "Dockerfile:19:1: ENV: expanded value is larger than 1048576 bytes"
    );
}

#[test]
fn binary_garbage_is_an_error() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(parse_bytes(&garbage, "Dockerfile").is_err());
    let lossy = String::from_utf8_lossy(&garbage).into_owned();
    assert!(graph(&lossy).is_err());
}

#[test]
fn a_long_chain_of_stages_is_handled_without_recursion() {
    let mut df = String::from("FROM alpine AS s0\n");
    for i in 1..2000 {
        df.push_str(&format!(
            "FROM s{} AS s{i}\nCOPY --from=s{} /x /x{i}\n",
            i - 1,
            i - 1
        ));
    }
    let g = graph(&df).unwrap();
    assert_eq!(g.stages.iter().filter(|s| s.needed).count(), 2000);
}

#[test]
fn pattern_operators_on_long_values_are_refused() {
    let long = "a".repeat(1500);
    assert_eq!(
        err(
            &format!("FROM alpine\nENV A={long}\nENV B=${{A//a*b/x}}\n"),
            None
        ),
        "Dockerfile:3:1: ENV: value is longer than 1024 bytes; pattern replacement refused"
    );
}

#[test]
fn pattern_operators_stay_fast_on_the_longest_accepted_values() {
    let long = "a".repeat(1000);
    let df = format!(
        "FROM alpine\nENV A={long}\nENV B=${{A//*a*a*a*b/x}} C=${{A##*a*b}} D=${{A%%a*a*b}}\n"
    );
    let g = graph(&df).unwrap();
    assert_eq!(g.stages[0].config.env[1].1.len(), 1000);
}

#[test]
fn mount_type_given_twice() {
    assert_eq!(
        err(
            "FROM alpine\nRUN --mount=type=cache,target=/c,type=$T true\n",
            None
        ),
        "Dockerfile:2:5: RUN: mount option 'type' given twice"
    );
}

#[test]
fn mount_option_unknown_to_every_type_with_a_type_from_a_variable() {
    assert_eq!(
        err(
            "FROM alpine\nARG T=cache\nRUN --mount=type=$T,target=/c,colour=red true\n",
            None
        ),
        "Dockerfile:3:5: RUN: unknown mount option 'colour'"
    );
}
