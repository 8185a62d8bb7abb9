//! Garbage collection against a real store: dead packs are found, mostly
//! dead packs are repacked, and live snapshots still restore.

mod common;

use std::collections::HashSet;

use common::*;
use rbk_snapshot::gc::{plan, repack};
use rbk_snapshot::{capture, restore};
use rbk_store::Store;

#[tokio::test]
async fn packs_only_dead_snapshots_use_are_garbage_and_live_ones_still_restore() {
    let (t, store) = fs_store().await;
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write(&a, "only-in-a", &vec![1u8; 30_000]);
    write(&b, "only-in-b", &vec![2u8; 30_000]);
    let (sa, _) = capture(store.clone(), &a, &small_opts("ns")).await.unwrap();
    let (sb, _) = capture(store.clone(), &b, &small_opts("ns")).await.unwrap();
    let p = plan(&[&sb.manifest], &[&sa.manifest], 0.0);
    assert_eq!(p.dead_packs, sa.manifest.packs().into_iter().collect::<Vec<_>>());
    for d in &p.dead_packs {
        store.delete(*d).await.unwrap();
    }
    restore(store.clone(), &sb, &t.path().join("dst"), &restore_opts()).await.unwrap();
    assert_eq!(observe(&t.path().join("dst")), observe(&b));
}

#[tokio::test]
async fn a_mostly_dead_pack_is_repacked_and_the_rewritten_snapshot_restores() {
    let (t, store) = fs_store().await;
    let src = t.path().join("src");
    let noise = |seed: u32| (0..3000u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 9) as u8).collect::<Vec<u8>>();
    write(&src, "keep", &noise(1));
    for i in 0..4 {
        write(&src, &format!("drop{i}"), &noise(10 + i));
    }
    let mut opts = small_opts("ns");
    opts.pack_target = 1 << 20;
    let (old, _) = capture(store.clone(), &src, &opts).await.unwrap();
    for i in 0..4 {
        std::fs::remove_file(src.join(format!("drop{i}"))).unwrap();
    }
    opts.base = Some(old.clone());
    let (live, _) = capture(store.clone(), &src, &opts).await.unwrap();

    let p = plan(&[&live.manifest], &[&old.manifest], 0.5);
    assert!(p.dead_packs.is_empty(), "the pack is still used by the live snapshot");
    assert_eq!(p.repack.len(), 1);
    let targets: HashSet<_> = p.repack.iter().map(|u| u.pack).collect();
    let rewritten = repack(store.clone(), std::slice::from_ref(&live), &targets, 1 << 20).await.unwrap();
    let new = &rewritten[&live.digest];
    assert!(new.manifest.packs().is_disjoint(&targets.iter().copied().collect()));
    assert!(new.manifest.packs().iter().all(|p| p.size() < 4000), "the new pack holds only the live chunk");
    for d in &targets {
        store.delete(*d).await.unwrap();
    }
    restore(store.clone(), new, &t.path().join("dst"), &restore_opts()).await.unwrap();
    assert_eq!(observe(&t.path().join("dst")), observe(&src));
}
