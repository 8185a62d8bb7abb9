//! `deploy/Dockerfile`, the rbk image, built by rbk itself and run under runc.
//!
//! The real build starts from a debootstrap Debian (README: "Container
//! image"); here the `debian:bookworm-slim` base is a small stand-in made on
//! the spot — the host's busybox, runc, crun and the shared libraries they
//! and rbk link — so the test needs no debootstrap and no registry. The
//! Dockerfile, its .dockerignore and the build command are the real ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A program from deploy/dev/services.sh's `RBK_TEST_BIN_*`, else PATH.
fn program(name: &str) -> PathBuf {
    let key = format!("RBK_TEST_BIN_{}", name.to_uppercase());
    let found = std::env::var_os(&key).map(Into::into).or_else(|| {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
    });
    found.unwrap_or_else(|| panic!("{name} is not installed ({key} unset, not on PATH); run deploy/dev/setup.sh"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The shared libraries `binaries` load, by the absolute paths `ldd` prints.
fn shared_libraries(binaries: &[&Path]) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for b in binaries {
        let out = run(Command::new("ldd").arg(b));
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') && !libs.iter().any(|l| l == Path::new(word)) {
                libs.push(word.into());
            }
        }
    }
    libs
}

fn copy_into(root: &Path, host: &Path, at: &str) {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    // Follows symlinks: the image gets the library itself under the name
    // the loader asks for.
    std::fs::copy(host, &dest).unwrap_or_else(|e| panic!("copying {} to {}: {e}", host.display(), dest.display()));
}

/// Unpacks an OCI archive (`rbk build -o type=oci`) into a layout directory.
fn unpack_oci(archive: &Path, dir: &Path) {
    tar::Archive::new(std::fs::File::open(archive).unwrap()).unpack(dir).unwrap();
    assert!(dir.join("index.json").is_file(), "{} holds no OCI layout", archive.display());
}

fn rbk_build(state: &Path, args: &[&str], context: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_rbk"))
        .arg("build")
        .arg("--state-dir")
        .arg(state)
        .arg("--runtime-path")
        .arg(program("runc"))
        .args(args)
        .arg(context))
}

