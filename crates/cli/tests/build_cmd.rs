//! `rbk build` end to end through the binary: exit codes and messages.
//! (The solver's behaviours are specified in crates/build/tests.)

use std::process::Command;

/// A program from deploy/dev/services.sh's `RBK_TEST_BIN_*`, else PATH.
fn program(name: &str) -> std::path::PathBuf {
    let key = format!("RBK_TEST_BIN_{}", name.to_uppercase());
    let found = std::env::var_os(&key).map(Into::into).or_else(|| {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
    });
    found.unwrap_or_else(|| panic!("{name} is not installed ({key} unset, not on PATH); run deploy/dev/setup.sh"))
}

fn rbk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rbk"))
}

/// A context whose base is built from the host's static busybox with
/// `FROM scratch`, so no registry is needed.
fn context(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), dir.path().join("busybox")).unwrap();
    let df = format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{extra}");
    std::fs::write(dir.path().join("Dockerfile"), df).unwrap();
    dir
}

fn build(ctx: &std::path::Path, state: &std::path::Path, extra: &[&str]) -> std::process::Output {
    rbk()
        .arg("build")
        .arg("--state-dir")
        .arg(state)
        .arg("--runtime-path")
        .arg(program("runc"))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

#[test]
fn build_prints_the_image_digest_and_a_finished_summary() {
    let ctx = context("RUN echo hi > /hi\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.trim().starts_with("sha256:") && stdout.trim().len() == 71, "{stdout}");
    // The farm's count: layer-making steps (FROM scratch is folded in).
    assert!(stderr.contains("(3/3) FINISHED"), "{stderr}");
}

#[test]
fn a_failing_run_exits_non_zero_naming_the_step_and_its_output() {
    let ctx = context("RUN echo about-to-fail; exit 7\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &["--progress=plain"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("#3 ") && stderr.contains("about-to-fail"), "{stderr}");
    assert!(stderr.contains("[4/4] RUN echo about-to-fail; exit 7") && stderr.contains("Dockerfile:4) failed: exit code 7"), "{stderr}");
}

#[test]
fn a_dockerfile_syntax_error_names_the_line() {
    let ctx = context("RUN true\nFROMM x\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:5"), "{stderr}");
}

#[test]
fn unknown_output_types_are_refused() {
    let ctx = context("");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &["--output", "type=tarball,dest=x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("type=tarball is not supported"), "{stderr}");
}
