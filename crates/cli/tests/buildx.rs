//! `docker buildx build`'s flags and contexts on `rbk build`, end to end
//! through the binary (the in-process farm, runc): labels, `--iidfile`,
//! `--metadata-file`, `--network`, `--add-host`, `--shm-size`,
//! `--ulimit`, the flags accepted with a warning, `--quiet`; contexts from
//! stdin, git (a bare repository over `file://`, `git daemon`, sshd),
//! an http server and `--build-context`. (`rbk submit` reads the same
//! flags through `DockerBuildFlags`.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "common/oci_archive.rs"]
mod oci_archive;
#[path = "common/ssh_agent.rs"]
mod ssh_agent;

/// The lines every test Dockerfile starts with: a busybox base made from
/// the host's static busybox (the context's `busybox`), no registry.
const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

fn program(name: &str) -> PathBuf {
    rbk_testsupport::program(name)
}

/// A context directory holding `busybox` and a Dockerfile of [`BASE`]
/// then `extra`.
fn context(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("{BASE}{extra}")).unwrap();
    dir
}

/// `rbk build --state-dir STATE --runtime-path runc ARGS...`, with `stdin`
/// piped in when given.
fn rbk_build(state: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbk"));
    cmd.arg("build").arg("--state-dir").arg(state).arg("--runtime-path").arg(program("runc")).args(args);
    cmd.envs(env.iter().copied());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A build that must succeed: (stdout, stderr).
fn built(out: Output) -> (String, String) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "rbk build failed:\n{stderr}");
    (stdout, stderr)
}

/// Builds `ctx` with plain progress and `flags`; returns stderr.
fn plain(ctx: &Path, flags: &[&str]) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut args = vec!["--progress=plain"];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().unwrap());
    built(rbk_build(state.path(), &args, None, &[])).1
}

/// The log lines plain progress printed (`#N 0.123 text` → `text`).
fn logged(progress: &str) -> Vec<String> {
    progress
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').and_then(|(_, rest)| rest.split_once(' ')))
        .filter(|(t, _)| t.parse::<f64>().is_ok())
        .map(|(_, text)| text.to_owned())
        .collect()
}

#[test]
fn label_iidfile_and_metadata_file_describe_the_built_image() {
    let ctx = context("LABEL from.dockerfile=yes\n");
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (archive, iid, meta) = (out.path().join("image.tar"), out.path().join("iid"), out.path().join("meta.json"));
    let o = format!("type=oci,dest={}", archive.display());
    let args = ["--label", "org.example.team=build", "--label", "from.dockerfile=overridden", "-t", "example/app:1", "-o", &o];
    let mut args: Vec<&str> = args.to_vec();
    let (iid_s, meta_s) = (iid.to_str().unwrap().to_owned(), meta.to_str().unwrap().to_owned());
    args.extend(["--iidfile", &iid_s, "--metadata-file", &meta_s, ctx.path().to_str().unwrap()]);
    let (stdout, _) = built(rbk_build(state.path(), &args, None, &[]));
    let oci = oci_archive::OciArchive::read(&archive);
    let (manifest, config_digest, config) = (oci.manifest_digest(), oci.config_digest(), oci.config());
    assert_eq!(config["config"]["Labels"]["org.example.team"], "build", "{config}");
    assert_eq!(config["config"]["Labels"]["from.dockerfile"], "overridden", "--label wins over LABEL: {config}");
    // docker's image ID: the config's digest.
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), config_digest);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], manifest.as_str(), "{m}");
    assert_eq!(stdout.trim(), manifest);
    assert_eq!(m["containerimage.config.digest"], config_digest, "{m}");
    assert_eq!(m["containerimage.descriptor"]["digest"], manifest.as_str(), "{m}");
    assert_eq!(m["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{m}");
    assert_eq!(m["image.name"], "example/app:1", "{m}");
}

#[test]
fn add_host_entries_are_in_every_run_steps_etc_hosts_on_any_network() {
    let ctx = context("RUN cat /etc/hosts\n");
    for network in ["default", "none"] {
        let progress = plain(ctx.path(), &["--network", network, "--add-host", "db.internal:10.1.2.3", "--add-host", "v6host=fd00::7"]);
        let lines = logged(&progress);
        assert!(lines.iter().any(|l| l == "10.1.2.3\tdb.internal"), "--network={network}:\n{progress}");
        assert!(lines.iter().any(|l| l == "fd00::7\tv6host"), "--network={network}:\n{progress}");
    }
}

