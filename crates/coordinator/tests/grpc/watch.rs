//! `Build.Watch` on a single coordinator: several watchers per build, a
//! replay of what happened before they attached, and tenant scoping.

use rbk_proto::build::build_event::Event;
use rbk_proto::build::{self as pb};
use rbk_proto::worker::worker_message::Msg as Up;
use rbk_proto::worker::{self as pw};
use tokio::time::timeout;

use crate::harness::*;

async fn watch(client: &mut Client, build_id: &str) -> Result<Submitted, tonic::Status> {
    let req = pb::WatchRequest { build_id: build_id.into(), secrets: Default::default(), submitter: false };
    let events = client.inner.watch(bearer(req, &client.token)).await?.into_inner();
    Ok(Submitted { build_id: build_id.into(), events })
}

fn steps_ended(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Finished(f) => Some(f.step_id.clone()),
            Event::Cached(c) => Some(c.step_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn two_watchers_attached_mid_build_each_see_the_whole_build_once() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("base", "k-w-base", &[]), step("app", "k-w-app", &["base"])]).await.unwrap();
    let base = w.assignment().await;
    w.succeed(&base, vec![]).await;
    let app = w.assignment().await;
    // Both attach after base finished and app started.
    let mut first = watch(&mut farm.client(TENANT_A).await, &build.build_id).await.unwrap();
    let mut second = watch(&mut farm.client(TENANT_A).await, &build.build_id).await.unwrap();
    w.send(Up::Log(pw::StepLog { assignment_id: app.assignment_id.clone(), stream: "stdout".into(), line: "building app".into() }));
    // The log line reaches both before the step ends (live, not replayed).
    let mut seen = [Vec::new(), Vec::new()];
    for (s, seen) in [&mut first, &mut second].into_iter().zip(seen.iter_mut()) {
        loop {
            let e = timeout(WAIT, s.events.message()).await.unwrap().unwrap().unwrap().event.unwrap();
            let logged = matches!(&e, Event::Log(l) if l.line == "building app");
            seen.push(e);
            if logged {
                break;
            }
        }
    }
    w.succeed(&app, vec![]).await;
    let submitter = build.finish().await;
    assert_eq!(final_state(&submitter), "succeeded");
    for (s, seen) in [&mut first, &mut second].into_iter().zip(seen.iter_mut()) {
        seen.extend(s.finish().await);
        assert!(matches!(&seen[0], Event::Accepted(_)), "{seen:?}");
        assert_eq!(final_state(seen), "succeeded", "{seen:?}");
        assert_eq!(steps_ended(seen), ["base", "app"], "base from the replay, app live, each once: {seen:?}");
    }
}

#[tokio::test]
async fn a_watch_of_a_finished_build_replays_it_with_results_and_ends() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut client = farm.client(TENANT_A).await;
    let mut build = client.submit(vec![step("only", "k-w-only", &[])]).await.unwrap();
    let a = w.assignment().await;
    w.succeed(&a, vec![]).await;
    build.finish().await;
    let events = watch(&mut client, &build.build_id).await.unwrap().finish_all().await;
    assert!(matches!(&events[0], Event::Accepted(a) if a.build_id == build.build_id && a.total_steps == 1), "{events:?}");
    assert!(matches!(&events[1], Event::Finished(f) if f.step_id == "only" && f.worker_id == "w1" && !f.layers.is_empty()), "{events:?}");
    assert_eq!(final_state(&events), "succeeded");
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn another_tenant_cannot_watch_a_build() {
    let farm = farm().await;
    let _w = farm.worker("w1", 1).await;
    let build = farm.client(TENANT_A).await.submit(vec![step("s", "k-w-s", &[])]).await.unwrap();
    let Err(refused) = watch(&mut farm.client(TENANT_B).await, &build.build_id).await else { panic!("tenant B watched tenant A's build") };
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let Err(refused) = watch(&mut farm.client("").await, &build.build_id).await else { panic!("a watch without a token was served") };
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

impl Submitted {
    /// Every event until the stream ends (a watch ends after the final one).
    async fn finish_all(mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(m) = timeout(WAIT, self.events.message()).await.unwrap().unwrap() {
            out.push(m.event.unwrap());
        }
        out
    }
}
