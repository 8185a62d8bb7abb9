//! Elections, failover mid-build, an isolated old leader, a wiped node.

use std::time::{Duration, Instant};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_submitted_to_a_follower_runs_on_the_leader_and_completes() {
    let mut c = Cluster::new(3, 1000);
    let (leader, _) = c.start_and_elect().await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 50);
    let build = submit(&follower, chain(3, "follower")).await;
    let s = wait_finished(&c.apis(), &build).await;
    assert_eq!(s.state, "succeeded", "{s:?}");
    // Every node holds the build: it is replicated state.
    assert_eq!(s.steps.iter().filter(|st| st.state == "done").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_build_elects_a_new_one_that_finishes_the_build_and_keeps_committed_state() {
    let mut c = Cluster::new(3, 1000);
    let (leader_url, leader) = c.start_and_elect().await;
    let w = TestWorker::start("w1", c.apis(), 400);
    let build = submit(&leader_url, chain(5, "failover")).await;
    // Wait until two steps are committed, then kill the leader mid-build.
    let start = Instant::now();
    loop {
        let s = status(&c.apis(), &build).await;
        if s.steps.iter().filter(|st| st.state == "done").count() >= 2 {
            break;
        }
        assert!(start.elapsed() < WAIT, "steps did not progress: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heads_before = list_caches(&leader_url).await;
    assert!(heads_before.len() >= 2, "{heads_before:?}");
    c.kill(leader);
    let killed = Instant::now();
    let survivors = c.apis();
    let new_leader = c.leader_via(&survivors[0]).await;
    eprintln!("failover: new leader {new_leader} serving {:?} after SIGKILL of node {leader}", killed.elapsed());
    assert_ne!(new_leader, leader_url);
    let s = wait_finished(&survivors, &build).await;
    assert_eq!(s.state, "succeeded", "{s:?}");
    // Cache heads committed before the kill are all still there, at least
    // at the generation they had.
    let heads_after = list_caches(&new_leader).await;
    for h in &heads_before {
        let now = heads_after.iter().find(|a| a.id == h.id && a.slot == h.slot).unwrap_or_else(|| panic!("head {} lost", h.id));
        assert!(now.generation >= h.generation);
    }
    // Action-cache entries survived: the same graph again is all cached
    // and runs nothing.
    let ran_before = w.ran.lock().unwrap().len();
    let again = submit(&new_leader, chain(5, "failover")).await;
    let s = wait_finished(&survivors, &again).await;
    assert_eq!(s.state, "succeeded");
    assert!(s.steps.iter().all(|st| st.state == "cached"), "{s:?}");
    assert_eq!(w.ran.lock().unwrap().len(), ran_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_old_leader_commits_no_write_and_converges_after_it_rejoins() {
    // Each node in its own network namespace: the old leader keeps
    // running, cut off from its peers only, and this process still
    // reaches it to write through it.
    let mut c = Cluster::new_in_namespaces(3, 1000);
    let (leader_url, old) = c.start_and_elect().await;
    let _w = TestWorker::start("w1", c.apis(), 50);
    c.isolate(old);
    // A write through it at once, while it may still think it leads:
    // it must never be accepted (accepted = committed on a quorum).
    let isolated = submit_once(&leader_url, chain(2, "isolated")).await;
    assert!(isolated.is_err(), "the isolated old leader accepted build {isolated:?}");
    let others: Vec<String> = c.apis().into_iter().filter(|u| *u != leader_url).collect();
    let new_leader = c.leader_via(&others[0]).await;
    assert_ne!(new_leader, leader_url);
    let build = submit(&new_leader, chain(2, "partition")).await;
    assert_eq!(wait_finished(&others, &build).await.state, "succeeded");
    c.rejoin(old);
    // The old leader learns of the new term, steps down, redirects, and
    // its state machine catches up with the build it never saw.
    let start = Instant::now();
    loop {
        let r = rbk_client::leader::follow_leader(&rbk_client::ClientTls::default(), &leader_url, Duration::from_secs(1), |_| async {
            Ok::<_, tonic::Status>(())
        })
        .await;
        let members = c.members(&["list"], old);
        let applied_line = members.lines().next().unwrap_or_default().to_owned();
        let led_by_new = members.lines().any(|l| l.contains("leader ") && l.contains(&new_leader));
        if r.is_ok() && led_by_new {
            break;
        }
        assert!(start.elapsed() < WAIT, "old leader did not converge: {members}\n{applied_line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its state machine converges: same applied index as the new leader's.
    let new_id = c.id_of(&new_leader);
    let applied = |id| c.members(&["list"], id).lines().next().unwrap().split_whitespace().nth(4).unwrap().to_owned();
    let start = Instant::now();
    while applied(old) != applied(new_id) {
        assert!(start.elapsed() < WAIT, "applied index of node {old} never reached the leader's");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&[leader_url.clone()], &build).await.state, "succeeded");
    // The write made through it while cut off is nowhere: the farm knows
    // one build, the one made through the new leader.
    let builds: Vec<String> = list_builds(&leader_url).await.into_iter().map(|b| b.build_id).collect();
    assert_eq!(builds, vec![build]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_and_catches_up_through_a_snapshot() {
    let mut c = Cluster::new(3, 20);
    let (leader_url, leader) = c.start_and_elect().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.kill(victim);
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 10);
    // Enough commands to snapshot and compact past where the victim was.
    let build = submit(&leader_url, chain(12, "wipe")).await;
    assert_eq!(wait_finished(&c.apis(), &build).await.state, "succeeded");
    c.start(victim);
    let start = Instant::now();
    while !read_log(c.dir.path(), victim).contains("installed a snapshot from the leader") {
        assert!(start.elapsed() < WAIT, "node {victim} never received a snapshot:\n{}", read_log(c.dir.path(), victim));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read the wiped node's own state, not another node's: kill whoever
    // leads (restarting the one killed before, so two of three run) until
    // the wiped node is the leader, then ask it.
    let via = c.node(victim).api();
    let mut killed: Option<u64> = None;
    let start = Instant::now();
    loop {
        let leading = c.id_of(&c.leader_via(&via).await);
        if leading == victim {
            break;
        }
        assert!(start.elapsed() < WAIT, "node {victim} never became the leader");
        c.kill(leading);
        if let Some(k) = killed.replace(leading) {
            c.start(k);
        }
    }
    let mut client = rbk_proto::build::build_client::BuildClient::new(tonic::transport::Channel::from_shared(via).unwrap().connect().await.unwrap());
    let mut req = tonic::Request::new(rbk_proto::build::StatusRequest { build_id: build.clone() });
    req.metadata_mut().insert("authorization", format!("Bearer {TENANT}").parse().unwrap());
    let s = client.status(req).await.unwrap().into_inner();
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert_eq!(s.steps.iter().filter(|st| st.state == "done").count(), 12, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_names_the_leader_only_to_callers_with_a_valid_token() {
    let mut c = Cluster::new(3, 1000);
    let (leader, _) = c.start_and_elect().await;
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let channel = tonic::transport::Channel::from_shared(follower).unwrap().connect().await.unwrap();
    let list = |token: &str| {
        let mut req = tonic::Request::new(rbk_proto::build::ListRequest { limit: 1 });
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let mut client = rbk_proto::build::build_client::BuildClient::new(channel);
    // A valid token is redirected once the follower's replicated state
    // holds the token file (applied by the leader after its election).
    let deadline = Instant::now() + Duration::from_secs(10);
    let redirected = loop {
        let e = client.list(list(TENANT)).await.unwrap_err();
        if rbk_client::leader::leader_hint(&e).is_some() || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(redirected.code(), tonic::Code::Unavailable, "{redirected:?}");
    assert_eq!(rbk_client::leader::leader_hint(&redirected).as_deref(), Some(leader.as_str()));
    let refused = client.list(list("not-a-known-token-at-all")).await.unwrap_err();
    assert_eq!(rbk_client::leader::leader_hint(&refused), None, "the leader's address leaked: {refused:?}");
    assert!(refused.message().contains("unknown token"), "{refused:?}");
}
