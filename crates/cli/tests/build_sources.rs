//! `rbk build` end to end for the sources and mounts of today's
//! Dockerfiles: context bind mounts, heredoc files, seeded caches, secrets
//! as variables, `COPY --parents`, `--exclude` and symbolic `--chmod`.
//! Each builds on a local busybox base (`--base-image`, no registry) with
//! runc and reads the result back from the exported OCI archive.

#[path = "common/oci_archive.rs"]
mod oci_archive;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use oci_archive::{OciArchive, files_containing};

struct Build {
    dir: tempfile::TempDir,
}

/// What one `rbk build` printed.
struct Outcome {
    ok: bool,
    progress: String,
}

impl Build {
    /// A context holding `files` and a Dockerfile (`FROM busybox` is the
    /// local base).
    fn new(dockerfile: &str, files: &[(&str, &str)]) -> Build {
        let dir = tempfile::tempdir().unwrap();
        let layout = rbk_image::OciLayout::create(dir.path().join("base")).unwrap();
        rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "busybox:latest").unwrap();
        let b = Build { dir };
        std::fs::create_dir_all(b.ctx()).unwrap();
        std::fs::write(b.ctx().join("Dockerfile"), dockerfile).unwrap();
        for (path, content) in files {
            b.write(path, content);
        }
        b
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn write(&self, path: &str, content: &str) {
        let p = self.ctx().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("image.tar")
    }

