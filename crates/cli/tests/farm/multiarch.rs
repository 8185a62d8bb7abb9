//! Multi-platform builds (issue #20, item 1): one Dockerfile built for
//! linux/amd64 and linux/arm64 in one `rbk submit` (coordinator + an amd64
//! worker emulating arm64 through QEMU) and in one `rbk build`; the result
//! is one OCI image index whose arm64 image was really built by arm64
//! code.
//!
//! Bases: busybox for amd64 (the host's busybox-static) and for arm64
//! (Debian's `busybox-static:arm64`, fetched by deploy/dev/setup.sh,
//! `RBK_TEST_BIN_BUSYBOX_ARM64`), made into one index by rbk's own image
//! code, pushed to the test registry (submit) or given as an OCI layout
//! (build). The tests register QEMU's aarch64 handler (binfmt_misc, `F`
//! flag) if it is not, and skip, saying why, only when the kernel refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbk_image::{OciLayout, Platform, PushOptions, RegistryClient, UnpackOptions};
use rbk_testsupport::program;
use rbk_worker::emulation::{BINFMT_MISC, emulated_platforms};

use crate::harness::{Farm, RBK, TENANT};
use crate::submit::{submit, succeeded};

/// Whether this machine runs linux/arm64 binaries through a fix-binary
/// QEMU handler, registering one if needed; `Err` says why it cannot.
fn arm64_emulation() -> Result<(), String> {
    let native = rbk_worker::payload::current_platform();
    if native == "linux/arm64" || emulated_platforms(Path::new(BINFMT_MISC), &native).iter().any(|p| p == "linux/arm64") {
        return Ok(());
    }
    if !Path::new(BINFMT_MISC).join("register").exists() {
        let mount = Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_MISC]).output().expect("running mount");
        if !mount.status.success() {
            return Err(format!("the kernel refused to mount binfmt_misc at {BINFMT_MISC}: {}", String::from_utf8_lossy(&mount.stderr).trim()));
        }
    }
    let update = Command::new("update-binfmts")
        .args(["--enable", "qemu-aarch64"])
        .output()
        .expect("update-binfmts is not installed: run deploy/dev/setup.sh (qemu-user-static, binfmt-support)");
    if emulated_platforms(Path::new(BINFMT_MISC), &native).iter().any(|p| p == "linux/arm64") {
        return Ok(());
    }
    Err(format!(
        "the kernel refused to register QEMU's aarch64 handler (update-binfmts --enable qemu-aarch64: {} {})",
        String::from_utf8_lossy(&update.stdout).trim(),
        String::from_utf8_lossy(&update.stderr).trim()
    ))
}

fn platform(p: &str) -> Platform {
    Platform::parse(p, "test").unwrap()
}

/// An OCI layout holding `busybox` as an index of amd64 and arm64 images.
fn busybox_layout(dir: &Path) -> (OciLayout, rbk_image::Descriptor) {
    let layout = OciLayout::create(dir).unwrap();
    let arm64 = program("busybox_arm64");
    let amd64 = program("busybox");
    let index = rbk_image::testimage::busybox_index(
        &layout,
        &[(platform("linux/amd64"), amd64.as_path()), (platform("linux/arm64"), arm64.as_path())],
        "busybox",
    )
    .unwrap();
    (layout, index)
}

/// A Dockerfile with a cross-compiling stage (runs natively, for the
/// target) and a final stage that runs on the target platform.
fn context(base: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM --platform=$BUILDPLATFORM {base} AS tools\n\
             ARG TARGETARCH\n\
             RUN echo \"made on $(uname -m) for $TARGETARCH\" > /note\n\
             \n\
             FROM {base}\n\
             ARG TARGETPLATFORM\n\
             ARG TARGETOS\n\
             ARG BUILDPLATFORM\n\
             COPY --from=tools /note /note\n\
             RUN --mount=type=cache,target=/cache echo \"$(uname -m)\" > /arch && echo \"$TARGETOS $TARGETPLATFORM from $BUILDPLATFORM\" > /args && uname -m >> /cache/seen\n"
        ),
    )
    .unwrap();
    dir
}

/// The root filesystem of `desc` (a single-platform manifest) in `layout`.
fn rootfs(layout: &OciLayout, desc: &rbk_image::Descriptor, dest: &Path) -> rbk_image::Image {
    let image = layout.load_image(desc, &Platform::linux_amd64()).unwrap();
    std::fs::create_dir_all(dest).unwrap();
    for l in image.layers() {
        rbk_image::unpack_layer_file(&layout.blob_path(&l.digest), dest, &UnpackOptions::default()).unwrap();
    }
    image
}

