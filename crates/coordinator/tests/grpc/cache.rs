//! Cache-mount commits through the real services.

use std::collections::BTreeMap;

use rbk_proto::worker::{self as pw};
use rbk_store::Digest;

use crate::harness::*;

/// Eight steps sharing cache `pip`, four on each of two workers, all
/// started from the same (empty) head and committing `s{i}.whl` at once
/// (`real`: real snapshots captured from directories, else the harness's
/// trees); checks the build succeeds with one head at generation 8 and
/// returns that head.
async fn eight_concurrent_commits_from_two_workers(farm: &Farm, real: bool) -> Digest {
    let mut w1 = farm.worker("w1", 4).await;
    let mut w2 = farm.worker("w2", 4).await;
    let mut client = farm.client(TENANT_A).await;
    let steps = (0..8).map(|i| with_cache(step(&format!("s{i}"), &format!("k{i}"), &[]), "pip", "shared")).collect();
    let mut build = client.submit(steps).await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push((w1.assignment().await, 1));
        jobs.push((w2.assignment().await, 2));
    }
    let commits = futures::future::join_all(jobs.iter().map(|(job, on)| {
        let w = if *on == 1 { &w1 } else { &w2 };
        let tree = BTreeMap::from([(format!("{}.whl", job.step_id), format!("wheel of {}", job.step_id))]);
        async move {
            let commit = if real { w.capture_snapshot(&job.mounts[0], &tree).await } else { w.capture(&job.mounts[0], &tree).await };
            (job, on, commit)
        }
    }))
    .await;
    for (job, on, commit) in commits {
        let w = if *on == 1 { &w1 } else { &w2 };
        w.succeed(job, vec![commit]).await;
    }
    assert_eq!(final_state(&build.finish().await), "succeeded");
    let heads = client.list_caches().await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].generation, 8);
    heads[0].snapshot.parse::<Digest>().unwrap()
}

#[tokio::test]
async fn concurrent_cache_commits_from_two_workers_merge_and_none_is_lost() {
    let farm = farm().await;
    let head = eight_concurrent_commits_from_two_workers(&farm, false).await;
    let tree = load_tree(&*farm.store, head).await;
    let files: Vec<_> = tree.keys().cloned().collect();
    let expected: Vec<_> = (0..8).map(|i| format!("s{i}.whl")).collect();
    assert_eq!(files, expected);
}

#[tokio::test]
async fn concurrent_real_snapshot_commits_from_two_workers_merge_through_the_snapshot_merger_and_none_is_lost() {
    // The scenario above end to end with what a real coordinator runs:
    // real snapshots captured from directories, merged by SnapshotMerger.
    let farm = farm_merging_snapshots().await;
    let head = eight_concurrent_commits_from_two_workers(&farm, true).await;
    // Restore the head as the next worker would and read every file.
    let store: std::sync::Arc<dyn rbk_store::Store> = farm.store.clone();
    let head = rbk_snapshot::Snapshot::load(&*store, head).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    rbk_snapshot::restore(store, &head, dir.path(), &rbk_snapshot::RestoreOptions::default()).await.unwrap();
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    files.sort();
    let expected: Vec<(String, String)> = (0..8).map(|i| (format!("s{i}.whl"), format!("wheel of s{i}"))).collect();
    assert_eq!(files, expected);
}

