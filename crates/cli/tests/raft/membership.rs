//! `rbk coordinator members` changes the voters while the cluster serves.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_is_added_and_one_removed_while_builds_keep_running() {
    let mut c = Cluster::new(3, 1000);
    let (leader_url, leader) = c.start_and_elect().await;
    let w = TestWorker::start("w1", c.apis(), 20);
    let first = submit(&leader_url, chain(2, "members-1")).await;
    assert_eq!(wait_finished(&c.apis(), &first).await.state, "succeeded");

    // A build in flight across both changes: its first step is held
    // running on the worker until the membership is settled.
    w.hold.store(true, std::sync::atomic::Ordering::Release);
    let across = submit(&leader_url, chain(3, "members-across")).await;
    wait_step_running(&c.apis(), &across).await;

    let new = c.add_joining(1000);
    let raft = format!("127.0.0.1:{}", c.node(new).raft_port);
    let api = c.node(new).api();
    let via = (1..=3).find(|id| *id != leader).unwrap();
    let out = c.members(&["add", "--id", &new.to_string(), "--raft", &raft, "--api", &api], via);
    assert!(out.lines().any(|l| l.starts_with(&format!("{new} "))), "{out}");

    let removed = (1..=3).find(|id| *id != leader && *id != via).unwrap();
    let out = c.members(&["remove", "--id", &removed.to_string()], via);
    assert!(!out.lines().any(|l| l.starts_with(&format!("{removed} "))), "{out}");
    c.kill(removed);

    let s = status(&c.apis(), &across).await;
    assert_eq!(s.state, "running", "the held build ended during the membership change: {s:?}");
    w.hold.store(false, std::sync::atomic::Ordering::Release);
    let s = wait_finished(&c.apis(), &across).await;
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert!(s.steps.iter().all(|st| st.state == "done"), "{s:?}");

    // The new member has the state: a build submitted through it succeeds.
    let second = submit(&api, chain(2, "members-2")).await;
    assert_eq!(wait_finished(&c.apis(), &second).await.state, "succeeded");
    let list = c.members(&["list"], new);
    assert_eq!(list.lines().skip(2).count(), 3, "{list}");
}

/// Waits until a step of `build` is running on a worker.
async fn wait_step_running(urls: &[String], build: &str) {
    let start = std::time::Instant::now();
    loop {
        let s = status(urls, build).await;
        if s.steps.iter().any(|st| st.state == "running") {
            return;
        }
        assert!(start.elapsed() < WAIT, "no step of {build} started: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
