//! No false cache hits from remote inputs (issue #21), through the binary:
//! `ADD <url>` is re-validated on every build against a real HTTP server
//! (Python's `http.server`, answering `If-None-Match` with 304 and logging
//! every request), and a registry tag that moves between builds re-runs the
//! steps built on it (the local registry, `RBK_TEST_REGISTRY`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[path = "common/oci_archive.rs"]
mod oci_archive;
#[path = "common/plain_progress.rs"]
mod plain_progress;
use oci_archive::file_in_image;
use plain_progress::counts;

/// Serves ROOT's files with a strong ETag (the content's sha256), answers a
/// matching `If-None-Match` with 304 and no body, and appends one line per
/// request to LOG: `STATUS conditional=yes|no bytes=N`.
const SERVER: &str = r#"
import hashlib, http.server, os, sys
root, log = sys.argv[1], sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = os.path.join(root, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_response(404); self.end_headers(); status, sent = 404, 0
        else:
            body = open(path, 'rb').read()
            etag = '"%s"' % hashlib.sha256(body).hexdigest()
            if self.headers.get('If-None-Match') == etag:
                self.send_response(304); self.send_header('ETag', etag); self.end_headers()
                status, sent = 304, 0
            else:
                self.send_response(200); self.send_header('ETag', etag)
                self.send_header('Content-Length', str(len(body))); self.end_headers()
                self.wfile.write(body); status, sent = 200, len(body)
        cond = 'yes' if self.headers.get('If-None-Match') else 'no'
        with open(log, 'a') as f:
            f.write('%d conditional=%s bytes=%d\n' % (status, cond, sent))
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct HttpServer {
    child: Child,
    port: u16,
    root: PathBuf,
    log: PathBuf,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let (root, log) = (dir.join("served"), dir.join("requests.log"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        let mut child = Command::new("python3")
            .arg(dir.join("server.py"))
            .arg(&root)
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the test server printed {line:?}, not its port"));
        HttpServer { child, port, root, log }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn serve(&self, name: &str, content: &str) {
        std::fs::write(self.root.join(name), content).unwrap();
    }

    /// Every request so far, one line each.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A context on a busybox base made `FROM scratch` (no registry), then
/// `extra`; built into `DIR/image.tar` with state in `DIR/state`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(extra: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(rbk_testsupport::program("busybox"), ctx.join("busybox")).unwrap();
        let df = format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{extra}");
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        Project { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("image.tar")
    }

    /// `rbk build --progress=plain`: (success, progress).
    fn build(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_rbk"))
            .arg("build")
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .arg("--progress=plain")
            .arg("-o")
            .arg(format!("type=oci,dest={}", self.out().display()))
            .arg(self.dir.path().join("ctx"))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A server serving `f.txt` = `v1`, and a project that ADDs it and reads
/// it in a RUN (4 layer-making steps).
fn served_v1() -> (tempfile::TempDir, HttpServer, Project) {
    let srv_dir = tempfile::tempdir().unwrap();
    let srv = HttpServer::start(srv_dir.path());
    srv.serve("f.txt", "v1\n");
    let p = Project::new(&format!("ADD {} /f.txt\nRUN cat /f.txt > /seen\n", srv.url("f.txt")));
    (srv_dir, srv, p)
}

#[test]
fn an_unchanged_url_costs_one_conditional_request_and_no_download() {
    let (_dir, srv, p) = served_v1();
    let (ok, progress) = p.build();
    assert!(ok, "{progress}");
    let first = srv.requests().len();
    let (ok, progress) = p.build();
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (0, 4), "every step cached:\n{progress}");
    assert_eq!(srv.requests()[first..], ["304 conditional=yes bytes=0"], "all requests: {:?}", srv.requests());
}

#[test]
fn a_changed_url_rebuilds_its_steps_and_the_image_holds_the_new_content() {
    let (_dir, srv, p) = served_v1();
    let (ok, progress) = p.build();
    assert!(ok, "{progress}");
    assert_eq!(file_in_image(&p.out(), "seen").as_deref(), Some("v1\n"));
    srv.serve("f.txt", "v2\n");
    let (ok, progress) = p.build();
    assert!(ok, "{progress}");
    assert_eq!(counts(&progress), (2, 2), "ADD and the RUN after it run again:\n{progress}");
    assert_eq!(file_in_image(&p.out(), "f.txt").as_deref(), Some("v2\n"));
    assert_eq!(file_in_image(&p.out(), "seen").as_deref(), Some("v2\n"));
}

#[test]
fn a_checksum_pin_is_the_key_and_a_wrong_one_fails_naming_the_url() {
    let srv_dir = tempfile::tempdir().unwrap();
    let srv = HttpServer::start(srv_dir.path());
    srv.serve("f.txt", "v1\n");
    let right = "sha256:2d27fbdf4e8ca207afbfa388ca9172fbcc6c70e534af2476b3b704f87debadcf";
    let p = Project::new(&format!("ADD --checksum={right} {} /f.txt\n", srv.url("f.txt")));
    let (ok, progress) = p.build();
    assert!(ok, "{progress}");
    assert_eq!(srv.requests(), ["200 conditional=no bytes=3"], "a pin is not requested at planning, only fetched by the worker");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let p = Project::new(&format!("ADD --checksum={wrong} {} /f.txt\n", srv.url("f.txt")));
    let (ok, progress) = p.build();
    assert!(!ok, "{progress}");
    assert!(progress.contains(&srv.url("f.txt")) && progress.contains(&wrong) && progress.contains(right), "{progress}");
}

/// Pushes the busybox test image to `dest`, with `VARIANT=variant` in its
/// config so each variant has its own manifest digest.
async fn push_variant(dest: &str, variant: &str) {
    let dir = tempfile::tempdir().unwrap();
    let layout = rbk_image::OciLayout::create(dir.path()).unwrap();
    let mut image = rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "busybox:latest").unwrap();
    image.config.config.set_env("VARIANT", variant);
    image.save(&layout, Some("variant")).unwrap();
    let dest: rbk_image::ImageRef = dest.parse().unwrap();
    let registry = rbk_testsupport::registry();
    let client = rbk_image::RegistryClient::new().unwrap().with_insecure(&registry);
    client.push(&layout, &image.manifest_descriptor, &dest, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_moved_registry_tag_reruns_the_steps_built_on_it() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let tag = format!("{}/keys-moving-{}-{nanos}:stable", rbk_testsupport::registry(), std::process::id());
    push_variant(&tag, "one").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {tag}\nRUN echo $VARIANT > /variant\n")).unwrap();
    let build = || {
        let out = Command::new(env!("CARGO_BIN_EXE_rbk"))
            .args(["build", "--progress=plain", "--insecure-registry", &rbk_testsupport::registry()])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .arg("-o")
            .arg(format!("type=oci,dest={}", dir.path().join("image.tar").display()))
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    build();
    assert_eq!(file_in_image(&dir.path().join("image.tar"), "variant").as_deref(), Some("one\n"));
    let progress = build();
    assert_eq!(counts(&progress), (0, 1), "an unmoved tag is a cache hit:\n{progress}");
    push_variant(&tag, "two").await;
    let progress = build();
    assert_eq!(counts(&progress), (1, 0), "the RUN on the moved tag runs again:\n{progress}");
    assert_eq!(file_in_image(&dir.path().join("image.tar"), "variant").as_deref(), Some("two\n"));
}

#[test]
fn rbk_graph_resolve_shows_what_a_url_resolved_to_and_keys_by_it() {
    let srv_dir = tempfile::tempdir().unwrap();
    let srv = HttpServer::start(srv_dir.path());
    srv.serve("f.txt", "v1\n");
    let p = Project::new(&format!("ADD {} /f.txt\n", srv.url("f.txt")));
    let graph = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rbk")).arg("graph").args(extra).arg(p.dir.path().join("ctx")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v1 = graph(&["--resolve"]);
    assert!(v1.contains("checksum=- content=sha256:2d27fbdf4e8ca207afbfa388ca9172fbcc6c70e534af2476b3b704f87debadcf"), "{v1}");
    assert!(!graph(&[]).contains("content="), "without --resolve nothing is fetched");
    srv.serve("f.txt", "v2\n");
    let v2 = graph(&["--resolve"]);
    let image_key = |g: &str| g.lines().find(|l| l.starts_with("image key:")).unwrap().to_owned();
    assert_ne!(image_key(&v1), image_key(&v2));
}

/// Writes the same small repository into `root` as a checkout by another
/// user would: file modes from `umask`, files owned by `owner`, written in
/// `order`, with `mtime`, and the Dockerfile preceded by `preamble`.
fn checkout(root: &Path, umask: u32, owner: u32, reverse: bool, mtime: std::time::SystemTime, preamble: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut files: Vec<(&str, Vec<u8>, bool)> = vec![
        ("busybox", std::fs::read(rbk_testsupport::program("busybox")).unwrap(), true),
        ("app/main.sh", b"echo main\n".to_vec(), true),
        ("app/data.txt", b"data\n".to_vec(), false),
        ("Dockerfile", format!("{preamble}FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY app/ /app/\nRUN sh /app/main.sh > /out\n").into_bytes(), false),
    ];
    if reverse {
        files.reverse();
    }
    for (p, content, exec) in files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, content).unwrap();
        let mode = if exec { 0o777 } else { 0o666 } & !umask;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        std::os::unix::fs::lchown(&f, Some(owner), Some(owner)).unwrap();
    }
    std::fs::set_permissions(root.join("app"), std::fs::Permissions::from_mode(0o777 & !umask)).unwrap();
}

#[test]
fn the_same_repository_checked_out_elsewhere_by_another_user_is_a_cache_hit() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("alice/src/repo"), dir.path().join("b/checkout"));
    let now = std::time::SystemTime::now();
    checkout(&one, 0o022, 0, false, now - std::time::Duration::from_secs(86_400 * 30), "");
    checkout(&two, 0o022, 1234, true, now, "# the same file, two lines down\n\n");
    let build = |ctx: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_rbk"))
            .args(["build", "--progress=plain"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .arg(ctx)
            .output()
            .unwrap();
        let progress = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{progress}");
        progress
    };
    assert_eq!(counts(&build(&one)), (4, 0));
    let progress = build(&two);
    assert_eq!(counts(&progress), (0, 4), "every step is the other checkout's:\n{progress}");
}
