//! Capture → restore keeps every byte and every piece of metadata, and
//! incremental captures and restores move only what changed.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use rbk_snapshot::{Snapshot, capture, restore};

#[derive(Debug, Clone)]
enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
    Hardlink { to: usize },
}

#[derive(Debug, Clone)]
struct Spec {
    parent: usize,
    name: String,
    node: Node,
    owner: (u32, u32),
    mtime: (i64, u32),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        "[a-zA-Z0-9 ._\\-]{1,10}",
        "[é世界 \n\t\\\\'\"*?]{1,5}",
        Just(".hidden".to_owned()),
        Just("-dash".to_owned()),
        Just("x".repeat(200)),
    ]
    .prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => Just(Vec::new()),
        1 => (0usize..20_000, any::<u8>()).prop_map(|(n, b)| (0..n).map(|i| (i as u8).wrapping_mul(b) ^ (i >> 7) as u8).collect()),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => (content(), prop::sample::select(vec![0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750])).prop_map(|(data, mode)| Node::File { data, mode }),
        2 => prop::sample::select(vec![0o755, 0o700, 0o555, 0o1777]).prop_map(|mode| Node::Dir { mode }),
        1 => prop_oneof![Just("/etc/passwd".to_owned()), Just("../../outside".to_owned()), "[a-z/]{1,10}"].prop_map(|target| Node::Symlink { target }),
        1 => any::<usize>().prop_map(|to| Node::Hardlink { to }),
    ]
}

fn tree() -> impl Strategy<Value = Vec<Spec>> {
    proptest::collection::vec(
        (any::<usize>(), name(), node(), prop::sample::select(vec![(0, 0), (1000, 1000), (65534, 100)]), (0i64..2_000_000_000, 0u32..1_000_000_000)),
        0..25,
    )
    .prop_map(|v| v.into_iter().map(|(parent, name, node, owner, mtime)| Spec { parent, name, node, owner, mtime }).collect())
}

