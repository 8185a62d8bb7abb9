//! Item 5: local `ADD` archives are extracted whatever their compression
//! (gzip, bzip2, xz, zstd or none), recognised by content, not name; hard
//! links stay hard links from the context to the exported layer.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use crate::oci_archive::Entry;
use crate::support::{Project, busybox};

/// A tar holding `hello` (with `text`) and `hello-link`, a hard link to it.
fn tar_with_link(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello", text.as_bytes()).unwrap();
    let mut l = tar::Header::new_ustar();
    l.set_entry_type(tar::EntryType::Link);
    l.set_size(0);
    l.set_mode(0o644);
    b.append_link(&mut l, "hello-link", "hello").unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The entries of the layer that holds `path`, topmost first.
fn layer_with(layers: &[Vec<Entry>], path: &str) -> Vec<Entry> {
    layers.iter().rev().find(|l| l.iter().any(|e| e.path == path)).cloned().unwrap_or_else(|| panic!("no layer has {path}"))
}

/// `second` is a hard link to `first` in `layer` (a tar Link entry).
fn assert_linked(layer: &[Entry], first: &str, second: &str) {
    let a = layer.iter().find(|e| e.path == first).unwrap_or_else(|| panic!("{first} missing: {layer:?}"));
    let b = layer.iter().find(|e| e.path == second).unwrap_or_else(|| panic!("{second} missing: {layer:?}"));
    let (file, link) = if a.kind == tar::EntryType::Link { (b, a) } else { (a, b) };
    assert_eq!(file.kind, tar::EntryType::Regular, "{file:?}");
    assert_eq!(link.kind, tar::EntryType::Link, "{link:?}");
    assert_eq!(link.link.as_deref().map(|l| l.trim_start_matches("./")), Some(file.path.as_str()));
}

#[tokio::test]
async fn add_extracts_tarballs_of_every_compression_recognised_by_content() {
    let base = busybox().await;
    let p = Project::new();
    // Names say nothing about the content: only the bytes do.
    p.write("plain.data", tar_with_link("plain\n"));
    p.write("a.data", gzip(&tar_with_link("gzip\n")));
    p.write("b.data", bzip2(&tar_with_link("bzip2\n")));
    p.write("c.data", xz(&tar_with_link("xz\n")));
    p.write("d.data", zstd::encode_all(&tar_with_link("zstd\n")[..], 3).unwrap());
    p.write("notes.txt.gz", gzip(b"not a tar\n"));
    let df = format!(
        "FROM {base}\nADD plain.data /plain/\nADD a.data /gzip/\nADD b.data /bzip2/\nADD c.data /xz/\nADD d.data /zstd/\nADD notes.txt.gz /notes/\n"
    );
    let (_, img) = p.build_oci(&df, &[]);
    for kind in ["plain", "gzip", "bzip2", "xz", "zstd"] {
        assert_eq!(img.file(&format!("{kind}/hello")), Some(format!("{kind}\n")), "{kind}");
        let layer = layer_with(&img.layers(), &format!("{kind}/hello"));
        assert_linked(&layer, &format!("{kind}/hello"), &format!("{kind}/hello-link"));
    }
    assert!(img.file("notes/notes.txt.gz").is_some(), "a compressed file that is no tar is copied as it is");
}

#[tokio::test]
async fn hard_links_in_the_context_stay_hard_links_in_the_layer_and_the_local_output() {
    let base = busybox().await;
    let p = Project::new();
    let first = p.write("app/bin/tool", "#!/bin/sh\necho tool\n");
    std::fs::hard_link(&first, p.ctx().join("app/bin/tool-alias")).unwrap();
    let root = p.path("rootfs");
    let local = format!("type=local,dest={}", root.display());
    let (_, img) = p.build_oci(&format!("FROM {base}\nCOPY app /app\n"), &["-o", &local]);
    let layer = layer_with(&img.layers(), "app/bin/tool");
    assert_linked(&layer, "app/bin/tool", "app/bin/tool-alias");
    let (a, b) = (std::fs::metadata(root.join("app/bin/tool")).unwrap(), std::fs::metadata(root.join("app/bin/tool-alias")).unwrap());
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one file with two names in type=local");
}

/// `python3 -m http.server` serving a directory on 127.0.0.1, stopped on
/// drop.
struct Served {
    child: std::process::Child,
    port: u16,
}

impl Served {
    fn start(dir: &std::path::Path) -> Served {
        let port = rbk_testsupport::free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rbk_testsupport::wait_for_port(&format!("127.0.0.1:{port}"), "python3 -m http.server", std::time::Duration::from_secs(10));
        Served { child, port }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_downloaded_archive_is_unpacked_only_with_unpack_true() {
    let base = busybox().await;
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("bundle.tgz"), gzip(&tar_with_link("remote\n"))).unwrap();
    let srv = Served::start(served.path());
    let url = format!("http://127.0.0.1:{}/bundle.tgz", srv.port);
    let p = Project::new();
    let (_, img) = p.build_oci(&format!("FROM {base}\nADD --unpack=true {url} /unpacked/\nADD {url} /kept/\n"), &[]);
    assert_eq!(img.file("unpacked/hello").as_deref(), Some("remote\n"));
    assert!(img.file("kept/bundle.tgz").is_some(), "without --unpack a URL's file is copied as it is");
    assert_eq!(img.file("kept/hello"), None);
}
