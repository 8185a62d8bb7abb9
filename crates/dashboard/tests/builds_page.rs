//! The builds page over a full state (1,000 builds, the most the state
//! keeps): what it lists, and how long rendering takes (printed, not
//! asserted: `cargo test -p rbk-dashboard --test builds_page -- --nocapture`).

use std::time::Instant;

use rbk_coordinator::build_history::{BuildHistory, HistoryLimits};
use rbk_coordinator::model::{BuildEvent, BuildState, StepNode};
use rbk_coordinator::state::{Command, CoordinatorState, MemoryState, StepState, query};
use rbk_dashboard::pages::render_builds_page;

async fn state_with(builds: usize, steps: usize) -> MemoryState {
    let state = MemoryState::new();
    for b in 0..builds {
        let ns = if b % 10 == 9 { "team-b" } else { "team-a" };
        let graph: Vec<StepNode> = (0..steps)
            .map(|s| StepNode {
                id: format!("s{s}"),
                key: format!("{b:04}{s:04}"),
                name: format!("RUN make part-{s} # build {b:04}"),
                payload: br#"{"file":"Dockerfile","line":3}"#.to_vec(),
                ..Default::default()
            })
            .collect();
        let build_id = format!("build-{b:04}");
        let steps_list = graph.iter().map(|n| (n.id.clone(), n.key.clone())).collect();
        state
            .apply(Command::CreateBuild { build_id: build_id.clone(), namespace: ns.into(), steps: steps_list, now_ms: 1_000 + b as u64, graph, submitter: format!("{ns}-bot") })
            .await
            .unwrap();
        for s in 0..steps {
            let st = if s % 2 == 0 { StepState::Cached } else { StepState::Done };
            state
                .apply(Command::SetStep { build_id: build_id.clone(), step_id: format!("s{s}"), state: st, worker_id: "w".into(), attempts: 1, message: String::new() })
                .await
                .unwrap();
        }
        state.apply(Command::FinishBuild { build_id, state: BuildState::Succeeded, message: String::new(), now_ms: 5_000 + b as u64 }).await.unwrap();
    }
    state
}

#[tokio::test]
async fn the_builds_page_lists_only_the_tenants_builds_newest_first() {
    let state = state_with(20, 3).await;
    let page = query(&state, |m| render_builds_page(m, &BuildHistory::default(), "team-b")).unwrap();
    let ids: Vec<&str> = page.match_indices("href=\"/builds/build-").map(|(i, _)| &page[i + 14..i + 24]).collect();
    assert_eq!(ids, ["build-0019", "build-0009"]);
    assert!(page.contains("<td class=\"submitter\">team-b-bot</td>"), "who submitted each build");
    assert!(!page.contains("team-a-bot"), "another tenant's token names are not shown");
}

#[tokio::test]
async fn a_step_name_with_markup_is_shown_as_text() {
    let state = MemoryState::new();
    let graph = vec![StepNode { id: "s".into(), key: "k".into(), name: "RUN echo '<script>alert(1)</script>'".into(), ..Default::default() }];
    state
        .apply(Command::CreateBuild { build_id: "b1".into(), namespace: "team-a".into(), steps: vec![("s".into(), "k".into())], now_ms: 1, graph, submitter: String::new() })
        .await
        .unwrap();
    let page = query(&state, |m| render_builds_page(m, &BuildHistory::default(), "team-a")).unwrap();
    assert!(!page.contains("<script>alert"), "markup in a step name is escaped");
    assert!(page.contains("alert(1)"), "the name is shown");
}

/// The issue asks for under 200 ms of server time for 1,000 builds; this
/// measures it (debug builds are several times slower than release).
#[tokio::test]
async fn rendering_the_builds_page_of_a_thousand_builds_is_measured() {
    let state = state_with(1000, 20).await;
    // Every build in one tenant's page: the worst case.
    let all = MemoryState::new();
    for b in query(&state, |m| m.builds_of("team-a", 1000).into_iter().chain(m.builds_of("team-b", 1000)).collect::<Vec<_>>()) {
        let steps = b.steps.iter().map(|s| (s.id.clone(), s.key.clone())).collect();
        all.apply(Command::CreateBuild { build_id: b.id.clone(), namespace: "team-a".into(), steps, now_ms: b.created_ms, graph: b.graph, submitter: String::new() })
            .await
            .unwrap();
    }
    // This node ran every one of them and keeps their step times.
    let history = BuildHistory::default();
    history.set_limits(HistoryLimits { builds: 1000, log_bytes_per_build: 1 << 20 });
    for b in query(&all, |m| m.builds_of("team-a", 1000)) {
        for s in &b.steps {
            history.record(&b.id, &BuildEvent::Started { step_id: s.id.clone(), worker_id: "w".into(), attempt: 1, name: String::new() });
            let done = BuildEvent::Finished { step_id: s.id.clone(), worker_id: "w".into(), duration_ms: 5, bytes_restored: 10, layers: vec![], config: vec![] };
            history.record(&b.id, &done);
        }
    }
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let page = query(&all, |m| render_builds_page(m, &history, "team-a")).unwrap();
        times.push(t.elapsed());
        size = page.len();
        assert_eq!(page.matches("class=\"build-row\"").count(), 1000);
    }
    times.sort();
    println!(
        "builds page, 1000 builds of 20 steps: median {:?}, best {:?} ({} KiB of HTML; {} build)",
        times[2],
        times[0],
        size / 1024,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
