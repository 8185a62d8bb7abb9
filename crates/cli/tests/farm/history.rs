//! `rbk builds ls|inspect|logs` against a real `rbk coordinator` and
//! `rbk worker`: a tenant's finished builds, their steps and their logs
//! replayed from what the coordinator kept; never another tenant's.

use std::process::{Command, Output};

use rbk_proto::build::build_event::Event;

use crate::harness::*;

/// `rbk builds ARGS` as the holder of `token`.
fn builds(farm: &Farm, token: &str, args: &[&str]) -> Output {
    Command::new(RBK)
        .arg("builds")
        .args(args)
        .args(["--coordinator", &farm.url, "--token", token])
        .env_remove("RBK_COORDINATOR")
        .env_remove("RBK_TOKEN")
        .output()
        .expect("running rbk builds")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "rbk builds failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_id(events: &[Event]) -> String {
    match events.first() {
        Some(Event::Accepted(a)) => a.build_id.clone(),
        other => panic!("the first event is not Accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_ls_lists_the_tenants_finished_build_and_not_for_another_tenant() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let events = farm.build(vec![farm.run("s", "k-ls", "echo listed", None, None)]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let id = build_id(&events);
    let mine = stdout_of(&builds(&farm, TENANT, &["ls"]));
    let row = mine.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("build {id} not listed:\n{mine}"));
    assert!(row.contains("succeeded") && row.contains("1/1"), "{row}");
    let theirs = stdout_of(&builds(&farm, TENANT_B, &["ls"]));
    assert!(!theirs.contains(&id), "tenant B sees tenant A's build:\n{theirs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_logs_replays_a_finished_builds_lines_per_step_as_plain_progress() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let events = farm.build(vec![farm.run("s", "k-logs", "echo first-line; echo second-line", None, None)]).await;
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    let out = stdout_of(&builds(&farm, TENANT, &["logs", &build_id(&events)]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "#1 [s] RUN echo first-line; echo second-line", "{out}");
    // `#1 <seconds since the step started> <line>`
    let logged: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("#1 ")).filter_map(|l| l.split_once(' ')).filter(|(t, _)| t.parse::<f64>().is_ok()).map(|(_, l)| l).collect();
    assert_eq!(logged, ["first-line", "second-line"], "{out}");
    assert!(lines[3].starts_with("#1 DONE "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_inspect_shows_the_worker_that_ran_a_step_and_a_cache_hit_the_next_time() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let first = farm.build(vec![farm.run("s", "k-inspect", "echo once", None, Some("a"))]).await;
    let again = farm.build(vec![farm.run("s", "k-inspect", "echo once", None, Some("a"))]).await;
    assert_eq!(final_state(&again), "succeeded", "{again:#?}");
    let json = |id: &str| -> serde_json::Value {
        serde_json::from_str(&stdout_of(&builds(&farm, TENANT, &["inspect", id, "--format", "json"]))).expect("inspect --format json")
    };
    let ran = json(&build_id(&first));
    let step = &ran["steps"][0];
    assert_eq!((step["id"].as_str(), step["state"].as_str(), step["worker"].as_str()), (Some("s"), Some("done"), Some("a")), "{ran:#}");
    assert_eq!(step["name"], "RUN echo once", "{ran:#}");
    assert!(step["started"].is_string() && step["duration_ms"].is_u64(), "no timings: {ran:#}");
    assert!(step["layers"].is_array(), "{ran:#}");
    let hit = json(&build_id(&again));
    assert_eq!((hit["steps"][0]["state"].as_str(), hit["steps"][0]["cached"].as_bool()), (Some("cached"), Some(true)), "{hit:#}");
    let table = stdout_of(&builds(&farm, TENANT, &["inspect", &build_id(&again)]));
    assert!(table.contains("Build Steps:   1/1 (100% cached)"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_build_is_not_found_by_inspect_or_logs() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let events = farm.build(vec![farm.run("s", "k-private", "echo private-output", None, None)]).await;
    let id = build_id(&events);
    for args in [["inspect", id.as_str()], ["logs", id.as_str()]] {
        let out = builds(&farm, TENANT_B, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rbk builds {args:?} as tenant B succeeded: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains(&format!("build {id} not found")), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("private-output"));
    }
}
