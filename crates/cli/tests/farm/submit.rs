//! `rbk submit` against a real coordinator and real `rbk worker` processes
//! (runc steps, a filesystem store behind the coordinator): the client's
//! half of issue #6's "done when" list — layer cache across machines (1),
//! failures and syntax errors (6), tokens and tenants (7), and outputs.
//!
//! The farm is `harness.rs`'s (store on the S3 server); Dockerfile bases
//! are built `FROM scratch` from the host's static busybox, so only the
//! push test needs the registry.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rbk_testsupport::program;

use crate::harness::{Farm, RBK, TENANT as TENANT_A, TENANT_B, WORKER_TOKEN};

/// Longest a submit may take before the test gives up on it.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(180);

/// `rbk submit` against `farm` as `token` (none: no token at all).
pub(crate) fn submit(farm: &Farm, token: Option<&str>, ctx: &Path, extra: &[&str]) -> Output {
    submit_from(farm, &farm.dir.path().join("client"), token, ctx, extra)
}

/// [`submit`] from the client directory `client` (where a client keeps its
/// base images and the last snapshot of each context).
fn submit_from(farm: &Farm, client: &Path, token: Option<&str>, ctx: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(RBK);
    cmd.args(["submit", "--coordinator", &farm.url, "--client-dir"])
        .arg(client)
        .args(extra)
        .arg(ctx)
        .env_remove("RBK_TOKEN")
        .env("RUST_BACKTRACE", "0");
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    run(cmd, SUBMIT_TIMEOUT)
}

/// Runs a command to completion, killing it (and failing the test) after
/// `timeout`.
fn run(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).unwrap();
        b
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&e.join().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: o.join().unwrap(), stderr: e.join().unwrap() }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A context whose base is the host's static busybox (`FROM scratch`), a
/// build stage with a cache mount, and a final stage copying from it.
fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("a.txt"), "hello from the context\n").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch AS base\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         \n\
         FROM base AS build\n\
         WORKDIR /src\n\
         COPY a.txt .\n\
         RUN --mount=type=cache,target=/cache,id=notes cp a.txt out && echo run >> /cache/log && echo \"lines: $(wc -l < /cache/log)\"\n\
         \n\
         FROM base\n\
         COPY --from=build /src/out /out\n\
         CMD [\"/bin/sh\"]\n",
    )
    .unwrap();
    dir
}

pub(crate) fn succeeded(out: &Output) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "rbk submit failed:\n{stderr}");
    let digest = stdout.trim().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{stdout}");
    (digest, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_layer_cache_follows_a_build_to_another_machine() {
    let farm = Farm::start().await;
    let ctx = context();
    let a = farm.worker("a", &[]);
    let (first, stderr) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &[]));
    assert!(stderr.contains("(6/6) FINISHED"), "{stderr}");
    assert!(stderr.contains("RUN --mount=type=cache") && stderr.contains(" on a "), "worker a ran the steps:\n{stderr}");

    drop(a); // SIGKILL: machine a is gone.
    let _b = farm.worker("b", &[]);
    let (second, stderr) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &[]));
    assert_eq!(stderr.matches(" => CACHED ").count(), 6, "every step is CACHED:\n{stderr}");
    assert!(!stderr.contains(" on b"), "worker b ran nothing:\n{stderr}");
    assert!(!stderr.contains("MiB sent"), "the unchanged context (busybox, 1 MiB) is not sent again:\n{stderr}");
    assert_eq!(first, second, "the same image");
}

