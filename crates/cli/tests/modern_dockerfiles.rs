//! The "modern Dockerfiles" of the corpus (`tests/dockerfiles/*-modern-*`),
//! written as `docker init` and today's projects write them, built end to
//! end with `rbk build` on local bases and checked in the exported image.
//!
//! A case is the corpus layout (`context/` with its `Dockerfile`) plus:
//! - `toolchain/`: files laid over a busybox rootfs to make the base every
//!   name in `bases` stands for (stand-in `pip`, `npm`, `go` ... scripts:
//!   the point is the mount forms, not the toolchains, and no test reaches
//!   the network);
//! - `bases`: the `FROM` references (after ARG expansion), one a line;
//! - `expect`: one check a line on the final image: `PATH: TEXT` (the file
//!   holds TEXT), `PATH mode: OCTAL`, or `!PATH` (absent).

#[path = "common/oci_archive.rs"]
mod oci_archive;

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_archive::OciArchive;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dockerfiles")
}

fn modern_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("-modern-"))
        .collect();
    cases.sort();
    cases
}

/// Builds `case` into an OCI archive under `work`; panics with the
/// progress when the build fails.
fn build(case: &Path, work: &Path) -> (OciArchive, String) {
    if !work.join("base").exists() {
        let layout = rbk_image::OciLayout::create(work.join("base")).unwrap();
        let toolchain = case.join("toolchain");
        let overlay = toolchain.is_dir().then_some(toolchain.as_path());
        rbk_image::testimage::busybox_image_with(&layout, &rbk_testsupport::program("busybox"), "base", overlay).unwrap();
    }
    let out = work.join("image.tar");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbk"));
    cmd.arg("build")
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--runtime-path")
        .arg(rbk_testsupport::program("runc"))
        .arg("--progress=plain")
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()));
    let bases = std::fs::read_to_string(case.join("bases")).unwrap_or_default();
    for name in bases.lines().filter(|l| !l.trim().is_empty()) {
        cmd.arg("--base-image").arg(format!("{}={}", name.trim(), work.join("base").display()));
    }
    let o = cmd.arg(case.join("context")).output().unwrap();
    let progress = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{}:\n{progress}", case.display());
    (OciArchive::read(&out), progress)
}

/// The failed checks of `expect` on `image`.
fn failed_checks(image: &OciArchive, expect: &str) -> Vec<String> {
    let files = image.files();
    let mut failed = Vec::new();
    for line in expect.lines().filter(|l| !l.trim().is_empty()) {
        let ok = if let Some(absent) = line.strip_prefix('!') {
            !files.keys().any(|p| p == absent || p.starts_with(&format!("{absent}/")))
        } else if let Some((path, mode)) = line.split_once(" mode: ") {
            files.get(path).is_some_and(|e| format!("{:o}", e.mode) == mode)
        } else {
            let (path, text) = line.split_once(": ").unwrap_or_else(|| panic!("bad expect line {line:?}"));
            files.get(path).is_some_and(|e| String::from_utf8_lossy(&e.data).contains(text))
        };
        if !ok {
            failed.push(line.to_owned());
        }
    }
    failed
}

#[test]
fn the_corpus_has_the_modern_set() {
    let names: Vec<String> = modern_cases().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for lang in ["python", "node", "go"] {
        assert!(names.iter().any(|n| n.contains(lang)), "no modern {lang} case in {names:?}");
    }
}

#[test]
fn every_modern_dockerfile_builds_and_gives_the_expected_image() {
    for case in modern_cases() {
        let work = tempfile::tempdir().unwrap();
        let (image, progress) = build(&case, work.path());
        let expect = std::fs::read_to_string(case.join("expect")).unwrap_or_else(|e| panic!("{}/expect: {e}", case.display()));
        let failed = failed_checks(&image, &expect);
        assert!(failed.is_empty(), "{}: failed checks {failed:?}\nfiles: {:?}\n{progress}", case.display(), image.files().keys().collect::<Vec<_>>());
    }
}

#[test]
fn a_modern_python_build_reuses_pips_cache_when_requirements_change() {
    let case = corpus().join("133-modern-python-docker-init");
    let work = tempfile::tempdir().unwrap();
    // A copy of the case whose requirements.txt this test may change.
    let copy = work.path().join("case");
    assert!(Command::new("cp").arg("-a").arg(&case).arg(&copy).status().unwrap().success());
    build(&copy, work.path());
    let req = copy.join("context/requirements.txt");
    let mut text = std::fs::read_to_string(&req).unwrap();
    text.push_str("httpx==0.27.0\n");
    std::fs::write(&req, text).unwrap();
    let (image, progress) = build(&copy, work.path());
    assert!(progress.contains("Using cached fastapi==0.110.0"), "{progress}");
    assert!(progress.contains("Building wheel for httpx==0.27.0"), "{progress}");
    assert_eq!(image.text("usr/local/lib/python3.12/site-packages/httpx.dist-info").as_deref(), Some("httpx==0.27.0\n"));
}
