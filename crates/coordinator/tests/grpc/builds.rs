//! Builds over the real Build and Worker services.

use std::time::Duration;

use rbk_proto::build::{self as pb, build_event::Event};
use rbk_proto::worker::coordinator_message::Msg as Down;
use rbk_proto::worker::worker_message::Msg as Up;
use rbk_proto::worker::{self as pw};

use tokio::time::timeout;

use crate::harness::*;

#[tokio::test]
async fn a_worker_runs_a_small_dag_and_the_client_sees_it_finish() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 2).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("base", "k-base", &[]), step("app", "k-app", &["base"])]).await.unwrap();

    let base = w.assignment().await;
    assert_eq!((base.step_id.as_str(), base.namespace.as_str(), base.attempt), ("base", "team-a", 1));
    assert_eq!(base.payload, b"{\"run\":\"k-base\"}");
    w.send(Up::Log(pw::StepLog { assignment_id: base.assignment_id.clone(), stream: "stdout".into(), line: "hi".into() }));
    w.succeed(&base, vec![]).await;
    let app = w.assignment().await;
    assert_eq!(app.inputs.len(), 1);
    assert_eq!(app.inputs[0].step_id, "base");
    assert_eq!(app.inputs[0].layers.len(), 1, "the parent's layer travels with the assignment");
    w.succeed(&app, vec![]).await;

    let events = build.finish().await;
    assert!(events.iter().any(|e| matches!(e, Event::Log(l) if l.line == "hi" && l.step_id == "base")), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Started(s) if s.step_id == "app" && s.worker_id == "w1")));
    assert_eq!(final_state(&events), "succeeded");
    let status = client.status(&build.build_id).await.unwrap();
    assert_eq!(status.state, "succeeded");
    let states: Vec<_> = status.steps.iter().map(|s| (s.step_id.as_str(), s.state.as_str())).collect();
    assert_eq!(states, [("base", "done"), ("app", "done")]);
    let listed = client.inner.list(bearer(Default::default(), TENANT_A)).await.unwrap().into_inner().builds;
    assert_eq!(listed.iter().map(|b| b.build_id.as_str()).collect::<Vec<_>>(), [build.build_id.as_str()]);
}

#[tokio::test]
async fn a_resubmitted_build_is_cached_and_nothing_runs() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 2).await;
    let mut client = farm.client(TENANT_A).await;
    let graph = vec![step("a", "k-a", &[]), step("b", "k-b", &["a"])];
    let mut first = client.submit(graph.clone()).await.unwrap();
    let a = w.assignment().await;
    w.succeed(&a, vec![]).await;
    let b = w.assignment().await;
    w.succeed(&b, vec![]).await;
    assert_eq!(final_state(&first.finish().await), "succeeded");

    let mut again = client.submit(graph).await.unwrap();
    let events = again.finish().await;
    let cached: Vec<_> = events.iter().filter_map(|e| if let Event::Cached(c) = e { Some(c.step_id.as_str()) } else { None }).collect();
    assert_eq!(cached, ["a", "b"]);
    assert_eq!(final_state(&events), "succeeded");
    assert!(w.idle().await, "a cached step reached the worker");
}

#[tokio::test]
async fn identical_steps_in_flight_from_two_builds_run_once() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 4).await;
    let mut client = farm.client(TENANT_A).await;
    let mut one = client.submit(vec![step("x", "k-same", &[])]).await.unwrap();
    let a = w.assignment().await;
    let mut two = client.submit(vec![step("y", "k-same", &[])]).await.unwrap();
    assert!(w.idle().await, "the identical step was sent twice");
    w.succeed(&a, vec![]).await;
    assert_eq!(final_state(&one.finish().await), "succeeded");
    let events = two.finish().await;
    assert!(events.iter().any(|e| matches!(e, Event::Finished(f) if f.step_id == "y" && f.worker_id == "w1")), "{events:?}");
    assert_eq!(final_state(&events), "succeeded");
}

