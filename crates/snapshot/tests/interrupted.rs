//! A restore that stops half way — here because the store fails in the
//! middle of a transfer — leaves a directory that the next restore repairs.
//! A cold restore writes files under their real names (no temporaries), so
//! the repair must trust content, never names.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use rbk_snapshot::{Snapshot, capture, cold_restore_gets, restore};
use bytes::Bytes;
use rbk_store::{ByteRange, Store, StoreError};

fn reset() -> StoreError {
    StoreError::Backend { backend: "test", message: "connection reset mid-transfer".into(), retryable: true }
}

/// Passes the first `ok` ranged reads through to `inner`; the next one
/// yields half of its bytes and then fails, as a dropped connection does,
/// and every later one fails at once. Whole-blob reads (manifests) pass.
fn failing_midway(inner: Arc<dyn Store>, ok: usize) -> Arc<dyn Store> {
    let ok = AtomicUsize::new(ok);
    Arc::new(ReshapedReads {
        inner,
        reshape: move |range: ByteRange, bytes: Bytes| {
            if range.is_full() || ok.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return vec![Ok(bytes)];
            }
            vec![Ok(bytes.slice(..bytes.len() / 2)), Err(reset())]
        },
    })
}

/// Many one-chunk files and a few multi-chunk ones (with the small test
/// chunking, 20 KB is about ten chunks).
fn tree(root: &Path) {
    for i in 0..120 {
        write(root, &format!("d{}/f{i}", i % 6), &noise(100 + i * 37, i as u32));
    }
    for i in 0..6 {
        write(root, &format!("big/b{i}"), &noise(20_000, 1000 + i));
    }
}

fn names_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(root).unwrap().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_cold_restore_interrupted_half_way_is_repaired_by_the_next() {
    let (tmp, store) = fs_store().await;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src);
    let (snap, _) = capture(store.clone(), &src, &small_opts("ns")).await.unwrap();
    let snap = Snapshot::load(&*store, snap.digest).await.unwrap();
    let mut ropts = restore_opts();
    ropts.stat_cache = Some(tmp.path().join("dst.statcache"));
    let gets = cold_restore_gets(&snap, &ropts).unwrap().len();
    assert!(gets >= 8, "the test needs many ranged reads, got {gets}");

    // A completed restore leaves a stat cache vouching for the tree; then
    // the tree is wiped (the directory stays), so the next restore is cold.
    restore(store.clone(), &snap, &dst, &ropts).await.unwrap();
    assert!(ropts.stat_cache.as_ref().unwrap().exists());
    std::fs::remove_dir_all(&dst).unwrap();
    std::fs::create_dir(&dst).unwrap();

    let failing = failing_midway(store.clone(), gets / 2);
    let err = restore(failing, &snap, &dst, &ropts).await.unwrap_err();
    assert!(err.to_string().contains("connection reset mid-transfer"), "{err}");

    // Half a tree, written in place: real names, no temporaries, and no
    // stat cache left to vouch for any of it.
    let names = names_under(&dst);
    assert!(names.iter().any(|n| n.starts_with("d")), "some files were written before the failure: {names:?}");
    assert!(!names.iter().any(|n| n.contains(".rbk-tmp")), "a cold restore writes no temporaries: {names:?}");
    assert_ne!(observe(&dst), observe(&src));
    assert!(!ropts.stat_cache.as_ref().unwrap().exists(), "the stat cache must not outlive the tree it described");

    // A file that looks complete — right size, right mtime — but holds
    // other bytes (a torn write): only its content can tell.
    let torn = names
        .iter()
        .map(|n| dst.join(n))
        .find(|p| p.is_file() && std::fs::read(p).unwrap() == std::fs::read(src.join(p.strip_prefix(&dst).unwrap())).unwrap())
        .expect("at least one complete file");
    let (len, mtime) = { let md = std::fs::metadata(&torn).unwrap(); (md.len() as usize, md.mtime()) };
    std::fs::write(&torn, vec![0u8; len]).unwrap();
    let status = std::process::Command::new("touch").arg("-d").arg(format!("@{mtime}")).arg(&torn).status().unwrap();
    assert!(status.success());

    let s = restore(store.clone(), &snap, &dst, &ropts).await.unwrap();
    assert_eq!(observe(&dst), observe(&src));
    let files = snap.manifest.entries.iter().filter(|e| matches!(e.kind, rbk_snapshot::EntryKind::File(_))).count();
    assert!(s.files_written > 0 && s.unchanged > 0 && s.files_written + s.unchanged == files, "{s:?}");
}

#[tokio::test]
async fn an_incremental_restore_interrupted_half_way_is_repaired_by_the_next() {
    let (tmp, store) = fs_store().await;
    let (old, new, dst) = (tmp.path().join("old"), tmp.path().join("new"), tmp.path().join("dst"));
    tree(&old);
    tree(&new);
    for i in 0..120 {
        write(&new, &format!("d{}/f{i}", i % 6), &noise(100 + i * 37, 7 + i as u32));
    }
    let (s_old, _) = capture(store.clone(), &old, &small_opts("ns")).await.unwrap();
    let (s_new, _) = capture(store.clone(), &new, &small_opts("ns")).await.unwrap();
    let mut ropts = restore_opts();
    ropts.stat_cache = Some(tmp.path().join("dst.statcache"));
    restore(store.clone(), &s_old, &dst, &ropts).await.unwrap();

    let failing = failing_midway(store.clone(), 3);
    restore(failing, &s_new, &dst, &ropts).await.unwrap_err();
    restore(store.clone(), &s_new, &dst, &ropts).await.unwrap();
    assert_eq!(observe(&dst), observe(&new));
}
