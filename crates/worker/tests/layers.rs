//! The local layer store and overlay mounts of long chains.

mod common;

use std::path::PathBuf;

use common::*;
use rbk_worker::layers::LayerStore;
use rbk_worker::rootfs::OverlayRootfs;
use rbk_worker::{LayerRef, RuntimeKind};

#[tokio::test]
async fn a_layer_is_unpacked_once_and_shared_by_later_steps() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    let out = run(&ex, &base, shell("true")).await;
    assert!(out.succeeded());
    let dir = state.path().join("layers").join(base.layers()[0].diff_id.hex());
    let marker = dir.join("bin/busybox");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&marker).unwrap());
    run(&ex, &base, shell("true")).await;
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&marker).unwrap()), inode, "re-unpacked");
    // Nothing left of the steps' scratch space.
    assert_eq!(std::fs::read_dir(state.path().join("steps")).unwrap().count(), 0);
}

/// Two layers in a layout: the busybox base and one small layer on top.
async fn two_layers() -> (Base, Vec<LayerRef>) {
    let base = busybox_base();
    let (_s, ex) = executor(RuntimeKind::Runc);
    let out = run(&ex, &base, shell("echo x > /x")).await;
    let image = extend(&base, out.layer.as_ref().unwrap());
    let refs = layer_refs(&image);
    (base, refs)
}

#[tokio::test]
async fn eviction_removes_least_recently_used_layers_no_step_holds() {
    let (base, refs) = two_layers().await;
    let root = tempfile::tempdir().unwrap();
    // A limit smaller than both layers: only leased layers survive.
    let store = LayerStore::open(root.path(), 1).unwrap();
    let blob = |r: &LayerRef| base.layout.blob_path(&r.digest);
    let held = store.lease(&refs[0], &blob(&refs[0])).unwrap();
    let other = store.lease(&refs[1], &blob(&refs[1])).unwrap();
    drop(other);
    let evicted = store.evict().unwrap();
    assert_eq!(evicted, vec![refs[1].diff_id.hex()]);
    assert!(store.contains(&refs[0].diff_id) && !store.contains(&refs[1].diff_id));
    assert!(held.path().join("bin/busybox").exists());
    drop(held);
    store.evict().unwrap();
    assert_eq!(store.bytes(), 0);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).count(), 0);
}

#[tokio::test]
async fn layer_store_reopens_with_its_layers_and_drops_interrupted_unpacks() {
    let (base, refs) = two_layers().await;
    let root = tempfile::tempdir().unwrap();
    {
        let store = LayerStore::open(root.path(), u64::MAX).unwrap();
        drop(store.lease(&refs[0], &base.layout.blob_path(&refs[0].digest)).unwrap());
    }
    std::fs::create_dir(root.path().join(".tmp-interrupted")).unwrap();
    let store = LayerStore::open(root.path(), u64::MAX).unwrap();
    assert!(store.contains(&refs[0].diff_id));
    assert!(!root.path().join(".tmp-interrupted").exists());
}

#[tokio::test]
async fn a_layer_whose_content_does_not_match_its_diff_id_is_refused() {
    let (base, refs) = two_layers().await;
    let root = tempfile::tempdir().unwrap();
    let store = LayerStore::open(root.path(), u64::MAX).unwrap();
    let lying = LayerRef { digest: refs[0].digest, diff_id: refs[1].diff_id };
    let err = store.lease(&lying, &base.layout.blob_path(&refs[0].digest)).unwrap_err().to_string();
    assert!(err.contains(&refs[1].diff_id.to_string()), "{err}");
    assert!(!store.contains(&refs[1].diff_id));
}

