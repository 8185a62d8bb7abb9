//! `rbk graph` end to end: the real binary on a workload Dockerfile.

use std::process::Command;

fn rbk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rbk"))
}

fn workload(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dockerfiles").join(name)
}

#[test]
fn graph_prints_steps_keys_and_the_scoped_cache_id() {
    let dir = workload("131-workload-pip");
    let out = rbk()
        .arg("graph")
        .args(["--build-arg", "BASE=python:3.12", "--namespace", "acme"])
        .arg(dir.join("context"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("image python:3.12"), "{stdout}");
    assert!(stdout.contains("mount cache /root/.cache/pip id=acme//root/.cache/pip sharing=shared"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("image key: ") && l.len() == "image key: ".len() + 64), "{stdout}");
}

#[test]
fn graph_reports_errors_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("rbk-graph-cmd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM alpine\nCOPY --chmodd=755 a /a\n").unwrap();
    let out = rbk().arg("graph").arg(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Dockerfile:2:6: COPY: unknown flag --chmodd for COPY; did you mean --chmod?"), "{stderr}");
}

fn temp_context(tag: &str, dockerfile: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rbk-graph-cmd-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

#[test]
fn graph_check_prints_buildkit_warnings_without_the_graph() {
    let dir = temp_context("check", "FROM alpine\nEXPOSE 8080:80\n");
    let out = rbk().args(["graph", "--check"]).arg(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("WARNING: ExposeInvalidFormat - https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Dockerfile:2: EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'"),
        "{stdout}"
    );
    assert!(stdout.ends_with("Check complete, 1 warning found.\n"), "{stdout}");
    assert!(!stdout.contains("image key"), "{stdout}");
}

#[test]
fn graph_check_fails_when_the_dockerfile_makes_warnings_errors() {
    let dir = temp_context("check-error", "# check=error=true\nFROM alpine\nEXPOSE 8080:80\n");
    let out = rbk().args(["graph", "--check"]).arg(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.ends_with("Check complete, 1 warning found.\n"), "{stdout}");
    assert!(stderr.contains("lint violation found for rules: ExposeInvalidFormat"), "{stderr}");
}

#[test]
fn user_errors_print_no_stack_trace_even_with_rust_backtrace() {
    let dir = temp_context("user-error", "FROM alpine\nRUNN x\n");
    let out = rbk().arg("graph").arg(&dir).env("RUST_BACKTRACE", "1").env("RUST_LIB_BACKTRACE", "1").output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Dockerfile:2:1: unknown instruction 'RUNN'; did you mean RUN?"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}