#[test]
fn an_add_host_that_is_not_an_address_is_refused_naming_it() {
    let ctx = context("");
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &["--add-host", "db:not-an-ip", ctx.path().to_str().unwrap()], None, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--add-host db:not-an-ip") && stderr.contains("not an IP address"), "{stderr}");
}

#[test]
fn shm_size_sets_the_size_of_dev_shm() {
    let ctx = context("RUN df -k /dev/shm\n");
    let progress = plain(ctx.path(), &["--shm-size", "128m"]);
    let shm = logged(&progress).into_iter().find(|l| l.ends_with("/dev/shm")).unwrap_or_else(|| panic!("{progress}"));
    assert_eq!(shm.split_whitespace().nth(1), Some("131072"), "{progress}");
}

#[test]
fn ulimit_sets_the_limits_run_steps_start_with() {
    let ctx = context("RUN ulimit -Sn; ulimit -Hn; ulimit -c\n");
    let progress = plain(ctx.path(), &["--ulimit", "nofile=1000:2000", "--ulimit", "core=0"]);
    let lines = logged(&progress);
    assert_eq!(lines[lines.len() - 3..], ["1000", "2000", "0"], "{progress}");
}

#[test]
fn network_none_gives_run_steps_only_loopback() {
    let ctx = context("RUN ls /sys/class/net\n");
    let progress = plain(ctx.path(), &["--network=none"]);
    assert_eq!(logged(&progress), ["lo"], "{progress}");
    // The default network has an interface besides loopback (pasta's).
    let progress = plain(ctx.path(), &[]);
    assert!(logged(&progress).len() > 1, "{progress}");
}

#[test]
fn an_unknown_network_mode_is_refused() {
    let ctx = context("");
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &["--network=bridge", ctx.path().to_str().unwrap()], None, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--network bridge: expected default, none or host"), "{stderr}");
}

#[test]
fn cache_from_and_cache_to_are_accepted_and_ignored_with_one_warning() {
    let ctx = context("");
    let progress = plain(ctx.path(), &["--cache-from", "type=registry,ref=x/cache", "--cache-to", "type=inline", "--cache-from", "user/app:cache"]);
    assert_eq!(progress.matches("WARNING").count(), 1, "{progress}");
    assert!(progress.contains("--cache-from/--cache-to are ignored: rbk's cache is the farm's, shared by every build"), "{progress}");
}

#[test]
fn provenance_and_sbom_are_accepted_with_a_note_that_they_are_not_supported() {
    let ctx = context("");
    let progress = plain(ctx.path(), &["--provenance=mode=max", "--sbom"]);
    assert!(progress.contains("WARNING: --provenance, --sbom: attestations (SLSA provenance, SBOM) are not supported by rbk yet"), "{progress}");
    let progress = plain(ctx.path(), &["--provenance=false"]);
    assert!(!progress.contains("WARNING"), "{progress}");
}

#[test]
fn quiet_prints_only_the_image_digest() {
    let ctx = context("RUN echo noisy\n");
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &["-q", ctx.path().to_str().unwrap()], None, &[]);
    let (stdout, stderr) = built(out);
    assert!(stdout.starts_with("sha256:") && stdout.trim().len() == 71 && stdout.lines().count() == 1, "{stdout}");
    assert_eq!(stderr, "");
}

#[test]
fn a_dockerfile_on_stdin_builds_with_the_directory_as_context() {
    let ctx = context("");
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nBROKEN\n").unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "from the context\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let dockerfile = format!("{BASE}COPY hello.txt /\nRUN cat /hello.txt\n");
    let out = rbk_build(state.path(), &["--progress=plain", "-f", "-", ctx.path().to_str().unwrap()], Some(dockerfile.as_bytes()), &[]);
    let (_, progress) = built(out);
    assert!(logged(&progress).contains(&"from the context".to_owned()), "{progress}");
}