#[tokio::test]
async fn a_worker_whose_stream_drops_mid_step_has_the_step_reassigned() {
    let farm = farm().await;
    let mut w1 = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let first = w1.assignment().await;
    let mut w2 = farm.worker("w2", 1).await;
    drop(w1); // the worker process dies: its stream ends mid-step
    let again = w2.assignment().await;
    assert_eq!((again.step_id.as_str(), again.attempt), ("a", 2));
    assert_ne!(again.assignment_id, first.assignment_id);
    w2.succeed(&again, vec![]).await;
    let events = build.finish().await;
    let starts: Vec<_> = events.iter().filter_map(|e| if let Event::Started(s) = e { Some(s.worker_id.as_str()) } else { None }).collect();
    assert_eq!(starts, ["w1", "w2"], "{events:?}");
    assert_eq!(final_state(&events), "succeeded");
}

#[tokio::test]
async fn a_failing_step_reports_its_exit_code_and_fails_the_build() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("a", "k-a", &[]), step("b", "k-b", &["a"])]).await.unwrap();
    let a = w.assignment().await;
    w.send(Up::Result(pw::StepResult {
        assignment_id: a.assignment_id,
        ok: false,
        message: "RUN exited with status 3".into(),
        exit_code: 3,
        ..Default::default()
    }));
    let events = build.finish().await;
    assert!(events.iter().any(|e| matches!(e, Event::Failed(f) if f.exit_code == 3 && f.step_id == "a")), "{events:?}");
    assert_eq!(final_state(&events), "failed");
    let status = client.status(&build.build_id).await.unwrap();
    assert_eq!(status.steps[1].state, "cancelled");
}

#[tokio::test]
async fn cancelling_a_build_stops_its_running_step_on_the_worker() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let a = w.assignment().await;
    client.inner.cancel(bearer(rbk_proto::build::CancelRequest { build_id: build.build_id.clone() }, TENANT_A)).await.unwrap();
    match w.next().await {
        Down::Cancel(c) => assert_eq!(c.assignment_id, a.assignment_id),
        other => panic!("expected cancel, got {other:?}"),
    }
    assert_eq!(final_state(&build.finish().await), "cancelled");
}

#[tokio::test]
async fn a_graph_with_a_cycle_is_refused_naming_the_steps() {
    let farm = farm().await;
    let mut client = farm.client(TENANT_A).await;
    let err = client.submit(vec![step("a", "k1", &["b"]), step("b", "k2", &["a"])]).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "invalid build graph: dependency cycle among steps a, b");
    let err = client.submit(vec![with_cache(step("a", "k1", &[]), "pip", "sometimes")]).await.err().unwrap();
    assert!(err.message().contains("step a: cache pip: sharing=\"sometimes\""), "{}", err.message());
}

#[tokio::test]
async fn a_worker_must_register_first() {
    let farm = farm().await;
    let mut client = rbk_proto::worker::worker_client::WorkerClient::new(farm.channel().await);
    let hb = pw::WorkerMessage { msg: Some(Up::Heartbeat(pw::Heartbeat::default())) };
    let err = client.session(bearer(futures::stream::iter(vec![hb]), WORKER)).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("first message"), "{}", err.message());
}

