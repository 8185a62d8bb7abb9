//! Five voters: two of them may die and the cluster still commits.

use std::time::{Duration, Instant};

use crate::harness::*;

/// The applied index `rbk coordinator members list` reports for `id`.
fn applied(c: &Cluster, id: u64) -> u64 {
    let out = c.members(&["list"], id);
    let first = out.lines().next().unwrap_or_default();
    first.split_whitespace().nth(4).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no applied index in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_leader_kills_and_the_restarted_nodes_converge() {
    let mut c = Cluster::new(5, 1000);
    let (first_url, first) = c.start_and_elect().await;
    let w = TestWorker::start("w1", c.apis(), 20);
    let follower = c.apis().into_iter().find(|u| *u != first_url).unwrap();
    let before = submit(&follower, chain(3, "five-before")).await;
    assert_eq!(wait_finished(&c.apis(), &before).await.state, "succeeded");

    // Two leaders in a row die; three of five remain, still a quorum.
    c.kill(first);
    let second_url = c.leader_via(&c.apis()[0]).await;
    let second = c.id_of(&second_url);
    assert_ne!(second, first);
    c.kill(second);
    let killed = Instant::now();
    let third_url = c.leader_via(&c.apis()[0]).await;
    eprintln!("third leader {third_url} serving {:?} after the second SIGKILL", killed.elapsed());
    assert!(![first, second].contains(&c.id_of(&third_url)));
    let follower = c.apis().into_iter().find(|u| *u != third_url).unwrap();
    let after = submit(&follower, chain(3, "five-after")).await;
    assert_eq!(wait_finished(&c.apis(), &after).await.state, "succeeded");

    // The dead come back and catch up to the same applied index as the
    // leader (same log, same deterministic state machine).
    c.start(first);
    c.start(second);
    let leader = c.id_of(&c.leader_via(&c.node(first).api()).await);
    let start = Instant::now();
    loop {
        let target = applied(&c, leader);
        if [first, second].iter().all(|&id| applied(&c, id) == target) {
            break;
        }
        assert!(start.elapsed() < WAIT, "nodes {first} and {second} never reached the leader's applied index {target}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing committed was lost: both builds' steps are in the action
    // cache, so submitting them again (to a restarted node) runs nothing.
    let ran = w.ran.lock().unwrap().len();
    for salt in ["five-before", "five-after"] {
        let again = submit(&c.node(first).api(), chain(3, salt)).await;
        let s = wait_finished(&c.apis(), &again).await;
        assert!(s.state == "succeeded" && s.steps.iter().all(|st| st.state == "cached"), "{s:?}");
    }
    assert_eq!(w.ran.lock().unwrap().len(), ran);
}