#[test]
fn a_tar_on_stdin_is_the_context_and_a_relative_f_names_a_file_in_it() {
    let ctx = context("COPY hello.txt /\nRUN cat /hello.txt\n");
    std::fs::write(ctx.path().join("hello.txt"), "from the tar\n").unwrap();
    std::fs::rename(ctx.path().join("Dockerfile"), ctx.path().join("build.Dockerfile")).unwrap();
    let tar = Command::new("tar").arg("-C").arg(ctx.path()).args(["-czf", "-", "."]).output().unwrap();
    assert!(tar.status.success());
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &["--progress=plain", "-f", "build.Dockerfile", "-"], Some(&tar.stdout), &[]);
    let (_, progress) = built(out);
    assert!(logged(&progress).contains(&"from the tar".to_owned()), "{progress}");
}

#[test]
fn a_dockerfile_alone_on_stdin_builds_with_an_empty_context() {
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &["-"], Some(b"FROM scratch\nLABEL only=config\n"), &[]);
    let (stdout, _) = built(out);
    assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
}

/// A git repository (`repo`, on branch `main`, tagged `v1`) holding
/// `app/` with a Dockerfile, a context file and a `.dockerignore`d file;
/// plus its bare clone `repo.git` to serve.
fn git_repo(root: &Path) -> PathBuf {
    let work = root.join("work");
    let app = work.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(program("busybox"), app.join("busybox")).unwrap();
    std::fs::write(app.join("Dockerfile"), format!("{BASE}COPY . /ctx\nRUN ls -a /ctx; cat /ctx/greeting.txt\n")).unwrap();
    std::fs::write(app.join("greeting.txt"), "hello from git\n").unwrap();
    std::fs::write(app.join("secret.env"), "TOKEN=nope\n").unwrap();
    std::fs::write(app.join(".dockerignore"), "secret.env\n").unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "app"]);
    git(&work, &["tag", "v1"]);
    let bare = root.join("repo.git");
    let out = Command::new("git").args(["clone", "-q", "--bare"]).arg(&work).arg(&bare).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    bare
}

/// What a build of [`git_repo`]'s `app/` printed: the context it saw.
fn assert_built_the_git_context(progress: &str) {
    let lines = logged(progress);
    assert!(lines.contains(&"hello from git".to_owned()), "{progress}");
    assert!(lines.contains(&"greeting.txt".to_owned()), "{progress}");
    assert!(!lines.iter().any(|l| l.contains("secret.env")), "the repository's .dockerignore applies:\n{progress}");
    assert!(!lines.iter().any(|l| l == ".git"), "{progress}");
}

#[test]
fn a_git_context_over_file_builds_the_ref_and_subdirectory_the_fragment_names() {
    let root = tempfile::tempdir().unwrap();
    let bare = git_repo(root.path());
    let url = format!("file://{}#v1:app", bare.display());
    let state = tempfile::tempdir().unwrap();
    let (_, progress) = built(rbk_build(state.path(), &["--progress=plain", &url], None, &[]));
    assert_built_the_git_context(&progress);
    // Again: the checkout is where it was, so the context is unchanged and
    // every step is CACHED.
    let (_, again) = built(rbk_build(state.path(), &["--progress=plain", &url], None, &[]));
    assert_eq!(again.lines().filter(|l| l.starts_with('#') && l.ends_with(" CACHED")).count(), 4, "{again}");
}

#[test]
fn a_git_context_with_an_unknown_ref_fails_naming_the_url_and_ref() {
    let root = tempfile::tempdir().unwrap();
    let bare = git_repo(root.path());
    let url = format!("file://{}#no-such-branch:app", bare.display());
    let state = tempfile::tempdir().unwrap();
    let out = rbk_build(state.path(), &[&url], None, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("#no-such-branch: fetching failed"), "{stderr}");
}

/// A child process killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_git_context_from_git_daemon_builds() {
    let root = tempfile::tempdir().unwrap();
    git_repo(root.path());
    let port = 36011;
    // git-daemon itself, not the `git daemon` wrapper: killing the wrapper
    // would leave the daemon running.
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8(exec_path.stdout).unwrap();
    let daemon = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--base-path={}", root.path().display()))
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Server(daemon);
    rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "git daemon", Duration::from_secs(10));
    let state = tempfile::tempdir().unwrap();
    let url = format!("git://127.0.0.1:{port}/repo.git#main:app");
    let (_, progress) = built(rbk_build(state.path(), &["--progress=plain", &url], None, &[]));
    assert_built_the_git_context(&progress);
}