/// Builds the tree under `root`; returns nothing, the disk is the truth.
fn build(root: &Path, specs: &[Spec]) {
    std::fs::create_dir_all(root).unwrap();
    let mut dirs = vec![root.to_path_buf()];
    let mut files = Vec::new();
    let mut dir_meta = Vec::new();
    for s in specs {
        let parent = &dirs[s.parent % dirs.len()];
        let p = parent.join(&s.name);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match &s.node {
            Node::File { data, mode } => {
                std::fs::write(&p, data).unwrap();
                std::os::unix::fs::lchown(&p, Some(s.owner.0), Some(s.owner.1)).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
                set_mtime(&p, s.mtime.0, s.mtime.1);
                files.push(p);
            }
            Node::Dir { mode } => {
                std::fs::create_dir(&p).unwrap();
                dirs.push(p.clone());
                dir_meta.push((p, *mode, s));
            }
            Node::Symlink { target } => {
                std::os::unix::fs::symlink(target, &p).unwrap();
                std::os::unix::fs::lchown(&p, Some(s.owner.0), Some(s.owner.1)).unwrap();
                set_mtime(&p, s.mtime.0, s.mtime.1);
            }
            Node::Hardlink { to } => {
                if !files.is_empty() {
                    std::fs::hard_link(&files[to % files.len()], &p).unwrap();
                }
            }
        }
    }
    for (p, mode, s) in dir_meta.into_iter().rev() {
        std::os::unix::fs::lchown(&p, Some(s.owner.0), Some(s.owner.1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, s.mtime.0, s.mtime.1);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random trees (files, empty files, dirs, symlinks, hard links, odd
    /// names, modes, owners, mtimes) come back exactly, into an empty
    /// directory and incrementally over another random tree.
    #[test]
    fn random_trees_survive_capture_and_restore_exactly(a in tree(), b in tree()) {
        rt().block_on(async {
            let (tmp, store) = fs_store().await;
            let (src_a, src_b, dst) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("dst"));
            build(&src_a, &a);
            build(&src_b, &b);
            let (snap_a, _) = capture(store.clone(), &src_a, &small_opts("ns")).await.unwrap();
            let (snap_b, _) = capture(store.clone(), &src_b, &small_opts("ns")).await.unwrap();
            // Read back from the store, as another machine would.
            let snap_a = Snapshot::load(&*store, snap_a.digest).await.unwrap();
            let snap_b = Snapshot::load(&*store, snap_b.digest).await.unwrap();

            restore(store.clone(), &snap_a, &dst, &restore_opts()).await.unwrap();
            prop_assert_eq!(observe(&dst), observe(&src_a));
            restore(store.clone(), &snap_b, &dst, &restore_opts()).await.unwrap();
            prop_assert_eq!(observe(&dst), observe(&src_b));
            Ok(())
        })?;
    }
}

fn sample_tree(root: &Path, files: usize) {
    for i in 0..files {
        write(root, &format!("d{}/f{i}", i % 7), format!("content of file {i} ").repeat(i % 50 + 1).as_bytes());
    }
}

/// A sample tree of `files` in `src`, aged past the racy window so the
/// stat cache trusts it, and capture options keeping a stat cache.
async fn aged_tree(files: usize) -> (tempfile::TempDir, std::sync::Arc<dyn rbk_store::Store>, std::path::PathBuf, rbk_snapshot::CaptureOptions) {
    let (tmp, store) = fs_store().await;
    let src = tmp.path().join("src");
    sample_tree(&src, files);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut opts = small_opts("ns");
    opts.stat_cache = Some(tmp.path().join("stat-cache"));
    (tmp, store, src, opts)
}

#[tokio::test]
async fn an_unchanged_tree_uploads_nothing_and_reads_no_file() {
    let (_tmp, store, src, mut opts) = aged_tree(300).await;
    let (first, s1) = capture(store.clone(), &src, &opts).await.unwrap();
    assert_eq!(s1.files_read, 300);
    opts.base = Some(first.clone());
    let (second, s2) = capture(store.clone(), &src, &opts).await.unwrap();
    assert_eq!(second.digest, first.digest);
    assert_eq!((s2.files_read, s2.bytes_uploaded, s2.manifest_uploaded), (0, 0, false));
}

#[tokio::test]
async fn incremental_capture_uploads_only_the_changed_files() {
    let (_tmp, store, src, mut opts) = aged_tree(200).await;
    let (first, _) = capture(store.clone(), &src, &opts).await.unwrap();
    let changed: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&src, "d1/f1", &changed);
    write(&src, "new/file", b"brand new");
    std::fs::remove_file(src.join("d2/f2")).unwrap();
    opts.base = Some(first);
    let (second, s) = capture(store.clone(), &src, &opts).await.unwrap();
    assert_eq!(s.files_read, 2, "only the two written files are read");
    assert_eq!(s.bytes_new, changed.len() as u64 + 9);
    assert!(s.bytes_uploaded < changed.len() as u64 + 9 + 20_000, "uploaded {} bytes", s.bytes_uploaded);
    assert!(second.manifest.get(b"d2/f2").is_none());
    assert_eq!(second.manifest.get(b"new/file").unwrap().size(), 9);
}

#[tokio::test]
async fn a_file_already_stored_in_the_namespace_is_not_uploaded_again() {
    let (tmp, store) = fs_store().await;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let big: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    write(&a, "x", &big);
    write(&b, "renamed/y", &big);
    let (first, _) = capture(store.clone(), &a, &small_opts("ns")).await.unwrap();
    let mut opts = small_opts("ns");
    opts.dedupe_from = vec![first.manifest.clone()];
    let (_, s) = capture(store.clone(), &b, &opts).await.unwrap();
    assert_eq!((s.bytes_new, s.packs_uploaded), (0, 0));
}

#[tokio::test]
async fn an_edit_in_a_large_file_uploads_only_nearby_chunks() {
    let (tmp, store) = fs_store().await;
    let src = tmp.path().join("src");
    let mut big: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    write(&src, "big", &big);
    let mut opts = small_opts("ns");
    let (first, _) = capture(store.clone(), &src, &opts).await.unwrap();
    big[200_000] ^= 1;
    write(&src, "big", &big);
    opts.base = Some(first);
    let (_, s) = capture(store.clone(), &src, &opts).await.unwrap();
    assert!(s.bytes_new <= 2 * 8192, "{} new bytes for a one-byte edit", s.bytes_new);
}

#[tokio::test]
async fn incremental_restore_writes_only_what_changed_and_deletes_what_is_gone() {
    let (tmp, store) = fs_store().await;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    sample_tree(&src, 200);
    let (old, _) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    let mut ropts = restore_opts();
    ropts.stat_cache = Some(tmp.path().join("dst-cache"));
    restore(store.clone(), &old, &dst, &ropts).await.unwrap();

    write(&src, "d3/f3", b"changed");
    std::fs::remove_file(src.join("d4/f4")).unwrap();
    let (new, _) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    let s = restore(store.clone(), &new, &dst, &ropts).await.unwrap();
    assert_eq!((s.files_written, s.bytes_written, s.removed), (1, 7, 1));
    assert_eq!(s.unchanged, 198);
    assert_eq!(observe(&dst), observe(&src));
}

#[tokio::test]
async fn a_restore_interrupted_half_way_is_repaired_by_the_next() {
    let (tmp, store) = fs_store().await;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    sample_tree(&src, 100);
    let (snap, _) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    // What a crash mid-restore leaves: a truncated file, a missing one, a
    // leftover temporary, wrong metadata.
    std::fs::write(dst.join("d1/f1"), b"trunc").unwrap();
    std::fs::remove_file(dst.join("d2/f2")).unwrap();
    std::fs::write(dst.join("d3/.rbk-tmp-1234-0"), b"partial").unwrap();
    std::fs::set_permissions(dst.join("d4/f4"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    assert_eq!(s.files_written, 2);
    assert_eq!(observe(&dst), observe(&src));
}

#[tokio::test]
async fn a_file_larger_than_the_capture_streaming_window_round_trips() {
    let (tmp, store) = fs_store().await;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    // Above 8 MiB, capture hands the file to the packer in several windows.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..9 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8 & 0x3f
        })
        .collect();
    write(&src, "big", &data);
    write(&src, "small", b"tiny");
    let mut opts = small_opts("ns");
    opts.chunking = rbk_snapshot::ChunkParams { threshold: 4096, min: 64 << 10, avg: 256 << 10, max: 1 << 20 };
    opts.pack_target = 2 << 20;
    let (snap, stats) = capture(store.clone(), &src, &opts).await.unwrap();
    assert_eq!((stats.files_read, stats.bytes_read), (2, data.len() as u64 + 4));
    assert!(stats.packs_uploaded > 1, "{stats:?}");
    let snap = Snapshot::load(&*store, snap.digest).await.unwrap();
    restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    assert_eq!(observe(&dst), observe(&src));
}

#[tokio::test]
async fn a_build_context_capture_honours_the_path_filter() {
    let (tmp, store) = fs_store().await;
    let src = tmp.path().join("ctx");
    write(&src, "Dockerfile", b"FROM scratch");
    write(&src, "node_modules/x/index.js", b"big");
    write(&src, "src/main.rs", b"fn main() {}");
    let mut opts = small_opts("ns");
    opts.filter = std::sync::Arc::new(|p: &[u8], _dir: bool| !p.starts_with(b"node_modules"));
    let (snap, _) = capture(store.clone(), &src, &opts).await.unwrap();
    let paths: Vec<&[u8]> = snap.manifest.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, vec![&b"Dockerfile"[..], b"src", b"src/main.rs"]);
    let _ = std::ffi::OsStr::from_bytes(b"");
}
