//! A manifest is untrusted input: each way a hostile one could try to make
//! restore write outside its target, or write wrong bytes, is refused with a
//! clear error.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rbk_snapshot::{ChunkRef, Codec, Entry, EntryKind, FileContent, Manifest, Snapshot, SnapshotError, Timestamp, restore};
use rbk_store::{Digest, Store, StoreExt};

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry { path: path.as_bytes().to_vec(), kind, mode: 0o644, uid: 0, gid: 0, mtime: Timestamp::default() }
}

/// A pack holding `data` raw, and the file content that points at it.
async fn stored_file(store: &Arc<dyn Store>, data: &[u8]) -> FileContent {
    let pack = store.put_bytes(Bytes::copy_from_slice(data)).await.unwrap();
    let digest = Digest::of(data);
    FileContent { digest, chunks: vec![ChunkRef { digest, pack, offset: 0, stored_len: data.len() as u64, codec: Codec::Raw }] }
}

/// Stores the manifest as a hostile client would (no validation on the way
/// in) and returns what loading it says.
async fn load(store: &Arc<dyn Store>, entries: Vec<Entry>) -> Result<Snapshot, SnapshotError> {
    let m = Manifest { namespace: "ns".into(), created_unix_ns: 0, entries };
    let digest = store.put_bytes(m.encode().into()).await.unwrap();
    Snapshot::load(&**store, digest).await
}

fn refused(r: Result<Snapshot, SnapshotError>, needle: &str) {
    match r {
        Err(e @ SnapshotError::BadManifest { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "error {msg:?} does not say {needle:?}");
        }
        Err(e) => panic!("expected a manifest error about {needle:?}, got {e}"),
        Ok(_) => panic!("hostile manifest about {needle:?} was accepted"),
    }
}

/// A manifest of one file at `path` is refused with an error saying `needle`.
async fn lone_file_refused(path: &str, needle: &str) {
    let (_t, store) = fs_store().await;
    let f = stored_file(&store, b"x").await;
    refused(load(&store, vec![entry(path, EntryKind::File(f))]).await, needle);
}

#[tokio::test]
async fn restore_refuses_absolute_paths() {
    lone_file_refused("/tmp/evil", "absolute path").await;
}

#[tokio::test]
async fn restore_refuses_dotdot_paths() {
    let (_t, store) = fs_store().await;
    let f = stored_file(&store, b"x").await;
    refused(load(&store, vec![entry("..", EntryKind::Dir), entry("../evil", EntryKind::File(f))]).await, "`..` component");
    refused(load(&store, vec![entry("a", EntryKind::Dir), entry("a/./b", EntryKind::Dir)]).await, "`.` component");
}

#[tokio::test]
async fn restore_refuses_paths_through_symlinks() {
    let (_t, store) = fs_store().await;
    let f = stored_file(&store, b"x").await;
    let r = load(&store, vec![entry("link", EntryKind::Symlink(b"/etc".to_vec())), entry("link/passwd", EntryKind::File(f))]).await;
    refused(r, "path goes through symlink \"link\"");
}

#[tokio::test]
async fn restore_refuses_device_nodes() {
    let (_t, store) = fs_store().await;
    let mut dev = entry("dev", EntryKind::Dir);
    dev.mode = 0o020_666; // S_IFCHR | rw-rw-rw-
    refused(load(&store, vec![dev]).await, "device nodes");
}

#[tokio::test]
async fn restore_refuses_sizes_that_disagree_with_the_content() {
    let (_t, store) = fs_store().await;
    let one = stored_file(&store, b"hello").await;
    let two = FileContent { digest: Digest::new([1; 32], 50), chunks: vec![one.chunks[0], one.chunks[0]] };
    refused(load(&store, vec![entry("f", EntryKind::File(two))]).await, "size 50 disagrees with its chunks, which hold 10 bytes");
    // A raw chunk whose stored length is not its size.
    let mut short = one.clone();
    short.chunks[0].digest = Digest::new(*one.digest.hash(), 4);
    short.digest = short.chunks[0].digest;
    refused(load(&store, vec![entry("g", EntryKind::File(short))]).await, "cannot hold its 4 bytes");
}