/// `uname -m` of the image's own busybox, run as its platform runs it:
/// natively, or through `qemu-aarch64-static` for arm64.
fn uname_m(root: &Path, arch: &str) -> String {
    let busybox = root.join("bin/busybox");
    let out = match arch {
        "arm64" => Command::new(qemu_aarch64()).arg(&busybox).args(["uname", "-m"]).output().unwrap(),
        _ => Command::new(&busybox).args(["uname", "-m"]).output().unwrap(),
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn qemu_aarch64() -> PathBuf {
    ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("qemu-aarch64-static is not installed: run deploy/dev/setup.sh (qemu-user-static)")
}

/// Checks each platform's image of the index `index` in `layout`: its
/// config's architecture, what its RUN steps saw, and its busybox.
fn check_images(layout: &OciLayout, index: &rbk_image::Descriptor, scratch: &Path) {
    let parsed: rbk_image::Index = rbk_image::model::from_json(&layout.read_blob(&index.digest).unwrap(), "index").unwrap();
    let platforms: Vec<String> = parsed.manifests.iter().map(|m| m.platform.as_ref().unwrap().to_string()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for m in &parsed.manifests {
        let arch = m.platform.as_ref().unwrap().architecture.clone();
        let (machine, target) = if arch == "arm64" { ("aarch64", "linux/arm64") } else { ("x86_64", "linux/amd64") };
        let root = scratch.join(&arch);
        let image = rootfs(layout, m, &root);
        assert_eq!(image.config.architecture, arch);
        let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap().trim().to_owned();
        assert_eq!(read("arch"), machine, "the {arch} image's RUN ran as {machine}");
        assert_eq!(read("args"), format!("linux {target} from linux/amd64"));
        assert_eq!(read("note"), format!("made on x86_64 for {arch}"), "the $BUILDPLATFORM stage runs natively, for the target");
        assert_eq!(uname_m(&root, &arch), machine);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_submit_builds_amd64_and_arm64_into_one_index_pushed_to_the_registry() {
    if let Err(why) = arm64_emulation() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = rbk_testsupport::registry();
    let bases = tempfile::tempdir().unwrap();
    let (layout, index) = busybox_layout(bases.path());
    let base = format!("{registry}/rbk-multiarch-busybox-{}:1", std::process::id());
    RegistryClient::new().unwrap().push(&layout, &index, &base.parse().unwrap(), &PushOptions::default()).await.unwrap();

    let farm = Farm::start().await;
    let _w = farm.worker("a", &["--emulation"]);
    let ctx = context(&base);
    let name = format!("{registry}/rbk-multiarch-{}:1", std::process::id());
    let oci = ctx.path().join("image.tar");
    let (digest, stderr) = succeeded(&submit(
        &farm,
        Some(TENANT),
        ctx.path(),
        &["--progress=plain", "--platform", "linux/amd64,linux/arm64", "-t", &name, "--push", "-o", &format!("type=oci,dest={}", oci.display())],
    ));
    assert!(stderr.contains("[linux/arm64 3/3] RUN --mount"), "progress names the platform: {stderr}");

    let raw = Command::new(program("skopeo")).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{name}")).output().unwrap();
    assert!(raw.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&raw.stderr));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let archs: Vec<&str> = index["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(rbk_image::OciDigest::of(&raw.stdout).to_string(), digest, "the pushed index is the one rbk submit printed");

    let pulled = OciLayout::create(ctx.path().join("pulled")).unwrap();
    let imported = rbk_image::import_oci(&oci, None, &Platform::linux_amd64(), &pulled).unwrap();
    assert_eq!(imported.config.architecture, "amd64");
    for p in ["linux/amd64", "linux/arm64"] {
        RegistryClient::new().unwrap().with_platform(platform(p)).pull(&name.parse().unwrap(), &pulled).await.unwrap();
    }
    let from_registry = rbk_image::Descriptor::for_bytes(rbk_image::media_type::OCI_INDEX, &raw.stdout);
    pulled.write_blob(&raw.stdout).unwrap();
    check_images(&pulled, &from_registry, &ctx.path().join("roots"));
}

#[test]
fn one_rbk_build_makes_an_index_of_both_platforms_and_refuses_a_docker_archive_of_it() {
    if let Err(why) = arm64_emulation() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let bases = tempfile::tempdir().unwrap();
    busybox_layout(bases.path());
    let ctx = context("busybox");
    let state = tempfile::tempdir().unwrap();
    let oci = ctx.path().join("image.tar");
    let build = |extra: &[&str]| {
        Command::new(RBK)
            .arg("build")
            .arg("--state-dir")
            .arg(state.path())
            .arg("--runtime-path")
            .arg(program("runc"))
            .args(["--platform", "linux/amd64", "--platform", "linux/arm64"])
            .arg("--base-image")
            .arg(format!("busybox={}:busybox", bases.path().display()))
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap()
    };
    let out = build(&["-o", &format!("type=oci,dest={}", oci.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar").arg("-xf").arg(&oci).arg("-C").arg(unpacked.path()).status().unwrap();
    assert!(status.success());
    let layout = OciLayout::open(unpacked.path()).unwrap();
    let index = layout.find(None).unwrap();
    assert_eq!(index.digest.to_string(), digest);
    assert_eq!(index.media_type, rbk_image::media_type::OCI_INDEX);
    check_images(&layout, &index, &unpacked.path().join("roots"));

    let docker = build(&["-o", &format!("type=docker,dest={}", ctx.path().join("docker.tar").display())]);
    let stderr = String::from_utf8_lossy(&docker.stderr);
    assert!(!docker.status.success());
    assert!(stderr.contains("docker's image format holds one platform's image") && stderr.contains("linux/arm64"), "{stderr}");
}
