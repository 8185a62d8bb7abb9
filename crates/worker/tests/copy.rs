//! COPY and ADD, done by the worker without a container.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};

use common::*;
use rbk_worker::{RuntimeKind, StepInputs, logs::discard};
use serde_json::json;

fn context() -> (tempfile::TempDir, StepInputs) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("src/sub")).unwrap();
    std::fs::write(ctx.path().join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(ctx.path().join("src/sub/lib.rs"), "// lib\n").unwrap();
    std::fs::write(ctx.path().join("src/debug.log"), "noise\n").unwrap();
    std::fs::write(ctx.path().join("app.conf"), "key=value\n").unwrap();
    let inputs = StepInputs { context: Some(ctx.path().to_path_buf()), ..Default::default() };
    (ctx, inputs)
}

fn copy(sources: serde_json::Value, dest: &str) -> serde_json::Value {
    json!({"kind": "copy", "sources": sources, "dest": dest})
}

fn ctx_src(path: &str) -> serde_json::Value {
    json!({"path": {"from": "context", "path": path}})
}

#[tokio::test]
async fn copy_applies_chown_and_chmod_to_every_copied_entry() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (_ctx, inputs) = context();
    let mut s = copy(json!([ctx_src("src")]), "/app/");
    s["chown"] = json!("nobody:nogroup");
    s["chmod"] = json!(0o750);
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    for p in ["app/main.rs", "app/sub", "app/sub/lib.rs"] {
        let entry = e.get(p).unwrap_or_else(|| panic!("{p} missing from {:?}", e.keys().collect::<Vec<_>>()));
        assert_eq!((entry.uid, entry.gid, entry.mode & 0o7777), (65534, 65534, 0o750), "{p}");
    }
    assert_eq!(e["app/main.rs"].data, b"fn main() {}\n");
}

#[tokio::test]
async fn copy_from_context_without_chown_is_owned_by_root_and_keeps_modes() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (ctx, inputs) = context();
    std::fs::set_permissions(ctx.path().join("app.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(ctx.path().join("app.conf"), Some(1234), Some(1234)).unwrap();
    let out = run_with(&ex, &base, copy(json!([ctx_src("app.conf")]), "/etc/app.conf"), &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!((e["etc/app.conf"].uid, e["etc/app.conf"].gid, e["etc/app.conf"].mode & 0o777), (0, 0, 0o640));
}

#[tokio::test]
async fn copy_excludes_matching_paths() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (_ctx, inputs) = context();
    let mut s = copy(json!([ctx_src("src")]), "/app");
    s["exclude"] = json!(["*.log", "sub"]);
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert!(e.contains_key("app/main.rs"));
    assert!(!e.contains_key("app/debug.log") && !e.contains_key("app/sub"), "{:?}", e.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn copy_expands_globs_into_a_directory() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (_ctx, inputs) = context();
    let out = run_with(&ex, &base, copy(json!([ctx_src("src/*.rs"), ctx_src("app.*")]), "/dst/"), &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert!(e.contains_key("dst/main.rs") && e.contains_key("dst/app.conf"), "{:?}", e.keys().collect::<Vec<_>>());
    assert!(!e.contains_key("dst/debug.log"));
}

#[tokio::test]
async fn copy_through_destination_symlinks_pointing_outside_stays_in_rootfs() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("victim");
    std::fs::create_dir(&host_dir).unwrap();
    // A base layer with hostile symlinks: absolute to a host path, and
    // relative climbing far above the root.
    let links = tempfile::tempdir().unwrap();
    symlink(&host_dir, links.path().join("abs")).unwrap();
    symlink("../../../../../../../../..".to_string() + &host_dir.display().to_string(), links.path().join("rel")).unwrap();
    let inputs = StepInputs { context: Some(links.path().to_path_buf()), ..Default::default() };
    let out = run_with(&ex, &base, copy(json!([ctx_src(".")]), "/"), &inputs).await;
    let image = extend(&base, out.layer.as_ref().unwrap());

    let (_ctx, inputs) = context();
    let out = run_on(&ex, &base.layout, &image, copy(json!([ctx_src("app.conf")]), "/abs/x"), &inputs).await;
    let out2 = run_on(&ex, &base.layout, &image, copy(json!([ctx_src("src")]), "/rel/tree/"), &inputs).await;
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0, "a COPY wrote to the host");
    let inside = host_dir.display().to_string().trim_start_matches('/').to_owned();
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e[&format!("{inside}/x")].data, b"key=value\n");
    let e2 = entries(out2.layer.as_ref().unwrap());
    assert!(e2.contains_key(&format!("{inside}/tree/main.rs")), "{:?}", e2.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn copy_source_symlink_cannot_read_outside_its_root() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (ctx, inputs) = context();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host-only").unwrap();
    symlink(secret.path(), ctx.path().join("sneaky")).unwrap();
    let s = copy(json!([ctx_src("sneaky")]), "/got");
    let err = ex.execute(&step(&base, s), &base.layout, &inputs, discard()).await.unwrap_err().to_string();
    assert!(err.contains("sneaky") && err.contains("not found"), "{err}");
}

#[tokio::test]
async fn copy_link_layer_holds_only_the_copied_files() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (_ctx, inputs) = context();
    let mut s = copy(json!([ctx_src("app.conf")]), "/etc/");
    s["link"] = json!(true);
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e.keys().collect::<Vec<_>>(), vec!["etc", "etc/app.conf"]);
}