#[tokio::test]
async fn restore_refuses_content_that_does_not_match_its_digest() {
    let (t, store) = fs_store().await;
    // The manifest is self-consistent, but the pack holds other bytes.
    let f = stored_file(&store, b"hello").await;
    let lie = Digest::of(b"HELLO");
    let f = FileContent { digest: lie, chunks: vec![ChunkRef { digest: lie, ..f.chunks[0] }] };
    let snap = load(&store, vec![entry("f", EntryKind::File(f))]).await.unwrap();
    let dst = t.path().join("dst");
    let err = restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap_err();
    assert!(matches!(err, SnapshotError::CorruptContent { .. }), "{err}");
    assert!(err.to_string().contains("\"f\""), "{err}");
    assert!(!dst.join("f").exists(), "corrupt bytes must not appear under the real name");
}

#[tokio::test]
async fn restore_refuses_a_file_whose_chunks_do_not_make_its_digest() {
    let (t, store) = fs_store().await;
    // Each chunk matches its own digest, but together they are not the
    // file the manifest names. A cold restore writes in place, so the
    // check comes after the bytes are on disk: the file must be removed.
    let pack = store.put_bytes(Bytes::from_static(b"helloworld")).await.unwrap();
    let (a, b) = (Digest::of(b"hello"), Digest::of(b"world"));
    let chunks = vec![
        ChunkRef { digest: a, pack, offset: 0, stored_len: 5, codec: Codec::Raw },
        ChunkRef { digest: b, pack, offset: 5, stored_len: 5, codec: Codec::Raw },
    ];
    let f = FileContent { digest: Digest::of(b"HELLOWORLD"), chunks };
    let snap = load(&store, vec![entry("f", EntryKind::File(f))]).await.unwrap();
    let dst = t.path().join("dst");
    let err = restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap_err();
    assert!(matches!(err, SnapshotError::CorruptContent { .. }), "{err}");
    assert!(err.to_string().contains("\"f\"") && err.to_string().contains("file digest"), "{err}");
    assert!(!dst.join("f").exists(), "wrong bytes must not stay under the real name");
}

#[tokio::test]
async fn restore_refuses_duplicate_paths() {
    let (_t, store) = fs_store().await;
    refused(load(&store, vec![entry("a", EntryKind::Dir), entry("a", EntryKind::Dir)]).await, "duplicate path");
}

#[tokio::test]
async fn restore_refuses_hard_links_outside_the_snapshot() {
    let (_t, store) = fs_store().await;
    refused(load(&store, vec![entry("l", EntryKind::Hardlink(b"../../etc/shadow".to_vec()))]).await, "hard link target");
}

#[tokio::test]
async fn restore_refuses_entries_whose_parent_is_missing() {
    lone_file_refused("nodir/f", "parent \"nodir\" is not in the manifest").await;
}

#[tokio::test]
async fn restore_refuses_a_blob_that_is_not_a_manifest() {
    let (_t, store) = fs_store().await;
    let digest = store.put_bytes(Bytes::from_static(b"{\"not\": \"a manifest\"}")).await.unwrap();
    refused(Snapshot::load(&*store, digest).await, "bad magic");
}

#[tokio::test]
async fn restore_refuses_an_in_memory_manifest_that_breaks_the_rules() {
    let (t, store) = fs_store().await;
    let m = Manifest { namespace: "ns".into(), created_unix_ns: 0, entries: vec![entry("/abs", EntryKind::Dir)] };
    let snap = Snapshot { digest: Digest::of(b"whatever"), manifest: Arc::new(m) };
    let err = restore(store.clone(), &snap, &t.path().join("dst"), &restore_opts()).await.unwrap_err();
    assert!(err.to_string().contains("absolute path"), "{err}");
}

#[tokio::test]
async fn restore_never_follows_a_symlink_already_in_the_target() {
    let (t, store) = fs_store().await;
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    // A build step left `d` pointing outside, and `f` pointing at a file outside.
    std::os::unix::fs::symlink(&outside, dst.join("d")).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), dst.join("f")).unwrap();
    let content = stored_file(&store, b"payload").await;
    let snap = load(&store, vec![entry("d", EntryKind::Dir), entry("d/x", EntryKind::File(content.clone())), entry("f", EntryKind::File(content))])
        .await
        .unwrap();
    restore(store.clone(), &snap, &dst, &restore_opts()).await.unwrap();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nothing was created outside");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(dst.join("d")).unwrap().is_dir());
    assert_eq!(std::fs::read(dst.join("d/x")).unwrap(), b"payload");
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"payload");
}

