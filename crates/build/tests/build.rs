//! `rbk build`'s solver end to end: a real registry (RBK_TEST_REGISTRY),
//! runc, a filesystem store. Each test is one behaviour of the embedded
//! default; the image is read back from the exported OCI archive.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbk_build::{BuildError, BuildOutput, BuildRequest, OutputKind, Progress, ProgressMode, build};
use rbk_worker::RuntimeKind;

const DOCKERFILE: &str = "FROM {base}
RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/log; wc -l < /cache/log > /count'
COPY greeting.txt /greeting.txt
";

struct Fixture {
    dir: tempfile::TempDir,
    base: String,
}

impl Fixture {
    async fn new(dockerfile: &str) -> Fixture {
        let registry = rbk_testsupport::registry();
        let base =
            rbk_image::testimage::push_busybox(&registry, &rbk_testsupport::program("busybox"))
                .await
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        std::fs::write(dir.path().join("ctx/greeting.txt"), "hello\n").unwrap();
        std::fs::write(
            dir.path().join("ctx/Dockerfile"),
            dockerfile.replace("{base}", &base.to_string()),
        )
        .unwrap();
        Fixture {
            dir,
            base: base.to_string(),
        }
    }

    fn request(&self, state: &str) -> BuildRequest {
        let mut r = BuildRequest::new(self.dir.path().join("ctx"), self.dir.path().join(state));
        r.runtime = RuntimeKind::Runc;
        r.runtime_program = rbk_testsupport::program("runc");
        r.outputs = vec![BuildOutput {
            kind: OutputKind::Oci,
            dest: self.out(),
        }];
        r
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("image.tar")
    }
}

/// Runs a build, returning its result and the progress text.
async fn run(req: &BuildRequest) -> (Result<rbk_build::BuildResult, BuildError>, String) {
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let r = build(req, Progress::new(ProgressMode::Auto, buf.clone())).await;
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (r, text)
}

/// The content of `path` in the image of an OCI archive (topmost layer wins).
fn file_in_image(archive: &Path, path: &str) -> Option<String> {
    let mut blobs = std::collections::HashMap::new();
    let mut index = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if name == "index.json" {
            index = data;
        } else if let Some(h) = name.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{h}"), data);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blobs[index["manifests"][0]["digest"].as_str().unwrap()]).unwrap();
    for layer in manifest["layers"].as_array().unwrap().iter().rev() {
        let blob = &blobs[layer["digest"].as_str().unwrap()];
        let mut t = tar::Archive::new(rbk_image::decompress(&blob[..]).unwrap());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                return Some(s);
            }
        }
    }
    None
}