#[tokio::test]
async fn a_worker_that_goes_silent_on_an_open_stream_has_its_step_retried() {
    let farm = farm_with(rbk_coordinator::SchedulerConfig {
        heartbeat_interval: std::time::Duration::from_millis(100),
        worker_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut silent = farm.worker("silent", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let first = silent.assignment().await;
    let mut alive = farm.worker("alive", 1).await;
    let beat = alive.tx.clone();
    let beating = tokio::spawn(async move {
        while beat.send(pw::WorkerMessage { msg: Some(Up::Heartbeat(pw::Heartbeat::default())) }).is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let again = alive.assignment().await;
    assert_eq!((again.step_id.as_str(), again.attempt), ("a", 2));
    // The silent worker's late result no longer counts.
    silent.succeed(&first, vec![]).await;
    alive.succeed(&again, vec![]).await;
    let events = build.finish().await;
    assert!(events.iter().any(|e| matches!(e, Event::Finished(f) if f.worker_id == "alive")), "{events:?}");
    assert_eq!(final_state(&events), "succeeded");
    beating.abort();
}

#[tokio::test]
async fn a_draining_worker_gets_no_new_steps() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 2).await;
    w.send(Up::Drain(pw::Drain {}));
    // Acknowledged: the coordinator has read it, so the build below cannot
    // reach w1 (which would otherwise win the tie-break by name).
    assert!(matches!(w.next().await, Down::DrainAck(_)), "the drain is acknowledged");
    let mut fresh = farm.worker("w2", 2).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let a = fresh.assignment().await;
    assert!(w.idle().await);
    fresh.succeed(&a, vec![]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");
}

#[tokio::test]
async fn submitting_without_steps_needs_a_planner_and_says_so() {
    let farm = farm().await;
    let mut client = farm.client(TENANT_A).await;
    let err = client.submit(vec![]).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("no Dockerfile planner"), "{}", err.message());
}

#[tokio::test]
async fn a_submitting_client_that_does_not_read_is_dropped_with_an_error_and_can_replay_with_watch() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    // Not read until the build is over.
    let mut unread = client.submit(vec![step("a", "k-noisy", &[])]).await.unwrap();
    let a = w.assignment().await;
    // Long lines: more than the backlog and the client's HTTP/2 window
    // (which it fills without reading) together.
    let lines = 4 * rbk_coordinator::SUBMIT_BACKLOG;
    let filler = "x".repeat(1000);
    for i in 0..lines {
        w.send(Up::Log(pw::StepLog { assignment_id: a.assignment_id.clone(), stream: "stdout".into(), line: format!("line {i} {filler}") }));
    }
    w.succeed(&a, vec![]).await;
    let mut status = client.status(&unread.build_id).await.unwrap();
    while status.state == "running" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = client.status(&unread.build_id).await.unwrap();
    }
    assert_eq!(status.state, "succeeded");
    let mut received = 0;
    let error = loop {
        match timeout(WAIT, unread.events.message()).await.expect("the stream neither ended nor failed") {
            Ok(Some(m)) => {
                assert!(!matches!(m.event, Some(Event::BuildFinished(_))), "every event was kept for a client that did not read");
                received += 1;
            }
            Ok(None) => panic!("the stream ended without saying why after {received} events"),
            Err(status) => break status,
        }
    };
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(error.message().contains("re-attach with Watch"), "{error:?}");
    assert!(received < lines, "{received} of {lines} events were kept");
    // Watch replays the build, to its end.
    let req = pb::WatchRequest { build_id: unread.build_id.clone(), ..Default::default() };
    let mut watch = client.inner.watch(bearer(req, TENANT_A)).await.unwrap().into_inner();
    let mut last = None;
    while let Some(m) = timeout(WAIT, watch.message()).await.unwrap().unwrap() {
        last = m.event;
    }
    assert!(matches!(&last, Some(Event::BuildFinished(f)) if f.state == "succeeded"), "{last:?}");
}


#[tokio::test]
async fn a_build_records_the_name_of_the_token_that_submitted_it_or_its_tenants_for_an_unnamed_token() {
    let farm = farm().await;
    let named = farm.client(TENANT_A).await.submit(vec![step("a", "k-named", &[])]).await.unwrap();
    let unnamed = farm.client(TENANT_B).await.submit(vec![step("a", "k-unnamed", &[])]).await.unwrap();
    let submitter = |id: &str| rbk_coordinator::state::query(&*farm.coordinator.state, |m| m.build(id).map(|b| b.submitter.clone()));
    assert_eq!(submitter(&named.build_id).as_deref(), Some("ci-bot"));
    assert_eq!(submitter(&unnamed.build_id).as_deref(), Some("team-b"));
}

#[tokio::test]
async fn a_step_results_phases_reach_the_build_history_over_the_worker_stream() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let build = farm.client(TENANT_A).await.submit(vec![step("a", "k-phases", &[])]).await.unwrap();
    let a = w.assignment().await;
    let layer = rbk_store::StoreExt::put_bytes(&*farm.store, b"a layer".to_vec().into()).await.unwrap();
    let phases = pw::StepPhases { restore_ms: 3, run_ms: 50, upload_ms: 4, layer_bytes: 7, ..Default::default() };
    w.send(Up::Result(pw::StepResult {
        assignment_id: a.assignment_id.clone(),
        ok: true,
        layers: vec![layer.to_string()],
        config: b"{}".to_vec(),
        phases: Some(phases),
        ..Default::default()
    }));
    let history = farm.coordinator.scheduler.events().history().clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = history.step_times(&build.build_id).and_then(|s| s.get("a").copied());
        if t.is_some_and(|t| t.finished_ms > 0) {
            let p = t.unwrap().phases;
            assert_eq!((p.restore_ms, p.run_ms, p.upload_ms, p.layer_bytes), (3, 50, 4, 7));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the step did not finish: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
