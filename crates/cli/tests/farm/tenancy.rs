//! Tenants that cannot touch each other (issue #15, items 1-3), with real
//! `rbk coordinator` and `rbk worker` processes: a worker runs only steps of
//! the tenants its pool serves, its id and labels are the token file's, and
//! the action cache is keyed by what runs, not by what a client claims.

use std::time::{Duration, Instant};

use rbk_proto::build::build_event::Event;

use crate::harness::*;

/// Waits until `worker`'s log contains `needle`.
fn wait_log(worker: &Worker, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log_text().contains(needle) {
        assert!(Instant::now() < deadline, "worker {} never logged {needle:?}:\n{}", worker.id, worker.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_claiming_another_workers_labels_gets_no_step_of_a_tenant_its_pool_does_not_serve() {
    let farm = Farm::start().await;
    // The rogue pool serves only tenant B; its worker claims label worker=a.
    let mut rogue = farm.worker_presenting("rogue", ROGUE_TOKEN, "worker=a");
    rogue.wait_registered();
    let mut stream = farm.submit(vec![farm.run("s", "k-team", "echo team-secret-work", None, Some("a"))], Default::default()).await;
    // Only now a worker that may run it: the step waited for it.
    let _a = farm.worker("a", &[]);
    let mut events = Vec::new();
    loop {
        let m = tokio::time::timeout(WAIT, stream.message()).await.expect("build did not finish").unwrap().expect("stream ended");
        let e = m.event.unwrap();
        let done = matches!(e, Event::BuildFinished(_));
        events.push(e);
        if done {
            break;
        }
    }
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(finished_on(&events)["s"], "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_token_cannot_register_under_a_worker_id_another_token_owns() {
    let farm = Farm::start().await;
    let a = farm.worker("a", &[]);
    // The shared pool token, claiming worker a's id and label.
    let rogue = farm.worker_presenting("a", WORKER_TOKEN, "worker=a");
    wait_log(&rogue, "belongs to another worker token");
    let events = farm.build(vec![farm.run("s", "k1", "echo on-the-real-a", None, Some("a"))]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(logs_of(&events, "s"), ["on-the-real-a"]);
    assert_eq!(a.log_text().matches("registered with").count(), 1, "the real worker a was kicked off:\n{}", a.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_server_action_keys_a_result_stored_under_a_forged_key_is_not_served_to_the_step_that_key_belongs_to() {
    // The default configuration: server keys are on without being asked for.
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    // The attacker pairs its own payload with the key of the honest step.
    let forged = farm.build(vec![farm.run("s", "k-honest", "echo planted", None, None)]).await;
    assert_eq!(final_state(&forged), "succeeded", "{forged:#?}");
    let honest = farm.build(vec![farm.run("s", "k-honest", "echo honest", None, None)]).await;
    assert_eq!(final_state(&honest), "succeeded", "{honest:#?}");
    assert!(!honest.iter().any(|e| matches!(e, Event::Cached(_))), "the honest step came out CACHED: {honest:#?}");
    assert_eq!(logs_of(&honest, "s"), ["honest"]);
    // And an unchanged step is still a cache hit.
    let again = farm.build(vec![farm.run("s", "k-honest", "echo honest", None, None)]).await;
    assert!(again.iter().any(|e| matches!(e, Event::Cached(_))), "an unchanged step was not cached: {again:#?}");
}