#[tokio::test]
async fn copy_from_another_stage_keeps_its_owner() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let stage = ex.mount_readonly(&base.layers(), &base.layout).await.unwrap();
    let inputs = StepInputs { stages: [("builder".to_string(), stage.path().to_path_buf())].into(), ..Default::default() };
    let s = copy(json!([{"path": {"from": {"stage": "builder"}, "path": "/etc/passwd"}}]), "/copied/");
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert!(String::from_utf8_lossy(&e["copied/passwd"].data).contains("nobody"));
}

#[tokio::test]
async fn copying_a_tree_of_symlinks_onto_the_same_links_replaces_the_links_not_their_targets() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let stage = ex.mount_readonly(&base.layers(), &base.layout).await.unwrap();
    let inputs = StepInputs { stages: [("same".to_string(), stage.path().to_path_buf())].into(), ..Default::default() };
    // /bin holds busybox and its applets as links to it, here and in the
    // stage alike.
    let s = copy(json!([{"path": {"from": {"stage": "same"}, "path": "/bin"}}]), "/bin");
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e["bin/sh"].link.as_deref(), Some("busybox"));
    assert_eq!(e["bin/busybox"].kind, tar::EntryType::Regular, "busybox itself stays a file");
    let image = extend(&base, out.layer.as_ref().unwrap());
    let out = run_on(&ex, &base.layout, &image, json!({"kind": "run", "command": {"exec": ["/bin/sh", "-c", "echo still runs"]}}), &StepInputs::default()).await;
    assert!(out.succeeded(), "{:?}", out.tail);
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Raw name bytes, so hostile names (`..`) reach the archive as is.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn add_unpacks_a_local_tar_gz() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (ctx, inputs) = context();
    std::fs::write(ctx.path().join("bundle.tar.gz"), tar_gz(&[("pkg/a.txt", b"A"), ("pkg/b.txt", b"B")])).unwrap();
    let mut s = copy(json!([ctx_src("bundle.tar.gz")]), "/opt/");
    s["add"] = json!(true);
    let out = run_with(&ex, &base, s, &inputs).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e["opt/pkg/a.txt"].data, b"A");
    assert_eq!(e["opt/pkg/b.txt"].data, b"B");
    // COPY (not ADD) copies the archive as a file.
    let out = run_with(&ex, &base, copy(json!([ctx_src("bundle.tar.gz")]), "/opt/"), &inputs).await;
    assert!(entries(out.layer.as_ref().unwrap()).contains_key("opt/bundle.tar.gz"));
}

#[tokio::test]
async fn add_refuses_archive_entries_climbing_out_with_dotdot() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let (ctx, inputs) = context();
    std::fs::write(ctx.path().join("evil.tar.gz"), tar_gz(&[("ok.txt", b"ok"), ("../../../escaped.txt", b"x")])).unwrap();
    let mut s = copy(json!([ctx_src("evil.tar.gz")]), "/opt/");
    s["add"] = json!(true);
    let err = ex.execute(&step(&base, s), &base.layout, &inputs, discard()).await.unwrap_err().to_string();
    assert!(err.contains("../../../escaped.txt") && err.contains(".."), "{err}");
}

/// A real HTTP server (python3 -m http.server) serving `dir` on a free port.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &std::path::Path) -> Self {
        let port = rbk_testsupport::free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is needed to serve files for ADD <url> tests");
        rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "python3 http.server", std::time::Duration::from_secs(10));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn add_url_verifies_its_checksum() {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("tool.bin"), b"binary-bytes").unwrap();
    let server = HttpServer::start(served.path());
    let url = format!("http://127.0.0.1:{}/tool.bin", server.port);
    use sha2::Digest;
    let good = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"binary-bytes")));
    let mut s = json!({"kind": "copy", "add": true, "dest": "/usr/local/bin/", "sources": [{"url": {"url": url, "checksum": good}}]});
    let out = run(&ex, &base, s.clone()).await;
    let e = entries(out.layer.as_ref().unwrap());
    assert_eq!(e["usr/local/bin/tool.bin"].data, b"binary-bytes");
    assert_eq!(e["usr/local/bin/tool.bin"].mode & 0o777, 0o600);

    let bad = format!("sha256:{}", "0".repeat(64));
    s["sources"][0]["url"]["checksum"] = json!(bad);
    let err = ex.execute(&step(&base, s), &base.layout, &StepInputs::default(), discard()).await.unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains("checksum"), "{err}");
}
