//! Item 7: `rbk build` writes every output `rbk submit` does, read the
//! same way (`-o type=local|tar|oci|docker|image|registry`, `compression=`,
//! `--push`, `--load`).

use std::io::Read;

use crate::oci_archive::OciArchive;
use crate::support::{Project, busybox, registry, registry_digest, registry_manifest, skopeo};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

async fn dockerfile() -> String {
    format!("FROM {}\nRUN echo built > /out\n", busybox().await)
}

#[tokio::test]
async fn type_local_and_type_tar_write_the_root_filesystem() {
    let p = Project::new();
    let (root, tarball) = (p.path("rootfs"), p.path("rootfs.tar"));
    let local = format!("type=local,dest={}", root.display());
    let tar = format!("type=tar,dest={}", tarball.display());
    p.build(&dockerfile().await, &["-o", &local, "-o", &tar]).assert_ok();
    assert_eq!(std::fs::read_to_string(root.join("out")).unwrap(), "built\n");
    assert!(root.join("bin/busybox").is_file());
    let mut found = None;
    let mut a = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "out" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            found = Some(s);
        }
    }
    assert_eq!(found.as_deref(), Some("built\n"));
}

#[tokio::test]
async fn type_image_with_push_sends_the_image_to_the_registry() {
    let p = Project::new();
    let tag = format!("{}/imgsrc-push:1", registry());
    let built = p.build(&dockerfile().await, &["-o", &format!("type=image,name={tag},push=true")]).assert_ok();
    assert_eq!(registry_digest(&tag), built.digest);
    assert!(built.progress.contains(&format!("pushing {tag}")), "{}", built.progress);
}

#[tokio::test]
async fn push_flag_pushes_under_every_tag() {
    let p = Project::new();
    let (a, b) = (format!("{}/imgsrc-push-flag:a", registry()), format!("{}/imgsrc-push-flag:b", registry()));
    let built = p.build(&dockerfile().await, &["--push", "-t", &a, "-t", &b]).assert_ok();
    assert_eq!(registry_digest(&a), built.digest);
    assert_eq!(registry_digest(&b), built.digest);
}

#[tokio::test]
async fn compression_zstd_recompresses_the_built_layers_and_leaves_the_base_alone() {
    let p = Project::new();
    let df = dockerfile().await;
    let dest = p.path("zstd.tar");
    p.build(&df, &["-o", &format!("type=oci,dest={},compression=zstd,compression-level=9", dest.display())]).assert_ok();
    let img = OciArchive::read(&dest);
    assert_eq!(img.layer_media_types(), [GZIP, ZSTD], "base layer as pulled, the RUN's in zstd");
    assert_eq!(img.file("out").as_deref(), Some("built\n"));
    skopeo(&["inspect", &format!("oci-archive:{}", dest.display())]);

    let forced = p.path("forced.tar");
    p.build(&df, &["-o", &format!("type=oci,dest={},compression=zstd,force-compression=true", forced.display())]).assert_ok();
    assert_eq!(OciArchive::read(&forced).layer_media_types(), [ZSTD, ZSTD]);
}

#[tokio::test]
async fn compression_uncompressed_is_pushed_as_plain_tar_layers() {
    let p = Project::new();
    let tag = format!("{}/imgsrc-uncompressed:1", registry());
    let o = format!("type=registry,name={tag},compression=uncompressed,force-compression=true");
    p.build(&dockerfile().await, &["-o", &o]).assert_ok();
    let m = registry_manifest(&tag);
    let types: Vec<&str> = m["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(types, [PLAIN, PLAIN]);
}

#[tokio::test]
async fn a_bad_compression_is_refused_naming_the_value() {
    let p = Project::new();
    let built = p.build(&dockerfile().await, &["-o", "type=oci,dest=x.tar,compression=brotli"]);
    assert!(!built.ok);
    assert!(built.progress.contains("compression=brotli: expected gzip, zstd or uncompressed"), "{}", built.progress);
}

/// Whether a docker daemon answers here.
fn docker_daemon() -> bool {
    std::process::Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn load_hands_the_image_to_docker_or_says_clearly_why_it_cannot() {
    let p = Project::new();
    let tag = "rbk-imgsrc-load:1";
    let built = p.build(&dockerfile().await, &["--load", "-t", tag]);
    if docker_daemon() {
        assert!(built.ok, "{}", built.progress);
        let out = std::process::Command::new("docker").args(["image", "inspect", tag]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        assert!(!built.ok, "{}", built.progress);
        assert!(built.progress.contains("--load:"), "{}", built.progress);
        assert!(built.progress.contains("type=docker,dest=FILE"), "{}", built.progress);
    }
}
