//! The token file is the source of truth (issue #15, item 5): a token
//! removed from it is refused by every node, followers included, and stays
//! refused after the whole cluster restarts.

use std::time::Instant;

use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build as pb;

use crate::harness::*;

const TEAM_B: &str = "raft-test-team-b-token-0004";

fn write_tokens(c: &Cluster, with_team_b: bool) {
    let mut text = format!("[tenants]\n\"{TENANT}\" = \"team\"\n");
    if with_team_b {
        text += &format!("\"{TEAM_B}\" = \"team-b\"\n");
    }
    text += &format!("[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team\"]\n");
    std::fs::write(c.tokens_path(), text).unwrap();
}

/// What node `url` itself (no redirect followed) answers a List with `token`.
async fn list_on(url: &str, token: &str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(pb::ListRequest { limit: 1 });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    BuildClient::new(channel).list(req).await.map(|_| ())
}

/// Waits until node `url` refuses `token` as revoked; panics with the
/// last answer when it does not within [`WAIT`].
async fn wait_refused_as_revoked(c: &Cluster, url: &str, token: &str) {
    let start = Instant::now();
    loop {
        let answer = list_on(url, token).await;
        if let Err(s) = &answer
            && s.code() == tonic::Code::Unauthenticated
            && s.message().contains("revoked")
        {
            return;
        }
        assert!(start.elapsed() < WAIT, "{url} still answers {answer:?} for a revoked token\n{}", c.log_tails());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_removed_from_the_file_is_refused_on_every_node_and_after_a_restart() {
    let mut c = Cluster::new(3, 1000);
    write_tokens(&c, true);
    c.start_all();
    let leader_url = c.leader_via(&c.node(1).api()).await;
    let leader = c.id_of(&leader_url);
    list_on(&leader_url, TEAM_B).await.expect("team-b's token is accepted while it is in the file");

    write_tokens(&c, false);
    c.signal(leader, "HUP");
    for id in 1..=3 {
        wait_refused_as_revoked(&c, &c.node(id).api(), TEAM_B).await;
    }

    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    let leader_url = c.leader_via(&c.node(1).api()).await;
    list_on(&leader_url, TENANT).await.expect("the tenant still in the file is accepted after the restart");
    for id in 1..=3 {
        wait_refused_as_revoked(&c, &c.node(id).api(), TEAM_B).await;
    }
    let logs: String = (1..=3).map(|id| read_log(c.dir.path(), id)).collect();
    assert!(!logs.contains(TEAM_B) && !logs.contains(TENANT), "a token appears in a node's log");
}
