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
fn a_successful_build_prints_no_warning() {
    let ctx = context("RUN --mount=type=cache,target=/c echo hi > /c/hi\n");
    let state = tempfile::tempdir().unwrap();
    for progress in ["--progress=plain", "--progress=auto"] {
        let out = build(ctx.path(), state.path(), &[progress]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("WARN") && !stderr.contains("ERROR"), "{progress}: {stderr}");
    }
}

/// [`context`] with parser directives (`# check=...`) above its FROM.
fn context_with_directive(directive: &str, extra: &str) -> tempfile::TempDir {
    let dir = context(extra);
    let path = dir.path().join("Dockerfile");
    let df = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{directive}\n{df}")).unwrap();
    dir
}

#[test]
fn a_build_check_warning_is_printed_once_after_the_build_as_buildx_prints_it() {
    let ctx = context("CMD echo hi\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 4)";
    assert_eq!(stderr.matches("JSONArgsRecommended").count(), 1, "{stderr}");
    assert!(stderr.contains(&format!(" 1 warning found (use rbk graph --check to expand):\n{warning}")), "{stderr}");
    // After the build: below the summary line.
    assert!(stderr.find("FINISHED").unwrap() < stderr.find(warning).unwrap(), "{stderr}");
}

#[test]
fn check_skip_silences_the_rules_it_names() {
    let ctx = context_with_directive("# check=skip=JSONArgsRecommended", "CMD echo hi\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("JSONArgsRecommended") && !stderr.contains("warning"), "{stderr}");
}

#[test]
fn check_error_true_fails_the_build_before_any_step_runs_naming_the_rules() {
    let ctx = context_with_directive("# check=error=true", "CMD echo hi\nMAINTAINER me\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &["--progress=plain"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lint violation found for rules: JSONArgsRecommended, MaintainerDeprecated"),
        "{stderr}"
    );
    assert!(stderr.contains(" 2 warnings found"), "{stderr}");
    // Nothing ran: no step's progress line, no summary.
    assert!(!stderr.contains("COPY busybox") && !stderr.contains("FINISHED"), "{stderr}");
}

#[test]
fn a_failing_run_exits_non_zero_naming_the_step_and_its_output() {
    let ctx = context("RUN echo about-to-fail; exit 7\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &["--progress=plain"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("#3 ") && stderr.contains("about-to-fail"), "{stderr}");
    // BuildKit's form: the reason on the step's block, its last lines boxed.
    assert!(stderr.contains("#3 ERROR: exit code 7\n------\n > [4/4] RUN echo about-to-fail; exit 7:\nabout-to-fail\n------"), "{stderr}");
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
    assert!(stderr.contains("type=tarball: expected oci, docker, tar, local, image or registry"), "{stderr}");
}

// The embedded default's behaviours, through the binary (the in-process
// farm): a real registry (RBK_TEST_REGISTRY), runc, a filesystem store; the
// image is read back from the exported OCI archive.

const DOCKERFILE: &str = "FROM {base}
RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/log; wc -l < /cache/log > /count'
COPY greeting.txt /greeting.txt
";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(dockerfile: &str) -> Fixture {
        let registry = rbk_testsupport::registry();
        let base = rbk_image::testimage::push_busybox(&registry, &rbk_testsupport::program("busybox")).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/greeting.txt"), "hello\n").unwrap();
        std::fs::write(dir.path().join("ctx/Dockerfile"), dockerfile.replace("{base}", &base.to_string())).unwrap();
        Fixture { dir }
    }

    fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("image.tar")
    }

    /// `rbk build --progress=plain -o type=oci,dest=OUT`: (success, stdout, stderr).
    fn build(&self, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec!["--progress=plain".to_owned(), "-o".into(), format!("type=oci,dest={}", self.out().display())];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = build(&self.dir.path().join("ctx"), &self.dir.path().join("state"), &args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[path = "common/oci_archive.rs"]
mod oci_archive;
#[path = "common/plain_progress.rs"]
mod plain_progress;
use oci_archive::file_in_image;
use plain_progress::{counts, is_cached};

#[tokio::test]
async fn first_build_runs_the_cache_mount_step_and_copies_the_context_file() {
    let f = Fixture::new(DOCKERFILE).await;
    let (ok, _, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (2, 0), "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("1\n"));
    assert_eq!(file_in_image(&f.out(), "greeting.txt").as_deref(), Some("hello\n"));
    assert!(progress.contains("[+] Building ") && progress.contains("(2/2) FINISHED"), "{progress}");
}

#[tokio::test]
async fn progress_shows_the_from_line_with_the_resolved_digest() {
    let f = Fixture::new(DOCKERFILE).await;
    let (ok, _, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    let from = progress.lines().find(|l| l.contains(" [1/3] FROM ")).unwrap_or_else(|| panic!("no FROM line:\n{progress}"));
    assert!(from.contains("@sha256:"), "{from}");
    let n = from.split(' ').next().unwrap();
    assert!(progress.lines().any(|l| l.starts_with(&format!("{n} DONE "))), "{progress}");
}

#[tokio::test]
async fn an_unchanged_rebuild_is_all_cached_and_gives_the_same_image() {
    let f = Fixture::new(DOCKERFILE).await;
    let (ok, first, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    let (ok, again, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (0, 2), "{progress}");
    assert!(is_cached(&progress, "[2/3] RUN --mount=type=cache"), "{progress}");
    assert!(is_cached(&progress, "[3/3] COPY greeting.txt"), "{progress}");
    assert_eq!(first, again);
}

#[tokio::test]
async fn no_cache_reruns_steps_but_keeps_the_cache_mount() {
    let f = Fixture::new(DOCKERFILE).await;
    assert!(f.build(&[]).0);
    let (ok, _, progress) = f.build(&["--no-cache"]);
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (2, 0), "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("2\n"));
}

#[tokio::test]
async fn a_fresh_worker_restores_the_cache_mount_from_the_store() {
    let f = Fixture::new(DOCKERFILE).await;
    assert!(f.build(&[]).0);
    let fresh = f.dir.path().join("fresh-worker");
    let (ok, _, progress) = f.build(&["--no-cache", "--worker-dir", fresh.to_str().unwrap()]);
    assert!(ok, "{progress}");
    assert!(progress.contains(" restored)"), "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("2\n"));
}

#[tokio::test]
async fn a_fresh_worker_gets_cached_layers_from_the_store() {
    let f = Fixture::new(DOCKERFILE).await;
    assert!(f.build(&[]).0);
    let fresh = f.dir.path().join("fresh-worker");
    let (ok, _, progress) = f.build(&["--worker-dir", fresh.to_str().unwrap()]);
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (0, 2), "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("1\n"));
}

#[tokio::test]
async fn a_secret_mount_reads_the_secret_and_leaves_it_out_of_the_image() {
    let f = Fixture::new("FROM {base}\nRUN --mount=type=secret,id=tok sh -c 'wc -c < /run/secrets/tok > /len'\n").await;
    let secret = f.dir.path().join("tok");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let (ok, _, progress) = f.build(&["--secret", &format!("id=tok,src={}", secret.display())]);
    assert!(ok, "{progress}");
    assert_eq!(file_in_image(&f.out(), "len").as_deref().map(str::trim), Some("12"));
    assert_eq!(file_in_image(&f.out(), "run/secrets/tok"), None);
    assert!(!progress.contains("s3cr3t-value"), "{progress}");
}

#[tokio::test]
async fn dockerignored_files_are_not_copied() {
    let f = Fixture::new("FROM {base}\nCOPY . /ctx/\n").await;
    std::fs::write(f.dir.path().join("ctx/.env"), "SECRET=1\n").unwrap();
    std::fs::write(f.dir.path().join("ctx/.dockerignore"), ".env\n").unwrap();
    let (ok, _, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    assert_eq!(file_in_image(&f.out(), "ctx/greeting.txt").as_deref(), Some("hello\n"));
    assert_eq!(file_in_image(&f.out(), "ctx/.env"), None);
}

#[tokio::test]
async fn env_expands_over_the_base_image_env() {
    let f = Fixture::new("FROM {base}\nENV PATH=/opt/bin:$PATH\nRUN echo \"$PATH\" > /path\n").await;
    let (ok, _, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    assert_eq!(
        file_in_image(&f.out(), "path").as_deref(),
        Some("/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    );
}

#[tokio::test]
async fn fifos_in_the_context_are_not_read() {
    let f = Fixture::new("FROM {base}\nCOPY . /ctx/\n").await;
    let fifo = f.dir.path().join("ctx/pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (ok, _, progress) = f.build(&[]);
    assert!(ok, "{progress}");
    assert_eq!(file_in_image(&f.out(), "ctx/greeting.txt").as_deref(), Some("hello\n"));
    assert_eq!(file_in_image(&f.out(), "ctx/pipe"), None);
}

#[path = "common/ssh_agent.rs"]
mod ssh_agent;

/// `rbk build` with `SSH_AUTH_SOCK` set to `agent` (or unset).
fn build_with_agent(ctx: &std::path::Path, state: &std::path::Path, agent: Option<&std::path::Path>, extra: &[&str]) -> std::process::Output {
    let mut cmd = rbk();
    cmd.arg("build").arg("--state-dir").arg(state).arg("--runtime-path").arg(program("runc")).args(extra).arg(ctx);
    match agent {
        Some(sock) => cmd.env("SSH_AUTH_SOCK", sock),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    cmd.output().unwrap()
}

#[test]
fn ssh_default_lets_a_run_step_use_the_local_agent_and_leaves_no_trace_in_the_image() {
    let agent = ssh_agent::TestAgent::start();
    let ctx = context("COPY sshroot/ /\nRUN --mount=type=ssh,required=true ssh-add -l\n");
    ssh_agent::stage_ssh_add(ctx.path());
    let state = tempfile::tempdir().unwrap();
    let oci = state.path().join("image.tar");
    let out = build_with_agent(
        ctx.path(),
        state.path(),
        Some(&agent.sock),
        &["--ssh", "default", "--progress=plain", "-o", &format!("type=oci,dest={}", oci.display())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&agent.fingerprint) && stderr.contains("rbk-test-key"), "ssh-add -l lists the agent's key:\n{stderr}");
    assert_eq!(file_in_image(&oci, "run/buildkit/ssh_agent.0"), None, "the socket's mount point is not in the layer");
}

#[test]
fn a_required_ssh_mount_without_ssh_fails_naming_the_id_and_line() {
    let ctx = context("RUN --mount=type=ssh,id=github,required=true true\n");
    let state = tempfile::tempdir().unwrap();
    let out = build_with_agent(ctx.path(), state.path(), None, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("needs ssh agent \"github\", but no --ssh github was given") && stderr.contains("Dockerfile:4"), "{stderr}");
}

#[test]
fn ssh_default_without_an_agent_is_refused_before_building() {
    let ctx = context("RUN --mount=type=ssh true\n");
    let state = tempfile::tempdir().unwrap();
    let out = build_with_agent(ctx.path(), state.path(), None, &["--ssh", "default"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--ssh default: SSH_AUTH_SOCK is not set"), "{stderr}");
}

#[test]
fn an_ssh_mount_with_a_uid_lets_a_non_root_step_use_the_agent() {
    let agent = ssh_agent::TestAgent::start();
    let ctx = context(
        "COPY sshroot/ /\nRUN mkdir -p /etc && echo 'builder:x:1000:1000::/:/bin/sh' > /etc/passwd\nUSER 1000\n\
         RUN --mount=type=ssh,required=true,uid=1000 ssh-add -l\n",
    );
    ssh_agent::stage_ssh_add(ctx.path());
    let state = tempfile::tempdir().unwrap();
    let out = build_with_agent(ctx.path(), state.path(), Some(&agent.sock), &["--ssh", "default", "--progress=plain"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&agent.fingerprint), "uid 1000 reaches the agent:\n{stderr}");
}

#[test]
fn network_host_needs_allow_and_runs_in_the_hosts_network_with_it() {
    let ctx = context("RUN --network=host echo \"netns=$(readlink /proc/self/ns/net)\"\n");
    let state = tempfile::tempdir().unwrap();
    let out = build(ctx.path(), state.path(), &["--progress=plain"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:4") && stderr.contains("--allow network.host"), "{stderr}");

    let out = build(ctx.path(), state.path(), &["--progress=plain", "--allow", "network.host"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let host = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
    assert!(stderr.contains(&format!("netns={host}")), "{host}:\n{stderr}");
}