#[tokio::test]
async fn first_build_runs_the_cache_mount_step_and_copies_the_context_file() {
    let f = Fixture::new(DOCKERFILE).await;
    let (r, progress) = run(&f.request("state")).await;
    let r = r.unwrap();
    assert_eq!((r.executed, r.cached), (2, 0), "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("1\n"));
    assert_eq!(
        file_in_image(&f.out(), "greeting.txt").as_deref(),
        Some("hello\n")
    );
    assert!(
        progress.contains(&format!(" => [1/3] FROM {}", f.base)),
        "{progress}"
    );
    assert!(
        progress.contains("[+] Building ") && progress.contains("(3/3) FINISHED"),
        "{progress}"
    );
}

#[tokio::test]
async fn an_unchanged_rebuild_is_all_cached_and_gives_the_same_image() {
    let f = Fixture::new(DOCKERFILE).await;
    let (first, _) = run(&f.request("state")).await;
    let (again, progress) = run(&f.request("state")).await;
    let again = again.unwrap();
    assert_eq!((again.executed, again.cached), (0, 2), "{progress}");
    assert!(
        progress.contains(" => CACHED [2/3] RUN --mount=type=cache"),
        "{progress}"
    );
    assert!(
        progress.contains(" => CACHED [3/3] COPY greeting.txt"),
        "{progress}"
    );
    assert_eq!(first.unwrap().manifest_digest, again.manifest_digest);
}

#[tokio::test]
async fn no_cache_reruns_steps_but_keeps_the_cache_mount() {
    let f = Fixture::new(DOCKERFILE).await;
    run(&f.request("state")).await.0.unwrap();
    let mut req = f.request("state");
    req.no_cache = true;
    let (r, progress) = run(&req).await;
    assert_eq!(r.unwrap().executed, 2, "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("2\n"));
}

#[tokio::test]
async fn a_fresh_worker_restores_the_cache_mount_from_the_store() {
    let f = Fixture::new(DOCKERFILE).await;
    run(&f.request("state")).await.0.unwrap();
    let mut req = f.request("state");
    req.no_cache = true;
    req.worker_dir = Some(f.dir.path().join("fresh-worker"));
    let (r, progress) = run(&req).await;
    let r = r.unwrap();
    assert!(r.cache_bytes_restored > 0, "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("2\n"));
}

#[tokio::test]
async fn a_fresh_worker_gets_cached_layers_from_the_store() {
    let f = Fixture::new(DOCKERFILE).await;
    run(&f.request("state")).await.0.unwrap();
    let mut req = f.request("state");
    req.worker_dir = Some(f.dir.path().join("fresh-worker"));
    let (r, progress) = run(&req).await;
    assert_eq!(r.unwrap().executed, 0, "{progress}");
    assert_eq!(file_in_image(&f.out(), "count").as_deref(), Some("1\n"));
}

#[tokio::test]
async fn a_failing_run_names_the_step_line_and_output() {
    let f = Fixture::new("FROM {base}\nRUN echo before-failing && exit 3\n").await;
    let (r, progress) = run(&f.request("state")).await;
    match r.unwrap_err() {
        BuildError::StepFailed {
            step,
            line,
            why,
            tail,
            ..
        } => {
            assert_eq!(step, "[2/2] RUN echo before-failing && exit 3");
            assert_eq!(line, 2);
            assert_eq!(why, "exit code 3");
            assert!(
                tail.iter().any(|l| l.contains("before-failing")),
                "{tail:?}"
            );
        }
        e => panic!("expected a step failure, got {e}"),
    }
    assert!(
        progress.contains(" => ERROR [2/2] RUN echo before-failing"),
        "{progress}"
    );
    assert!(progress.contains("FAILED"), "{progress}");
}

#[tokio::test]
async fn unsupported_mounts_are_refused_with_the_step_named() {
    let f =
        Fixture::new("FROM {base}\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n").await;
    let e = run(&f.request("state")).await.0.unwrap_err().to_string();
    assert!(
        e.contains("[2/2] RUN --mount=type=secret")
            && e.contains(":2)")
            && e.contains("not supported"),
        "{e}"
    );
}

#[tokio::test]
async fn dockerignored_files_are_not_copied() {
    let f = Fixture::new("FROM {base}\nCOPY . /ctx/\n").await;
    std::fs::write(f.dir.path().join("ctx/.env"), "SECRET=1\n").unwrap();
    std::fs::write(f.dir.path().join("ctx/.dockerignore"), ".env\n").unwrap();
    run(&f.request("state")).await.0.unwrap();
    assert_eq!(
        file_in_image(&f.out(), "ctx/greeting.txt").as_deref(),
        Some("hello\n")
    );
    assert_eq!(file_in_image(&f.out(), "ctx/.env"), None);
}

#[tokio::test]
async fn env_expands_over_the_base_image_env() {
    let f =
        Fixture::new("FROM {base}\nENV PATH=/opt/bin:$PATH\nRUN echo \"$PATH\" > /path\n").await;
    run(&f.request("state")).await.0.unwrap();
    assert_eq!(
        file_in_image(&f.out(), "path").as_deref(),
        Some("/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    );
}

#[tokio::test]
async fn fifos_in_the_context_are_not_read() {
    let f = Fixture::new("FROM {base}\nCOPY . /ctx/\n").await;
    let fifo = f.dir.path().join("ctx/pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    run(&f.request("state")).await.0.unwrap();
    assert_eq!(
        file_in_image(&f.out(), "ctx/greeting.txt").as_deref(),
        Some("hello\n")
    );
    assert_eq!(file_in_image(&f.out(), "ctx/pipe"), None);
}
