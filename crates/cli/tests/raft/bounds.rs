//! Bounds on what one tenant can make the coordinator hold (issue #15,
//! item 7), with real processes and Raft on.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_for_a_label_no_worker_has_fails_naming_the_label() {
    let mut c = Cluster::new(3, 1000);
    for id in 1..=3 {
        let path = c.config_of(id);
        let text = std::fs::read_to_string(&path).unwrap().replace("[scheduler]\n", "[scheduler]\nunschedulable_timeout_ms = 1000\n");
        std::fs::write(&path, text).unwrap();
    }
    c.start_all();
    let urls = c.apis();
    // A worker of the tenant's pool, without the label.
    let _w = TestWorker::start("w1", urls.clone(), 50);
    let mut gpu = step("a", "unschedulable-key-a", &[], None);
    gpu.labels.insert("gpu".into(), "yes".into());
    let build_id = submit(&urls[0], vec![gpu]).await;
    let finished = wait_finished(&urls, &build_id).await;
    assert_eq!(finished.state, "failed", "{finished:?}");
    let message = &finished.steps[0].message;
    assert!(message.contains("cannot be scheduled") && message.contains("label gpu=yes"), "{message}\n{}", c.log_tails());
}