#[test]
fn chains_longer_than_one_overlay_mount_are_stacked_and_keep_whiteouts() {
    let d = tempfile::tempdir().unwrap();
    // 300 layers with long names: more than one mount accepts even with
    // short /proc/self/fd names.
    let layers: Vec<PathBuf> = (0..300).map(|i| d.path().join(format!("{i:064}"))).collect();
    for (i, l) in layers.iter().enumerate() {
        std::fs::create_dir(l).unwrap();
        std::fs::write(l.join(format!("file{i}")), format!("{i}")).unwrap();
    }
    std::fs::write(layers[0].join("doomed"), "bottom").unwrap();
    std::fs::write(layers[0].join("shadowed"), "old").unwrap();
    // Layer 250 (in the top group) deletes a file from layer 0 (in the
    // bottom group) with an overlay whiteout; layer 299 overwrites one.
    nix::sys::stat::mknod(&layers[250].join("doomed"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
    std::fs::write(layers[299].join("shadowed"), "new").unwrap();

    let ov = OverlayRootfs::mount(&layers, &d.path().join("mnt"), true).unwrap();
    let m = &ov.merged;
    assert_eq!(std::fs::read_to_string(m.join("file0")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(m.join("file150")).unwrap(), "150");
    assert_eq!(std::fs::read_to_string(m.join("file299")).unwrap(), "299");
    // It really was stacked.
    assert!(ov.dir().join("bottom").exists());
    assert!(!m.join("doomed").exists());
    assert_eq!(std::fs::read_to_string(m.join("shadowed")).unwrap(), "new");
    std::fs::write(m.join("written"), "w").unwrap();
    assert!(ov.upper.as_ref().unwrap().join("written").exists());
    let mnt = ov.dir().to_path_buf();
    drop(ov);
    assert!(!mnt.exists(), "scratch dir left behind");
}

#[test]
fn a_layer_twice_in_a_chain_mounts_and_its_top_copy_wins() {
    let d = tempfile::tempdir().unwrap();
    let (same, mid) = (d.path().join("same"), d.path().join("mid"));
    for l in [&same, &mid] {
        std::fs::create_dir(l).unwrap();
    }
    std::fs::write(same.join("f"), "same").unwrap();
    std::fs::write(mid.join("f"), "mid").unwrap();
    // bottom first: same, mid, same (e.g. two identical RUN steps' layers)
    let ov = OverlayRootfs::mount(&[same.clone(), mid, same], &d.path().join("mnt"), true).unwrap();
    assert_eq!(std::fs::read_to_string(ov.merged.join("f")).unwrap(), "same");
}

#[test]
fn chains_longer_than_two_stacked_mounts_are_refused_with_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let layers: Vec<PathBuf> = (0..600).map(|i| d.path().join(format!("{i:064}"))).collect();
    for l in &layers {
        std::fs::create_dir(l).unwrap();
    }
    let err = OverlayRootfs::mount(&layers, &d.path().join("mnt"), true).unwrap_err().to_string();
    assert!(err.contains("600 layers"), "{err}");
}

#[tokio::test]
async fn a_steps_layer_is_kept_unpacked_and_later_steps_see_its_changes_and_deletions() {
    let base = busybox_base();
    let (state, ex) = executor(RuntimeKind::Runc);
    let one = run(&ex, &base, shell("echo one > /x && mkdir /d && echo a > /d/f")).await;
    let l1 = one.layer.as_ref().unwrap();
    // Kept from the step's upper dir: nothing had to unpack it.
    let kept = state.path().join("layers").join(l1.diff_id.hex());
    assert_eq!(std::fs::read(kept.join("x")).unwrap(), b"one\n");
    let image1 = extend(&base, l1);
    let two = run_on(&ex, &base.layout, &image1, shell("rm /x && rm -rf /d && mkdir /d && echo b > /d/g"), &Default::default()).await;
    assert!(two.succeeded());
    let mut image2 = image1.clone();
    image2.push_layer(two.layer.as_ref().unwrap(), rbk_image::History::default());
    two.layer.as_ref().unwrap().add_to_layout(&base.layout).unwrap();
    let check = shell("test ! -e /x && test ! -e /d/f && test \"$(cat /d/g)\" = b && test -x /bin/busybox");
    let kept_tree = run_on(&ex, &base.layout, &image2, check.clone(), &Default::default()).await;
    assert!(kept_tree.succeeded(), "on kept trees: {:?}", kept_tree.tail);
    // A worker that never saw the steps unpacks the blobs and sees the same.
    let (_s2, fresh) = executor(RuntimeKind::Runc);
    let unpacked = run_on(&fresh, &base.layout, &image2, check, &Default::default()).await;
    assert!(unpacked.succeeded(), "on unpacked blobs: {:?}", unpacked.tail);
}

#[tokio::test]
async fn a_leased_layer_is_not_offered_for_eviction_and_survives_a_request_to_remove_it() {
    let (base, refs) = two_layers().await;
    let root = tempfile::tempdir().unwrap();
    let store = LayerStore::open(root.path(), u64::MAX).unwrap();
    let blob = |r: &LayerRef| base.layout.blob_path(&r.digest);
    let held = store.lease(&refs[0], &blob(&refs[0])).unwrap();
    drop(store.lease(&refs[1], &blob(&refs[1])).unwrap());
    let unused: Vec<String> = store.unused().into_iter().map(|u| u.key).collect();
    assert_eq!(unused, [refs[1].diff_id.hex()]);
    assert!(!store.remove_unused(&refs[0].diff_id.hex()).unwrap(), "a leased layer was removed");
    assert!(store.remove_unused(&refs[1].diff_id.hex()).unwrap());
    assert!(store.contains(&refs[0].diff_id) && !store.contains(&refs[1].diff_id));
    assert!(held.path().join("bin/busybox").exists());
    assert!(!root.path().join(refs[1].diff_id.hex()).exists());
}
