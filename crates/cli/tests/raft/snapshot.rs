//! `rbk coordinator snapshot save|restore`: a running group's state saved
//! and a new group started from it.

use std::ffi::OsStr;
use std::process::Command;

use crate::harness::*;

const RBK: &str = env!("CARGO_BIN_EXE_rbk");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_restored_from_a_saved_snapshot_has_the_same_builds_heads_and_action_cache() {
    let mut old = Cluster::new(3, 1000);
    old.start_all();
    let leader = old.leader_via(&old.node(1).api()).await;
    let w = TestWorker::start("w1", old.apis(), 10);
    let build = submit(&leader, chain(3, "backup")).await;
    assert_eq!(wait_finished(&old.apis(), &build).await.state, "succeeded");
    drop(w);
    let (builds, heads) = (list_builds(&leader).await, list_caches(&leader).await);
    assert_eq!(heads.len(), 3, "{heads:?}");
    // Asked of a follower: it names the leader, which is then asked.
    let follower = old.nodes.iter().map(|n| n.id).find(|id| old.node(*id).api() != leader).unwrap();
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("state.rbk-backup");
    let saved = old.snapshot(&[OsStr::new("save"), OsStr::new("--out"), file.as_os_str()], Some(follower));
    assert!(saved.starts_with("saved the state at index "), "{saved}");
    drop(old);

    let mut new = Cluster::new(3, 1000);
    new.start_all_after(|c| {
        for n in &c.nodes {
            let out = c.snapshot(&[OsStr::new("restore"), OsStr::new("--config"), c.config_path(n.id).as_os_str(), OsStr::new("--from"), file.as_os_str()], None);
            assert!(out.contains(&format!("for node {} of 3 members", n.id)), "{out}");
        }
    });
    let leader = new.leader_via(&new.node(1).api()).await;
    assert_eq!(list_builds(&leader).await, builds);
    assert_eq!(list_caches(&leader).await, heads);
    // The action cache came along: the same graph again is all cached,
    // with no worker at all.
    let again = submit(&leader, chain(3, "backup")).await;
    let s = wait_finished(&new.apis(), &again).await;
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert!(s.steps.iter().all(|st| st.state == "cached"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_a_data_dir_that_holds_a_nodes_data() {
    let mut c = Cluster::new(1, 1000);
    c.start_all();
    let _ = c.leader_via(&c.node(1).api()).await;
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("state.rbk-backup");
    c.snapshot(&[OsStr::new("save"), OsStr::new("--out"), file.as_os_str()], Some(1));
    c.kill(1);
    let out = Command::new(RBK)
        .args(["coordinator", "snapshot", "restore", "--config"])
        .arg(c.config_path(1))
        .arg("--from")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{} already holds a node's data", c.data_dir(1).display())), "{stderr}");
}
