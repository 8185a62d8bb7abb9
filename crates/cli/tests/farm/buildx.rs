//! `docker buildx build`'s flags on the farm: `rbk submit` carries the
//! build's `--add-host`, `--ulimit` and `--shm-size` to the RUN steps a
//! real `rbk worker` runs, labels the image and writes `--iidfile` and
//! `--metadata-file` (the flags are `rbk build`'s, `crates/cli/tests/buildx.rs`).

use rbk_testsupport::program;

use crate::harness::{Farm, TENANT};
use crate::submit::{submit, succeeded};

#[tokio::test(flavor = "multi_thread")]
async fn submit_carries_the_buildx_flags_to_the_workers_steps_and_the_image() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN grep db.internal /etc/hosts; ulimit -n; df -k /dev/shm | tail -1\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (iid, meta) = (out.path().join("iid"), out.path().join("meta.json"));
    let flags = [
        "--progress=plain",
        "--add-host=db.internal:10.9.8.7",
        "--ulimit=nofile=999",
        "--shm-size=32m",
        "--label=team=farm",
        "--tag=example/farm:1",
        &format!("--iidfile={}", iid.display()),
        &format!("--metadata-file={}", meta.display()),
    ];
    let (digest, progress) = succeeded(&submit(&farm, Some(TENANT), ctx.path(), &flags));
    assert!(progress.contains(" 10.9.8.7\tdb.internal\n"), "{progress}");
    assert!(progress.contains(" 999\n"), "{progress}");
    assert!(progress.lines().any(|l| l.contains(" 32768 ") && l.ends_with("/dev/shm")), "{progress}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], digest.as_str(), "{m}");
    assert_eq!(m["containerimage.config.digest"], std::fs::read_to_string(&iid).unwrap().as_str(), "{m}");
    assert_eq!(m["image.name"], "example/farm:1", "{m}");
}

/// `--metadata-file` names the build as buildx does
/// (`buildx.build.ref` = `builder/node/ref`): `rbk/farm/<build id>`, the
/// id `rbk builds inspect` takes (as `docker buildx history inspect`
/// takes buildx's ref), with the keys `docker/build-push-action` reads.
#[tokio::test(flavor = "multi_thread")]
async fn the_metadata_file_names_the_farm_build_that_made_the_image() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), ctx.path().join("busybox")).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY busybox /bin/busybox\n").unwrap();
    let meta = ctx.path().join("meta.json");
    let (digest, _) = succeeded(&submit(&farm, Some(TENANT), ctx.path(), &[&format!("--metadata-file={}", meta.display())]));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], digest.as_str(), "{m}");
    let config = m["containerimage.config.digest"].as_str().unwrap_or_else(|| panic!("{m}"));
    assert_eq!(m["containerimage.descriptor"]["annotations"]["config.digest"], config, "{m}");
    let build_ref = m["buildx.build.ref"].as_str().unwrap_or_else(|| panic!("{m}"));
    let build_id = build_ref.strip_prefix("rbk/farm/").unwrap_or_else(|| panic!("{build_ref}"));
    let inspect = std::process::Command::new(crate::harness::RBK)
        .args(["builds", "inspect", build_id, "--coordinator", &farm.url, "--token", TENANT])
        .env_remove("RBK_COORDINATOR")
        .env_remove("RBK_TOKEN")
        .output()
        .unwrap();
    assert!(inspect.status.success(), "rbk builds inspect {build_id}: {}", String::from_utf8_lossy(&inspect.stderr));
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("COPY busybox"), "{}", String::from_utf8_lossy(&inspect.stdout));
}