/// A `debian:bookworm-slim` stand-in: busybox, runc, crun, pasta and the
/// libraries of runc, crun, pasta and rbk, as an OCI layout.
fn stand_in_base(work: &Path) -> PathBuf {
    let ctx = work.join("base-context");
    let root = ctx.join("rootfs");
    let (runc, crun, pasta, rbk) = (program("runc"), program("crun"), program("pasta"), PathBuf::from(env!("CARGO_BIN_EXE_rbk")));
    copy_into(&root, &program("busybox"), "/bin/busybox");
    copy_into(&root, &runc, "/usr/sbin/runc");
    copy_into(&root, &crun, "/usr/bin/crun");
    copy_into(&root, &pasta, "/usr/bin/pasta");
    for lib in shared_libraries(&[&runc, &crun, &pasta, &rbk]) {
        copy_into(&root, &lib, lib.to_str().unwrap());
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n")
        .unwrap();
    let archive = work.join("base.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    rbk_build(&work.join("base-state"), &["-t", "debian:bookworm-slim", "-o", &dest], &ctx);
    let layout = work.join("base-oci");
    unpack_oci(&archive, &layout);
    layout
}

/// The context `rbk build -f deploy/Dockerfile .` sees in the repository:
/// the binary at target/release/rbk (stripped, to keep the test quick).
fn context_with_binary(work: &Path) -> PathBuf {
    let ctx = work.join("context");
    let bin = ctx.join("target/release/rbk");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rbk"), &bin).unwrap();
    run(Command::new("strip").arg(&bin));
    ctx
}

/// `rbk build -f deploy/Dockerfile` of the context [`context_with_binary`]
/// makes, on the stand-in base, with `extra` flags, into an OCI layout
/// under `work`; returns the build's output and the layout.
fn build_deploy_image(work: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let base = stand_in_base(work);
    let ctx = context_with_binary(work);
    let image = work.join("rbk-image.tar");
    let dockerfile = repo().join("deploy/Dockerfile");
    let base_image = format!("debian:bookworm-slim={}", base.display());
    let output = format!("type=oci,dest={}", image.display());
    let mut args = vec!["-f", dockerfile.to_str().unwrap(), "--base-image", &base_image];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", &output]);
    let out = rbk_build(&work.join("state"), &args, &ctx);
    let layout = work.join("rbk-oci");
    unpack_oci(&image, &layout);
    (out, layout)
}

/// Runs `argv` (exec form) in the image at `layout` with `rbk run-step`
/// under the real runc; returns the step's log (stderr).
fn run_in_image(work: &Path, layout: &Path, argv: &[&str]) -> String {
    let step = work.join("step.json");
    let payload = serde_json::json!({"kind": "run", "command": {"exec": argv}});
    std::fs::write(&step, payload.to_string()).unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_rbk"))
        .arg("run-step")
        .arg(&step)
        .arg("--base")
        .arg(layout)
        .arg("--state")
        .arg(work.join("run-state"))
        .arg("--runtime-path")
        .arg(program("runc")));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_deploy_dockerfile_builds_with_rbk_and_the_image_runs_rbk_under_runc() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (out, layout) = build_deploy_image(work, &["-t", "rbk:test", "--progress=plain"]);
    let log = String::from_utf8_lossy(&out.stderr);
    let version = format!("rbk {}", env!("CARGO_PKG_VERSION"));
    assert!(log.contains(&version), "the build's own `rbk --version` step printed no {version:?}:\n{log}");

    // The produced image, run under the real runc by rbk's worker.
    let stderr = run_in_image(work, &layout, &["/usr/local/bin/rbk", "--version"]);
    // `rbk 0.1.0 (commit abc123)`: the version, then the commit it was built from.
    assert!(stderr.lines().any(|l| l.contains(&format!(" out {version} (commit "))), "no {version:?} from the image:\n{stderr}");
}

#[test]
fn the_image_starts_rbk_and_records_its_runtimes() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (_, layout) = build_deploy_image(work, &[]);
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/rbk"]));
    assert_eq!(config["config"]["WorkingDir"], "/var/lib/rbk");

    let stderr = run_in_image(work, &layout, &["/bin/cat", "/usr/share/rbk/runtimes"]);
    assert!(stderr.contains("out runc version") && stderr.contains("out crun version"), "{stderr}");
}

#[test]
fn the_release_script_pushes_the_image_rbk_built_and_the_packaged_chart_to_a_registry() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let base = stand_in_base(work);
    let ctx = context_with_binary(work);
    let unique = work.file_name().unwrap().to_string_lossy().to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let registry = format!("{}/release-{unique}", rbk_testsupport::registry());
    let out = run(Command::new(repo().join("deploy/release.sh"))
        .arg(&registry)
        .arg("--base-image")
        .arg(format!("debian:bookworm-slim={}", base.display()))
        .arg("--plain-http")
        .env("RBK", env!("CARGO_BIN_EXE_rbk"))
        .env("RELEASE_CONTEXT", &ctx)
        .env("RELEASE_STATE", work.join("release-state"))
        .env("RELEASE_BUILD_FLAGS", format!("--runtime-path {}", program("runc").display())));
    let version = env!("CARGO_PKG_VERSION");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("image {registry}/rbk:{version} sha256:")), "{printed}");

    // What a registry client sees: the image rbk built, and the chart as Helm pushes it.
    let raw = |reference: &str| {
        let out = run(Command::new(program("skopeo")).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let image = raw(&format!("{registry}/rbk:{version}"));
    assert_eq!(image["config"]["mediaType"], "application/vnd.oci.image.config.v1+json", "{image}");
    let chart = raw(&format!("{registry}/charts/rbk:{version}"));
    assert_eq!(chart["config"]["mediaType"], "application/vnd.cncf.helm.config.v1+json", "{chart}");
    assert_eq!(chart["layers"][0]["mediaType"], "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "{chart}");
}