#[tokio::test]
async fn an_interrupted_capture_leaves_no_manifest_naming_missing_content() {
    let (_t, store) = fs_store().await;
    // A manifest whose pack never made it to the store cannot be committed.
    let f = FileContent {
        digest: Digest::of(b"x"),
        chunks: vec![ChunkRef { digest: Digest::of(b"x"), pack: Digest::of(b"never uploaded"), offset: 0, stored_len: 1, codec: Codec::Raw }],
    };
    let m = Manifest { namespace: "ns".into(), created_unix_ns: 0, entries: vec![entry("f", EntryKind::File(f))] };
    let blob = m.encode();
    let err = Snapshot::commit(&*store, m).await.unwrap_err();
    assert!(err.to_string().contains("is not in the store"), "{err}");
    assert!(!store.find_missing(&[Digest::of(&blob)]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_stays_in_the_target_while_its_directories_are_swapped_for_symlinks() {
    // A valid manifest; the attack is in the target, during the restore: a
    // step still running (or a second writer) keeps swapping each
    // directory restore writes into with a symlink to a directory outside
    // (renameat2 RENAME_EXCHANGE, atomic). Restore's scan cannot see what
    // has not happened yet; only opening everything beneath the target
    // with symlinks refused keeps the files in. Restore may fail; nothing
    // may land outside.
    const DIRS: usize = 64;
    let (t, store) = fs_store().await;
    let (dst, outside) = (t.path().join("dst"), t.path().join("outside"));
    let content = stored_file(&store, b"payload").await;
    let mut entries = Vec::new();
    for i in 0..DIRS {
        std::fs::create_dir_all(dst.join(format!("d{i}"))).unwrap();
        std::fs::create_dir_all(outside.join(format!("o{i}"))).unwrap();
        entries.push(entry(&format!("d{i}"), EntryKind::Dir));
        entries.push(entry(&format!("d{i}/x"), EntryKind::File(content.clone())));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let snap = load(&store, entries).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (dst, outside, stop) = (dst.clone(), outside.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for i in 0..DIRS {
                    let (d, s) = (dst.join(format!("d{i}")), dst.join(format!("s{i}")));
                    let _ = std::os::unix::fs::symlink(outside.join(format!("o{i}")), &s);
                    let cwd = rustix::fs::CWD;
                    if rustix::fs::renameat_with(cwd, &d, cwd, &s, rustix::fs::RenameFlags::EXCHANGE).is_ok() {
                        swaps += 1;
                    }
                }
            }
            swaps
        })
    };
    let result = restore(store.clone(), &snap, &dst, &restore_opts()).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0, "the swapper never swapped");
    let escaped: Vec<String> = (0..DIRS)
        .flat_map(|i| std::fs::read_dir(outside.join(format!("o{i}"))).unwrap())
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(escaped.is_empty(), "restore ({result:?}) wrote outside its target: {escaped:?}");
}

#[tokio::test]
async fn restore_stays_in_the_target_when_a_parent_directory_becomes_a_symlink_before_its_files_are_written() {
    // Restore opens `p/d` to write `p/d/x` only when x's bytes arrive. By
    // then (a step still running in the target, or a second writer) `p` has
    // become a symlink to a directory outside with a `d` of its own. The
    // scan is long done; O_NOFOLLOW guards only a path's last component;
    // only opening beneath the target with symlinks refused (openat2
    // RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) keeps the walk through `p` in.
    let (t, fs) = fs_store().await;
    let (dst, outside) = (t.path().join("dst"), t.path().join("outside"));
    std::fs::create_dir_all(dst.join("p/d")).unwrap();
    std::fs::create_dir_all(outside.join("d")).unwrap();
    let content = stored_file(&fs, b"payload").await;
    let snap = load(&fs, vec![entry("p", EntryKind::Dir), entry("p/d", EntryKind::Dir), entry("p/d/x", EntryKind::File(content))])
        .await
        .unwrap();
    let swap = std::sync::Once::new();
    let (p, aside, target) = (dst.join("p"), t.path().join("aside"), outside.clone());
    let store: Arc<dyn Store> = Arc::new(ReshapedReads {
        inner: fs.clone(),
        reshape: move |_, bytes| {
            swap.call_once(|| {
                std::fs::rename(&p, &aside).unwrap();
                std::os::unix::fs::symlink(&target, &p).unwrap();
            });
            vec![Ok(bytes)]
        },
    });
    let result = restore(store, &snap, &dst, &restore_opts()).await;
    assert!(std::fs::symlink_metadata(dst.join("p")).unwrap().is_symlink(), "the swap happened before the write");
    let escaped: Vec<_> = std::fs::read_dir(outside.join("d")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(escaped.is_empty(), "restore ({result:?}) wrote outside its target: {escaped:?}");
    let err = result.expect_err("a parent that became a symlink is refused");
    assert!(err.to_string().contains("p/d"), "{err}");
}
