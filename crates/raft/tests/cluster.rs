//! RaftState nodes in one process, talking over real gRPC on 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use rbk_coordinator::raft_config::RaftConfig;
use rbk_coordinator::state::{Command, CoordinatorState, Outcome, Principal, StateError, query};
use rbk_raft::RaftState;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(dir: &Path, id: u64, ports: &[u16], snapshot_entries: u64) -> RaftConfig {
    let mut text = format!(
        "node_id = {id}\ndata_dir = \"n{id}\"\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"cluster.secret\"\nsnapshot_entries = {snapshot_entries}\ntick_ms = 50\n[peers]\n",
        ports[id as usize - 1]
    );
    for (i, p) in ports.iter().enumerate() {
        text += &format!("{} = {{ raft = \"127.0.0.1:{p}\", api = \"http://127.0.0.1:{}\" }}\n", i + 1, 20000 + i);
    }
    std::fs::write(dir.join("cluster.secret"), "raft-cluster-test-secret-0001").unwrap();
    let mut c: RaftConfig = toml::from_str(&text).unwrap();
    c.resolve(dir).unwrap();
    c
}

async fn leader_of(nodes: &[RaftState]) -> usize {
    let start = Instant::now();
    loop {
        if let Some(i) = nodes.iter().position(|n| n.is_serving_leader()) {
            return i;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no leader elected within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn token(i: usize) -> Command {
    Command::PutToken { token_hash: format!("hash-{i}"), principal: Principal::Tenant(format!("t{i}")) }
}

/// Starts nodes 1..=`started` of the cluster on `ports` and has their
/// leader commit tokens 0..`tokens` (`hash-0`, `hash-1`, ...); returns
/// the nodes and the leader's index among them.
async fn start_and_write(dir: &Path, ports: &[u16], started: u64, snapshot_entries: u64, tokens: usize) -> (Vec<RaftState>, usize) {
    let mut nodes = Vec::new();
    for id in 1..=started {
        nodes.push(RaftState::start(&config(dir, id, ports, snapshot_entries)).await.unwrap());
    }
    let l = leader_of(&nodes).await;
    for i in 0..tokens {
        nodes[l].apply(token(i)).await.unwrap();
    }
    (nodes, l)
}

async fn wait_for(node: &RaftState, hash: &str) {
    let start = Instant::now();
    while !query(node, |m| m.principal(hash).is_some()) {
        assert!(start.elapsed() < Duration::from_secs(15), "node {} never applied {hash}", node.id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A one-voter group on `dir`, listening on a fresh port.
async fn sole_voter(dir: &Path) -> RaftState {
    RaftState::start(&config(dir, 1, &[free_port()], 1000)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_commits_and_recovers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let n = sole_voter(dir.path()).await;
        leader_of(std::slice::from_ref(&n)).await;
        assert_eq!(n.apply(token(1)).await.unwrap(), Outcome::Ok);
        n.stop();
    }
    // The same data dir, a new port (the old server task still holds one).
    let n = sole_voter(dir.path()).await;
    leader_of(std::slice::from_ref(&n)).await;
    wait_for(&n, "hash-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_voter_that_leads_before_anyone_watches_is_seen_serving_by_a_later_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let n = sole_voter(dir.path()).await;
    // Nobody has subscribed to `serving()` yet when the node starts leading.
    leader_of(std::slice::from_ref(&n)).await;
    let serving = n.serving();
    assert!(*serving.borrow(), "a watcher subscribing after the election sees the node serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_followers_refuse_writes_naming_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let (nodes, l) = start_and_write(dir.path(), &ports, 3, 1000, 20).await;
    for n in &nodes {
        wait_for(n, "hash-19").await;
    }
    let f = (l + 1) % 3;
    match nodes[f].apply(token(99)).await {
        Err(StateError::NotLeader { leader: Some(url) }) => assert_eq!(url, format!("http://127.0.0.1:{}", 20000 + l)),
        other => panic!("expected NotLeader naming the leader, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_through_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let (_nodes, _) = start_and_write(dir.path(), &ports, 2, 5, 30).await;
    // Node 3 was never started (as good as wiped): the log it needs is
    // compacted away, so only a snapshot can bring it up to date.
    std::fs::remove_dir_all(dir.path().join("n3")).ok();
    let n3 = RaftState::start(&config(dir.path(), 3, &ports, 5)).await.unwrap();
    wait_for(&n3, "hash-29").await;
    assert!(dir.path().join("n3/snapshot").exists());
}

/// Waits until the leader's view of replication satisfies `ok`.
async fn replication_until(leader: &RaftState, what: &str, ok: impl Fn(&rbk_raft::Replication) -> bool) -> rbk_raft::Replication {
    let start = Instant::now();
    loop {
        let r = leader.replication();
        if let Some(r) = r.as_ref().filter(|r| ok(r)) {
            return r.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what} within 15 s: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reports_each_followers_lag_and_a_stopped_follower_falls_behind() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let (nodes, l) = start_and_write(dir.path(), &ports, 3, 1000, 5).await;
    let followers: Vec<u64> = nodes.iter().map(RaftState::id).filter(|id| *id != nodes[l].id()).collect();
    assert!(nodes.iter().enumerate().filter(|(i, _)| *i != l).all(|(_, n)| n.replication().is_none()), "only the leader knows");
    let r = replication_until(&nodes[l], "every follower caught up", |r| followers.iter().all(|f| r.lag(*f) == Some(0))).await;
    assert_eq!(r.matched.len(), 3);
    // One follower stops; the others keep up, it falls behind by what was written since.
    let stopped = nodes.iter().position(|n| n.id() == followers[0]).unwrap();
    nodes[stopped].stop();
    for i in 5..15 {
        nodes[l].apply(token(i)).await.unwrap();
    }
    let written = r.last_index + 10;
    let r = replication_until(&nodes[l], "the running follower caught up", |r| r.matched.get(&followers[1]).is_some_and(|m| *m >= written)).await;
    assert_eq!(r.lag(followers[1]), Some(0), "{r:?}");
    assert!(r.lag(followers[0]).unwrap() >= 10, "{r:?}");
}