    fn run(&self, extra: &[&str]) -> Outcome {
        let out = Command::new(env!("CARGO_BIN_EXE_rbk"))
            .arg("build")
            .arg("--state-dir")
            .arg(self.state())
            .arg("--runtime-path")
            .arg(rbk_testsupport::program("runc"))
            .arg("--base-image")
            .arg(format!("busybox={}", self.dir.path().join("base").display()))
            .arg("--progress=plain")
            .arg("-o")
            .arg(format!("type=oci,dest={}", self.out().display()))
            .args(extra)
            .arg(self.ctx())
            .output()
            .unwrap();
        Outcome { ok: out.status.success(), progress: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    /// Builds and expects success; returns the image.
    fn image(&self, extra: &[&str]) -> (OciArchive, String) {
        let o = self.run(extra);
        assert!(o.ok, "{}", o.progress);
        (OciArchive::read(&self.out()), o.progress)
    }
}

/// Whether the plain progress shows the step containing `text` as CACHED.
#[path = "common/plain_progress.rs"]
mod plain_progress;

fn cached(progress: &str, text: &str) -> bool {
    plain_progress::is_cached(progress, text)
}

// 1. Context bind mounts.

const PIP_LIKE: &str = "FROM busybox
WORKDIR /app
RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \\
    sh -c 'cat /tmp/requirements.txt > /app/installed; (echo x >> /tmp/requirements.txt) 2>/dev/null && echo rw > /app/mode || echo ro > /app/mode'
COPY app.py .
";

#[test]
fn a_context_bind_mount_is_read_only_and_leaves_nothing_in_the_image() {
    let b = Build::new(PIP_LIKE, &[("requirements.txt", "flask==3.0\n"), ("app.py", "print('hi')\n")]);
    let (image, _) = b.image(&[]);
    assert_eq!(image.text("app/installed").as_deref(), Some("flask==3.0\n"));
    assert_eq!(image.text("app/mode").as_deref(), Some("ro\n"), "bind mounts are read-only by default");
    let files = image.files();
    assert!(!files.contains_key("tmp/requirements.txt"), "the mount point is not left in the layer");
    assert!(!files.contains_key("app/requirements.txt"));
}

#[test]
fn only_the_bind_mounted_file_keys_the_step() {
    let b = Build::new(PIP_LIKE, &[("requirements.txt", "flask==3.0\n"), ("app.py", "print('hi')\n"), ("README.md", "one\n")]);
    b.image(&[]);
    // A file no step reads, and one only the COPY reads: the RUN stays cached.
    b.write("README.md", "two\n");
    b.write("app.py", "print('bye')\n");
    let (image, progress) = b.image(&[]);
    assert!(cached(&progress, "RUN --mount=type=bind"), "{progress}");
    assert!(!cached(&progress, "COPY app.py"), "{progress}");
    assert_eq!(image.text("app/app.py").as_deref(), Some("print('bye')\n"));
    // The mounted file: the RUN runs again and sees the new content.
    b.write("requirements.txt", "flask==3.1\n");
    let (image, progress) = b.image(&[]);
    assert!(!cached(&progress, "RUN --mount=type=bind"), "{progress}");
    assert_eq!(image.text("app/installed").as_deref(), Some("flask==3.1\n"));
}

#[test]
fn an_rw_bind_mount_of_the_context_takes_writes_and_discards_them() {
    let b = Build::new(
        "FROM busybox\nRUN --mount=type=bind,source=src,target=/src,rw sh -c 'echo built > /src/out && cat /src/out /src/main.c > /result'\nRUN --mount=type=bind,source=src,target=/src ls /src > /after\n",
        &[("src/main.c", "int main;\n")],
    );
    let (image, _) = b.image(&[]);
    assert_eq!(image.text("result").as_deref(), Some("built\nint main;\n"));
    assert_eq!(image.text("after").as_deref(), Some("main.c\n"), "the write did not outlive its step");
    assert!(!image.files().keys().any(|p| p.starts_with("src")), "{:?}", image.files().keys().collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(b.ctx().join("src/main.c")).unwrap(), "int main;\n");
    assert!(!b.ctx().join("src/out").exists(), "the context itself is never written");
}

#[test]
fn a_bind_mount_without_source_is_the_whole_context_after_dockerignore() {
    let b = Build::new(
        "FROM busybox\nWORKDIR /src\nRUN --mount=type=bind,target=. find . -type f | sort > /listing\n",
        &[("go.mod", "module x\n"), ("cmd/main.go", "package main\n"), ("secret.env", "X=1\n"), (".dockerignore", "secret.env\n")],
    );
    let (image, _) = b.image(&[]);
    assert_eq!(image.text("listing").as_deref(), Some("./.dockerignore\n./Dockerfile\n./cmd/main.go\n./go.mod\n"));
}

// 3. Heredocs.

#[test]
fn copy_heredocs_write_files_expanding_variables_unless_the_delimiter_is_quoted() {
    let df = "FROM busybox\nARG GREETING=hello\nCOPY <<EOF /etc/motd\n$GREETING from rbk\nEOF\nCOPY <<\"EOF\" /etc/raw\n$GREETING stays\nEOF\nCOPY <<-EOT /etc/tabs\n\tindented\n\t\tdeeper\n\tEOT\n";
    let (image, _) = Build::new(df, &[]).image(&[]);
    assert_eq!(image.text("etc/motd").as_deref(), Some("hello from rbk\n"));
    assert_eq!(image.text("etc/raw").as_deref(), Some("$GREETING stays\n"));
    assert_eq!(image.text("etc/tabs").as_deref(), Some("indented\ndeeper\n"), "<<- strips leading tabs");
    let files = image.files();
    assert_eq!((files["etc/motd"].mode, files["etc/motd"].uid), (0o644, 0));
}

#[test]
fn several_copy_heredocs_land_in_a_directory_by_name_with_their_chmod() {
    let df = "FROM busybox\nCOPY --chmod=0755 <<start.sh <<stop.sh /usr/local/bin/\n#!/bin/sh\necho start\nstart.sh\n#!/bin/sh\necho stop\nstop.sh\nRUN start.sh > /started && stop.sh > /stopped\n";
    let (image, _) = Build::new(df, &[]).image(&[]);
    let files = image.files();
    assert_eq!(files["usr/local/bin/start.sh"].mode, 0o755);
    assert_eq!(image.text("usr/local/bin/stop.sh").as_deref(), Some("#!/bin/sh\necho stop\n"));
    assert_eq!(image.text("started").as_deref(), Some("start\n"));
    assert_eq!(image.text("stopped").as_deref(), Some("stop\n"));
}

#[test]
fn every_run_heredoc_form_runs() {
    let df = "FROM busybox
RUN <<EOF
echo plain > /plain
EOF
RUN <<EOF
#!/bin/sh -e
echo \"shebang $0\" > /shebang
EOF
RUN cat <<EOF > /fed
fed to a command
EOF
RUN cat <<a > /one && cat <<b > /two
first
a
second
b
RUN <<-EOF
\techo tabs > /tabs
\tEOF
";
    let (image, _) = Build::new(df, &[]).image(&[]);
    assert_eq!(image.text("plain").as_deref(), Some("plain\n"));
    assert_eq!(image.text("shebang").as_deref(), Some("shebang /dev/pipes/EOF\n"));
    assert_eq!(image.text("fed").as_deref(), Some("fed to a command\n"));
    assert_eq!(image.text("one").as_deref(), Some("first\n"));
    assert_eq!(image.text("two").as_deref(), Some("second\n"));
    assert_eq!(image.text("tabs").as_deref(), Some("tabs\n"));
    assert!(!image.files().keys().any(|p| p.starts_with("dev/pipes")), "the script file is not left in the layer");
}

// 4. Seeded caches, secret variables, COPY --parents/--exclude, --chmod.

#[test]
fn a_new_cache_mount_starts_with_the_seed_stages_directory() {
    let df = "FROM busybox AS seed
RUN mkdir -p /opt/wheels && echo prebuilt > /opt/wheels/a.whl
FROM busybox
RUN --mount=type=cache,id=wheels,target=/cache,from=seed,source=/opt/wheels \\
    sh -c 'cat /cache/a.whl > /seen; echo mine > /cache/b.whl'
RUN --mount=type=cache,id=wheels,target=/cache ls /cache > /later
";
    let (image, _) = Build::new(df, &[]).image(&[]);
    assert_eq!(image.text("seen").as_deref(), Some("prebuilt\n"));
    assert_eq!(image.text("later").as_deref(), Some("a.whl\nb.whl\n"), "the seeded cache is the cache");
    assert!(!image.files().contains_key("cache/a.whl"));
}

#[test]
fn a_secret_as_a_variable_reaches_the_command_and_nothing_else() {
    const VALUE: &str = "s3cr3t-4f9a-value";
    let b = Build::new(
        "FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN sh -c '[ \"${TOKEN#s3cr3t-}\" != \"$TOKEN\" ] && echo ${#TOKEN} > /ok; echo \"token is $TOKEN\"'\n",
        &[],
    );
    let secret = b.dir.path().join("tok");
    std::fs::write(&secret, VALUE).unwrap();
    let (image, progress) = b.image(&["--secret", &format!("id=tok,src={}", secret.display())]);
    assert_eq!(image.text("ok").as_deref(), Some("17\n"), "the command saw the value: {progress}");
    assert!(progress.contains("token is "), "{progress}");
    assert!(!progress.contains(VALUE), "the log is redacted: {progress}");
    assert!(!image.contains(VALUE.as_bytes()), "in the image");
    let env = image.config()["config"]["Env"].to_string();
    assert!(!env.contains("TOKEN"), "no variable in the image config: {env}");
    assert!(!image.files().contains_key("run/secrets/tok"), "env= alone mounts no file");
    let leaks = files_containing(&b.state(), VALUE.as_bytes());
    assert!(leaks.is_empty(), "in the store, worker or coordinator state: {leaks:?}");
}

#[test]
fn copy_parents_keeps_each_sources_directories() {
    let b = Build::new(
        "FROM busybox\nCOPY --parents pkg/a/file.txt pkg/b/*.txt /dst/\n",
        &[("pkg/a/file.txt", "a\n"), ("pkg/b/file.txt", "b\n"), ("pkg/b/other.txt", "o\n")],
    );
    let (image, _) = b.image(&[]);
    assert_eq!(image.text("dst/pkg/a/file.txt").as_deref(), Some("a\n"));
    assert_eq!(image.text("dst/pkg/b/file.txt").as_deref(), Some("b\n"));
    assert_eq!(image.text("dst/pkg/b/other.txt").as_deref(), Some("o\n"));
    assert!(!image.files().contains_key("dst/file.txt"));
}

#[test]
fn copy_parents_keeps_only_the_directories_below_a_pivot() {
    // BuildKit's docs: `COPY --parents ./x/./y/*.txt /parents/` gives
    // /parents/y/a.txt; the same from another stage's rootfs.
    let b = Build::new(
        "FROM busybox AS tree\nRUN mkdir -p /srv/x/y && echo s > /srv/x/y/s.txt\n\
         FROM busybox\nCOPY --parents ./x/./y/*.txt ./x/./y/dir /parents/\nCOPY --from=tree --parents /srv/./x/y/s.txt /staged/\n",
        &[("x/y/a.txt", "a\n"), ("x/y/b.txt", "b\n"), ("x/y/dir/c.txt", "c\n")],
    );
    let (image, _) = b.image(&[]);
    assert_eq!(image.text("parents/y/a.txt").as_deref(), Some("a\n"));
    assert_eq!(image.text("parents/y/b.txt").as_deref(), Some("b\n"));
    assert_eq!(image.text("parents/y/dir/c.txt").as_deref(), Some("c\n"));
    assert_eq!(image.text("staged/x/y/s.txt").as_deref(), Some("s\n"));
    let files = image.files();
    assert!(!files.keys().any(|p| p.starts_with("parents/x") || p.starts_with("staged/srv")), "{:?}", files.keys().collect::<Vec<_>>());
}

#[test]
fn copy_exclude_leaves_out_matching_files() {
    let b = Build::new(
        "FROM busybox\nCOPY --exclude=*.log --exclude=tmp src/ /app/\n",
        &[("src/main.c", "int main;\n"), ("src/build.log", "noise\n"), ("src/tmp/x", "x\n")],
    );
    let (image, _) = b.image(&[]);
    let files = image.files();
    assert!(files.contains_key("app/main.c"));
    assert!(!files.contains_key("app/build.log") && !files.contains_key("app/tmp/x"), "{:?}", files.keys().collect::<Vec<_>>());
}

#[test]
fn a_symbolic_chmod_changes_each_copied_files_own_mode() {
    let b = Build::new("FROM busybox\nCOPY --chmod=u+x,g-w bin/ /opt/bin/\nCOPY --chmod=a+X tree/ /opt/tree/\n", &[
        ("bin/run.sh", "#!/bin/sh\n"),
        ("bin/data.txt", "d\n"),
        ("tree/sub/f", "f\n"),
    ]);
    for (p, m) in [("bin/run.sh", 0o664), ("bin/data.txt", 0o620), ("tree/sub/f", 0o640), ("tree/sub", 0o750)] {
        std::fs::set_permissions(b.ctx().join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let (image, _) = b.image(&[]);
    let files = image.files();
    assert_eq!(files["opt/bin/run.sh"].mode, 0o744);
    assert_eq!(files["opt/bin/data.txt"].mode, 0o700);
    assert_eq!(files["opt/tree/sub/f"].mode, 0o640, "X adds execute to directories and executables only");
    assert!(files["opt/tree/sub"].is_dir());
    assert_eq!(files["opt/tree/sub"].mode, 0o751);
}

#[test]
fn a_bad_symbolic_chmod_is_refused_naming_the_line() {
    let o = Build::new("FROM busybox\nCOPY --chmod=u+q a /a\n", &[("a", "a\n")]).run(&[]);
    assert!(!o.ok);
    assert!(o.progress.contains("Dockerfile:2") && o.progress.contains("--chmod=u+q"), "{}", o.progress);
}