/// Sets every file's and directory's mtime under `dir` an hour ahead.
fn touch_all(dir: &Path) {
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            touch_all(&path);
        }
        std::fs::File::open(&path).unwrap().set_modified(later).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_context_touched_and_submitted_from_a_fresh_client_dir_is_all_cached() {
    // The default configuration: the coordinator computes the keys.
    let farm = Farm::start().await;
    let ctx = context();
    let _a = farm.worker("a", &[]);
    let first_client = tempfile::tempdir().unwrap();
    let (first, stderr) = succeeded(&submit_from(&farm, first_client.path(), Some(TENANT_A), ctx.path(), &[]));
    assert!(stderr.contains("(6/6) FINISHED") && !stderr.contains("CACHED"), "{stderr}");
    // New mtimes, a new staging copy, no previous snapshot to pack against.
    touch_all(ctx.path());
    let fresh_client = tempfile::tempdir().unwrap();
    let (second, stderr) = succeeded(&submit_from(&farm, fresh_client.path(), Some(TENANT_A), ctx.path(), &[]));
    assert_eq!(stderr.matches(" => CACHED ").count(), 6, "every step is CACHED:\n{stderr}");
    assert_eq!(first, second, "the same image");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_file_misses_the_copy_reading_it_and_what_follows_while_a_copy_of_other_files_stays_cached() {
    let farm = Farm::start().await;
    let ctx = context();
    let _a = farm.worker("a", &[]);
    let (first, _) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &[]));
    std::fs::write(ctx.path().join("a.txt"), "changed in the context\n").unwrap();
    let (second, stderr) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &[]));
    let cached: Vec<&str> = stderr.lines().filter(|l| l.contains(" => CACHED ")).collect();
    // COPY busybox reads the context too, but not a.txt; the RUN and
    // WORKDIR after it read nothing of the context.
    assert!(cached.iter().any(|l| l.contains("COPY busybox")), "the COPY of an unchanged file missed:\n{stderr}");
    assert_eq!(cached.len(), 3, "COPY busybox, RUN --install, WORKDIR are CACHED, nothing else:\n{stderr}");
    assert!(!cached.iter().any(|l| l.contains("COPY a.txt") || l.contains("COPY --from=build")), "{stderr}");
    assert_ne!(first, second, "the changed file is in the image");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_run_exits_non_zero_naming_the_step_and_its_output() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo about-to-fail; exit 7\"]\n",
    )
    .unwrap();
    let out = submit(&farm, Some(TENANT_A), ctx.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ERROR [3/3] RUN") && stderr.contains("about-to-fail"), "the step and its output:\n{stderr}");
    assert!(stderr.contains("Dockerfile:3) failed on a: exit code 7"), "{stderr}");
    assert!(stderr.contains("FAILED"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dockerfile_syntax_error_names_the_line_before_anything_is_sent() {
    let ctx = context();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\nFROMM x\n").unwrap();
    // Nothing listens on this port: the error must come before any connection.
    let port = free_port();
    let out = run(
        {
            let mut c = Command::new(RBK);
            c.args(["submit", "--token", TENANT_A, "--coordinator", &format!("http://127.0.0.1:{port}")]).arg(ctx.path()).env("RUST_BACKTRACE", "0");
            c
        },
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(!stderr.contains("connecting"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn submits_without_a_valid_tenant_token_are_refused() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let out = submit(&farm, None, ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no token"), "{}", text(&out.stderr));
    let out = submit(&farm, Some("not-a-token-anyone-was-given"), ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Unauthenticated"), "{}", text(&out.stderr));
    let out = submit(&farm, Some(WORKER_TOKEN), ctx.path(), &[]);
    assert!(!out.status.success(), "a worker token cannot submit builds:\n{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_cache_ids_are_out_of_reach() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let plain = ["--progress=plain"];
    let (_, a1) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &plain));
    assert!(a1.contains("lines: 1"), "{a1}");
    // Same Dockerfile, same cache id, other tenant: nothing of team-a's is
    // used — no cached step, an empty cache mount.
    let (_, b1) = succeeded(&submit(&farm, Some(TENANT_B), ctx.path(), &plain));
    assert!(!b1.contains("CACHED"), "team-b cannot hit team-a's action cache:\n{b1}");
    assert!(b1.contains("lines: 1"), "team-b's cache starts empty:\n{b1}");
    // And team-b's run did not touch team-a's cache.
    let (_, a2) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &["--progress=plain", "--no-cache"]));
    assert!(a2.contains("lines: 2"), "{a2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_and_local_outputs_hold_the_built_image() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("image.tar");
    let root = out_dir.path().join("rootfs");
    let (digest, _) = succeeded(&submit(&farm, 
        Some(TENANT_A),
        ctx.path(),
        &["-t", "example/submit:1", "--output", &format!("type=oci,dest={}", oci.display()), "--output", &format!("type=local,dest={}", root.display())],
    ));
    let layout = rbk_image::OciLayout::create(out_dir.path().join("imported")).unwrap();
    let image = rbk_image::import_oci(&oci, None, &rbk_image::Platform::linux_amd64(), &layout).unwrap();
    assert_eq!(image.manifest_descriptor.digest.to_string(), digest);
    assert_eq!(image.config.config.cmd, Some(vec!["/bin/sh".to_owned()]));
    assert_eq!(image.layers().len(), 3, "busybox, its links, /out");
    let inspect = run(
        {
            let mut c = Command::new(program("skopeo"));
            c.arg("inspect").arg(format!("oci-archive:{}", oci.display()));
            c
        },
        Duration::from_secs(60),
    );
    assert!(inspect.status.success(), "skopeo reads the archive: {}", text(&inspect.stderr));
    assert_eq!(std::fs::read_to_string(root.join("out")).unwrap(), "hello from the context\n");
    assert!(root.join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn push_sends_the_image_to_the_registry() {
    let registry = std::env::var("RBK_TEST_REGISTRY")
        .expect("RBK_TEST_REGISTRY is unset; start the test services with `eval \"$(deploy/dev/services.sh up)\"`");
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let name = format!("{registry}/rbk-submit-{}:1", std::process::id());
    let (digest, stderr) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &["-t", &name, "--push"]));
    assert!(stderr.contains(&format!("pushing {name}")), "{stderr}");
    let layout = rbk_image::OciLayout::create(ctx.path().join("pulled")).unwrap();
    let pulled = rbk_image::RegistryClient::new().unwrap().pull(&name.parse().unwrap(), &layout).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest.to_string(), digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_step_but_no_output_or_store() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let value = format!("s3cret-{}-value", std::process::id());
    let secret_file = ctx.path().join("..").join(format!("rbk-secret-{}", std::process::id()));
    std::fs::write(&secret_file, &value).unwrap();
    // The step proves it saw the value by its length, never printing it.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN --mount=type=secret,id=tok,required=true [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox wc -c < /run/secrets/tok > /len\"]\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("image.tar");
    let root = out_dir.path().join("rootfs");
    let (_, stderr) = succeeded(&submit(&farm, 
        Some(TENANT_A),
        ctx.path(),
        &[
            "--progress=plain",
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=local,dest={}", root.display()),
        ],
    ));
    std::fs::remove_file(&secret_file).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("len")).unwrap().trim(), value.len().to_string());
    assert!(!root.join("run/secrets/tok").exists(), "the secret is not in the image");
    assert!(!stderr.contains(&value), "{stderr}");
    let tar = std::fs::read(&oci).unwrap();
    assert!(!tar.windows(value.len()).any(|w| w == value.as_bytes()), "the secret is not in the archive");
    let grep = Command::new("grep").args(["-rl", &value]).arg(farm.dir.path()).output().unwrap();
    assert!(grep.stdout.is_empty(), "the secret reached a file: {}", text(&grep.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_cancels_the_build_on_the_coordinator() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"300\"]\n").unwrap();
    let mut child = Command::new(RBK)
        .args(["submit", "--progress=plain", "--coordinator", &farm.url, "--token", TENANT_A, "--client-dir"])
        .arg(farm.dir.path().join("client"))
        .arg(ctx.path())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard_pid = child.id();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains("sleep") && l.ends_with(" on a")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("the sleeping step did not start on a within 60 s: {seen:#?}");
            }
        }
    }
    let sent = Command::new("kill").args(["-INT", &guard_pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("rbk submit did not exit within 30 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(rx.try_iter());
    let stderr = seen.join("\n");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("cancelling build") && stderr.contains("cancelled"), "{stderr}");
    // The worker (one slot) is free again: its sleep was stopped.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n").unwrap();
    let out = run(
        {
            let mut c = Command::new(RBK);
            c.args(["submit", "--coordinator", &farm.url, "--token", TENANT_A, "--client-dir"])
                .arg(farm.dir.path().join("client"))
                .arg(ctx.path())
                .env("RUST_BACKTRACE", "0");
            c
        },
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_image_layout_starts_the_image_and_known_layers_are_not_sent_again() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let bases = tempfile::tempdir().unwrap();
    let layout = rbk_image::OciLayout::create(bases.path().join("busybox")).unwrap();
    let base = rbk_image::testimage::busybox_image(&layout, &program("busybox"), "latest").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // A config-only stage folds into its base; the RUN starts from the
    // uploaded base layer on the worker.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS base\nENV GREETING=hi\n\nFROM base\nRUN echo \"$GREETING from the base\" > /greeting\n",
    )
    .unwrap();
    let base_arg = format!("busybox={}:latest", layout.root().display());
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("image.tar");
    let (digest, stderr) = succeeded(&submit(
        &farm,
        Some(TENANT_A),
        ctx.path(),
        &["--base-image", &base_arg, "--output", &format!("type=oci,dest={}", oci.display())],
    ));
    assert!(stderr.contains("(1/1) FINISHED"), "one node: the RUN\n{stderr}");
    // The harness put this very busybox layer into the store already.
    assert!(stderr.contains("1 base layers (0 sent"), "only what the store lacks is sent:\n{stderr}");
    let imported = rbk_image::OciLayout::create(out_dir.path().join("imported")).unwrap();
    let image = rbk_image::import_oci(&oci, None, &rbk_image::Platform::linux_amd64(), &imported).unwrap();
    assert_eq!(image.manifest_descriptor.digest.to_string(), digest);
    assert_eq!(image.layers().len(), 2);
    assert_eq!(image.layers()[0].digest, base.layers()[0].digest, "the base layer comes first");
    assert!(image.config.config.env.clone().unwrap().contains(&"GREETING=hi".to_owned()));
    assert_eq!(image.config.config.cmd, Some(vec!["sh".to_owned()]), "the base's config carries over");
    let root = out_dir.path().join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    for l in image.layers() {
        rbk_image::unpack_layer_file(&imported.blob_path(&l.digest), &root, &Default::default()).unwrap();
    }
    assert_eq!(std::fs::read_to_string(root.join("greeting")).unwrap(), "hi from the base\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_without_layer_making_steps_is_assembled_without_running_anything() {
    let farm = Farm::start().await;
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nENV ONLY=config\nCMD [\"/nothing\"]\n").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("image.tar");
    // No worker is connected: nothing may need one.
    let (digest, _) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &["--output", &format!("type=oci,dest={}", oci.display())]));
    let layout = rbk_image::OciLayout::create(out_dir.path().join("imported")).unwrap();
    let image = rbk_image::import_oci(&oci, None, &rbk_image::Platform::linux_amd64(), &layout).unwrap();
    assert_eq!(image.manifest_descriptor.digest.to_string(), digest);
    assert!(image.layers().is_empty());
    assert_eq!(image.config.config.cmd, Some(vec!["/nothing".to_owned()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submit_to_a_port_nothing_listens_on_fails_naming_the_address() {
    let ctx = context();
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut c = Command::new(RBK);
    c.args(["submit", "--token", TENANT_A, "--coordinator", &url]).arg(ctx.path()).env_remove("RBK_CONNECT_RETRY").env("RUST_BACKTRACE", "0");
    let out = run(c, Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("cannot reach the coordinator: {url}")), "{stderr}");
    assert!(stderr.contains("--connect-retry"), "the way to wait for a starting coordinator is named:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_add_of_a_url_names_its_cause_instead_of_exit_code_minus_one() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    let url = format!("http://127.0.0.1:{}/missing.txt", free_port());
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM scratch\nCOPY busybox /bin/busybox\nADD {url} /missing.txt\n")).unwrap();
    let out = submit(&farm, Some(TENANT_A), ctx.path(), &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("Error: ")).unwrap_or_else(|| panic!("no Error line:\n{stderr}"));
    assert!(error.contains("Dockerfile:3") && error.contains(&url), "{error}");
    assert!(!stderr.contains("exit code -1"), "{stderr}");
}

#[test]
fn submit_help_cites_no_source_file() {
    let out = Command::new(RBK).args(["submit", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("--coordinator"), "{help}");
    for needle in ["rbk_client", "::", ".rs"] {
        assert!(!help.contains(needle), "rbk submit --help cites {needle:?}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_prune_takes_the_mount_id_as_the_dockerfile_writes_it() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = context();
    // `id=notes`: the planner files the head as `farm/notes`.
    succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &[]));
    farm.wait_cache_files("farm/notes").await;
    let out = Command::new(RBK).args(["cache", "prune", "--id", "notes", "--coordinator", &farm.url, "--token", TENANT_A]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("dropped 1 heads"), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn add_git_is_fetched_by_the_worker_at_the_commit_the_client_resolved() {
    use rbk_testsupport::git;
    let repos = tempfile::tempdir().unwrap();
    git(repos.path(), &["init", "-q", "--bare", "-b", "main", "app.git"]);
    git(repos.path(), &["init", "-q", "-b", "main", "work"]);
    std::fs::write(repos.path().join("work/hello.txt"), "from git\n").unwrap();
    git(&repos.path().join("work"), &["add", "hello.txt"]);
    git(&repos.path().join("work"), &["commit", "-q", "-m", "one"]);
    git(&repos.path().join("work"), &["push", "-q", repos.path().join("app.git").to_str().unwrap(), "main"]);
    let commit = git(&repos.path().join("work"), &["rev-parse", "HEAD"]);
    let daemon = rbk_testsupport::GitDaemon::start(repos.path());

    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM scratch\nADD {} /src/\n", daemon.url("app.git#main"))).unwrap();
    let dest = ctx.path().join("image.tar");
    let output = format!("type=oci,dest={}", dest.display());
    let (_, stderr) = succeeded(&submit(&farm, Some(TENANT_A), ctx.path(), &["--progress=plain", "-o", &output]));
    assert!(stderr.contains(&format!("-> {commit}")), "progress names the commit:\n{stderr}");
    assert_eq!(crate::oci_archive::file_in_image(&dest, "src/hello.txt").as_deref(), Some("from git\n"));
}
