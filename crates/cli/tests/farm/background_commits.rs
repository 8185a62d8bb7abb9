//! Cache commits behind the steps (issue #17): a worker reports a step
//! done once its layer is stored and captures the step's cache mount
//! afterwards; the build ends when the commit has landed, or when the
//! worker is lost first (then only that commit is lost).

use rbk_proto::build::build_event::Event;

use crate::harness::*;

fn commit_lines(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Log(l) = e { (l.stream == "commit").then(|| l.line.clone()) } else { None }).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_ends_after_its_background_commit_landed_and_says_so() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let step = farm.run("s", "k1", "echo warm > /cache/f", Some(("c", "shared")), Some("a"));
    let events = farm.build(vec![step]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let lines = commit_lines(&events);
    assert!(lines.iter().any(|l| l.starts_with("cache \"c\": committed")), "{events:#?}");
    // The head is there as soon as the build has ended.
    assert_eq!(farm.cache_files("c").await["f"], "warm\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_while_committing_in_the_background_leaves_the_previous_head_and_the_next_build_is_correct() {
    let farm = Farm::start_with(Timing { heartbeat_ms: 200, worker_timeout_ms: 2000 }).await;
    let mut a = farm.worker("a", &[]);
    let first = farm.run("s", "k1", "echo one > /cache/f", Some(("c", "shared")), Some("a"));
    assert_eq!(final_state(&farm.build(vec![first]).await), "succeeded");

    // Enough files that capturing them takes a while after the step's
    // result; the worker is killed as soon as the step is reported done.
    let many = "echo two > /cache/f; i=0; while [ $i -lt 3000 ]; do echo $i > /cache/n$i; i=$((i+1)); done";
    let second = farm.run("s", "k2", many, Some(("c", "shared")), Some("a"));
    let mut stream = farm.submit(vec![second], Default::default()).await;
    let mut events = Vec::new();
    read_until(&mut stream, &mut events, "the step's result", |e| matches!(e, Event::Finished(_))).await;
    a.sigkill();
    read_until(&mut stream, &mut events, "the end of the build", |e| matches!(e, Event::BuildFinished(_))).await;
    assert_eq!(final_state(&events), "succeeded", "the step was done; only its commit was at stake: {events:#?}");
    eprintln!("commit lines of the interrupted build: {:?}", commit_lines(&events));

    // The head is one whole commit: the first build's, or (had the capture
    // won the race) the second's, never a mix.
    let files = farm.cache_files("c").await;
    match files["f"].as_str() {
        "one\n" => assert_eq!(files.len(), 1, "the previous head gained files: {:?}", files.keys().take(5).collect::<Vec<_>>()),
        "two\n" => assert_eq!(files.len(), 3001, "a partial commit became the head"),
        other => panic!("the head's f is {other:?}"),
    }

    // A fresh worker builds on that head.
    let _b = farm.worker("b", &[]);
    let third = farm.run("s", "k3", "cat /cache/f && echo three >> /cache/f", Some(("c", "shared")), Some("b"));
    let events = farm.build(vec![third]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let after = farm.cache_files("c").await;
    assert_eq!(after["f"], format!("{}three\n", files["f"]));
    assert_eq!(after.len(), files.len());
}