#[test]
fn a_git_context_over_ssh_uses_the_ssh_agent() {
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if !sshd.exists() {
        eprintln!("SKIPPED: /usr/sbin/sshd is not installed (package openssh-server)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bare = git_repo(root.path());
    let agent = ssh_agent::TestAgent::start();
    let dir = root.path().join("sshd");
    std::fs::create_dir_all(&dir).unwrap();
    let host_key = dir.join("host_key");
    let keygen = Command::new("/usr/bin/ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key).output().unwrap();
    assert!(keygen.status.success());
    std::fs::copy(agent.key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = 36022;
    let child = Command::new(&sshd)
        .args(["-D", "-e", "-p", &port.to_string(), "-o", "ListenAddress=127.0.0.1", "-o", "PasswordAuthentication=no", "-o", "UsePAM=no", "-o", "StrictModes=no"])
        .arg("-h")
        .arg(&host_key)
        .arg("-o")
        .arg(format!("AuthorizedKeysFile={}", dir.join("authorized_keys").display()))
        .arg("-o")
        .arg(format!("PidFile={}", dir.join("pid").display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn();
    let Ok(child) = child else {
        eprintln!("SKIPPED: sshd could not start");
        return;
    };
    let _sshd = Server(child);
    rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "sshd", Duration::from_secs(10));
    // The host key is pinned, as a user's known_hosts would have it; no
    // key file is named: the agent holds the only key.
    let known = dir.join("known_hosts");
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    let ssh = format!("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o IdentityFile=none", known.display());
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let url = format!("ssh://{user}@127.0.0.1:{port}{}#main:app", bare.display());
    let state = tempfile::tempdir().unwrap();
    let sock = agent.sock.to_str().unwrap().to_owned();
    let out = rbk_build(state.path(), &["--progress=plain", &url], None, &[("SSH_AUTH_SOCK", &sock), ("GIT_SSH_COMMAND", &ssh)]);
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert!(out.status.success(), "{}\nsshd log:\n{log}", String::from_utf8_lossy(&out.stderr));
    assert_built_the_git_context(&String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_tarball_context_from_an_http_server_builds() {
    let ctx = context("COPY hello.txt /\nRUN cat /hello.txt\n");
    std::fs::write(ctx.path().join("hello.txt"), "from http\n").unwrap();
    let served = tempfile::tempdir().unwrap();
    let tar = Command::new("tar").arg("-C").arg(ctx.path()).arg("-czf").arg(served.path().join("ctx.tar.gz")).arg(".").output().unwrap();
    assert!(tar.status.success());
    let port = 36031;
    let server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(served.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(server);
    rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "python3 -m http.server", Duration::from_secs(10));
    let state = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/ctx.tar.gz");
    let (_, progress) = built(rbk_build(state.path(), &["--progress=plain", &url], None, &[]));
    assert!(logged(&progress).contains(&"from http".to_owned()), "{progress}");
}

#[test]
fn a_named_directory_context_is_a_stage_from_can_name() {
    let ctx = context("FROM files AS assets\nFROM scratch\nCOPY busybox /bin/busybox\nCOPY --from=assets /data.txt /data.txt\nRUN [\"/bin/busybox\", \"cat\", \"/data.txt\"]\n");
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("data.txt"), "from a named context\n").unwrap();
    let named = format!("files={}", files.path().display());
    let progress = plain(ctx.path(), &["--build-context", &named]);
    assert!(logged(&progress).contains(&"from a named context".to_owned()), "{progress}");
}

#[tokio::test(flavor = "multi_thread")]
async fn named_image_and_oci_layout_contexts_replace_the_from_they_name() {
    let busybox = program("busybox");
    let pushed = rbk_image::testimage::push_busybox(&rbk_testsupport::registry(), &busybox).await.unwrap();
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = rbk_image::OciLayout::create(layout_dir.path()).unwrap();
    rbk_image::testimage::busybox_image(&layout, &busybox, "v1").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM example.com/not/pulled:1\nRUN echo ran on the named base\n").unwrap();
    let image = format!("example.com/not/pulled:1=docker-image://{pushed}");
    let oci = format!("example.com/not/pulled:1=oci-layout://{}:v1", layout_dir.path().display());
    for named in [image, oci] {
        let progress = tokio::task::block_in_place(|| plain(ctx.path(), &["--build-context", &named]));
        assert!(logged(&progress).contains(&"ran on the named base".to_owned()), "{named}:\n{progress}");
    }
}
