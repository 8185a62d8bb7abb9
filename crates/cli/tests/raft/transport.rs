//! The raft port (issue #15, item 6): a node does not start without the
//! cluster secret, and the membership RPCs refuse callers without it.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_change_members_without_the_cluster_secret_are_refused() {
    let mut c = Cluster::new(3, 1000);
    c.start_all();
    c.leader_via(&c.node(1).api()).await;
    for secret in [None, Some("not-the-cluster-secret-0000")] {
        let list = c.members_with(&["list"], 1, secret);
        assert!(!list.status.success(), "members list with {secret:?} answered:\n{}", String::from_utf8_lossy(&list.stdout));
        assert!(String::from_utf8_lossy(&list.stderr).contains("cluster secret"), "{}", String::from_utf8_lossy(&list.stderr));
        for via in 1..=3 {
            let add = c.members_with(&["add", "--id", "99", "--raft", "127.0.0.1:9", "--api", "http://127.0.0.1:9"], via, secret);
            assert!(!add.status.success(), "members add via node {via} with {secret:?} succeeded");
        }
    }
    let list = c.members(&["list"], 1);
    assert!(!list.lines().any(|l| l.starts_with("99 ")), "node 99 was added:\n{list}");
    assert_eq!(list.lines().skip(2).count(), 3, "{list}");
}

#[test]
fn a_raft_node_without_a_secret_file_does_not_start_and_names_the_setting() {
    let c = Cluster::new(1, 1000);
    let path = c.config_of(1);
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text.lines().filter(|l| !l.starts_with("secret_file")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, text);
    std::fs::write(&path, without).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbk")).args(["coordinator", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "a raft node without secret_file started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.secret_file is required"), "{err}");
}