#[tokio::test]
async fn the_next_build_starts_from_the_committed_head_on_a_warm_worker() {
    let farm = farm().await;
    let mut client = farm.client(TENANT_A).await;
    let mut w1 = farm.worker("w1", 1).await;
    let mut build = client.submit(vec![with_cache(step("a", "k1", &[]), "apt", "locked")]).await.unwrap();
    let job = w1.assignment().await;
    let mut tree = w1.restore(&job.mounts[0]).await;
    tree.insert("line1".into(), "1".into());
    let commit = w1.capture(&job.mounts[0], &tree).await;
    let snapshot = commit.snapshot.clone();
    w1.succeed(&job, vec![commit]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");

    // A cold worker and a worker that reports holding the head: the warm one wins.
    let mut cold = farm.worker("cold", 1).await;
    let held = pw::HeldSnapshot { namespace: "team-a".into(), cache_id: "apt".into(), slot: 0, snapshot: snapshot.clone() };
    let mut warm = farm.worker_holding("warm", 1, vec![held]).await;
    drop(w1);
    let mut build = client.submit(vec![with_cache(step("b", "k2", &[]), "apt", "locked")]).await.unwrap();
    let job = warm.assignment().await;
    assert_eq!((job.mounts[0].snapshot.as_str(), job.mounts[0].generation), (snapshot.as_str(), 1));
    assert_eq!(warm.restore(&job.mounts[0]).await.len(), 1);
    assert!(cold.idle().await);
    warm.succeed(&job, vec![]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");
}

#[tokio::test]
async fn prune_drops_only_the_named_heads_of_the_callers_tenant() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 4).await;
    let mut a = farm.client(TENANT_A).await;
    let mut b = farm.client(TENANT_B).await;
    for (client, key) in [(&mut a, "ka"), (&mut b, "kb")] {
        let steps = vec![with_cache(with_cache(step("s", key, &[]), "pip", "shared"), "apt", "shared")];
        let mut build = client.submit(steps).await.unwrap();
        let job = w.assignment().await;
        let mut commits = Vec::new();
        for grant in &job.mounts {
            commits.push(w.capture(grant, &BTreeMap::from([(grant.cache_id.clone(), "x".into())])).await);
        }
        w.succeed(&job, commits).await;
        assert_eq!(final_state(&build.finish().await), "succeeded");
    }
    let prune = |ids: Vec<String>| rbk_proto::build::PruneCachesRequest { ids, unused_for_ms: 0 };
    // Not old enough: nothing dropped.
    let young = rbk_proto::build::PruneCachesRequest { ids: vec![], unused_for_ms: 3_600_000 };
    assert!(a.inner.prune_caches(bearer(young, TENANT_A)).await.unwrap().into_inner().dropped.is_empty());
    let dropped = a.inner.prune_caches(bearer(prune(vec!["pip".into()]), TENANT_A)).await.unwrap().into_inner().dropped;
    assert_eq!(dropped.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["pip"]);
    assert_eq!(a.list_caches().await.unwrap().iter().map(|h| h.id.clone()).collect::<Vec<_>>(), ["apt"]);
    // Tenant B pruning everything leaves tenant A's heads alone.
    assert_eq!(b.inner.prune_caches(bearer(prune(vec![]), TENANT_B)).await.unwrap().into_inner().dropped.len(), 2);
    assert_eq!(a.list_caches().await.unwrap().len(), 1);
}

#[tokio::test]
async fn prune_keeps_a_head_leased_by_a_running_locked_step() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 4).await;
    let mut a = farm.client(TENANT_A).await;
    let mut first = a.submit(vec![with_cache(step("s", "k1", &[]), "apt", "locked")]).await.unwrap();
    let job = w.assignment().await;
    let commit = w.capture(&job.mounts[0], &BTreeMap::from([("x".into(), "1".into())])).await;
    w.succeed(&job, vec![commit]).await;
    assert_eq!(final_state(&first.finish().await), "succeeded");
    let _running = a.submit(vec![with_cache(step("s", "k2", &[]), "apt", "locked")]).await.unwrap();
    let _job = w.assignment().await; // holds the lease now
    let req = rbk_proto::build::PruneCachesRequest { ids: vec![], unused_for_ms: 0 };
    assert!(a.inner.prune_caches(bearer(req, TENANT_A)).await.unwrap().into_inner().dropped.is_empty());
    assert_eq!(a.list_caches().await.unwrap().len(), 1);
}
