//! `rbk worker --metrics-listen`: a real worker's `GET /metrics` while it
//! runs steps of a farm (coordinator on the S3 server, runc), using the farm
//! test harness.

#[path = "farm/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use rbk_metrics::exposition::sample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("metrics of the worker at {addr}: {e}"));
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}"))
}

/// Waits until `name` reaches `want` (the gauge moves while a step runs).
async fn eventually(addr: &str, name: &str, want: f64) -> String {
    for _ in 0..200 {
        let text = scrape(addr).await;
        if sample(&text, name, &[]) == Some(want) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never became {want}:\n{}", scrape(addr).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_metrics_show_its_running_step_results_restores_and_store_traffic() {
    let farm = Farm::start().await;
    let a_metrics = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let b_metrics = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let _a = farm.worker("a", &["--metrics-listen", &a_metrics]);
    let _b = farm.worker("b", &["--metrics-listen", &b_metrics]);

    // On a: write into a cache mount (a commit of new bytes).
    let first = farm.run("s", "k1", "echo warm > /cache/f", Some(("c", "shared")), Some("a"));
    assert_eq!(final_state(&farm.build(vec![first]).await), "succeeded");
    let a = scrape(&a_metrics).await;
    assert_eq!(value(&a, "rbk_worker_steps_total", &[("result", "done")]), 1.0, "{a}");
    assert!(value(&a, "rbk_worker_committed_bytes_total", &[]) > 0.0, "{a}");
    assert_eq!(value(&a, "rbk_cache_misses_total", &[("cache", "layer")]), 1.0, "a fresh worker fetches the base layer");

    // On b, cold: the step runs a while (the running gauge shows it), the
    // cache is restored from the store, and the base layer is fetched.
    let second = farm.run("s", "k2", "sleep 2; cat /cache/f", Some(("c", "shared")), Some("b"));
    let (events, running) = tokio::join!(farm.build(vec![second]), eventually(&b_metrics, "rbk_worker_steps_running", 1.0));
    assert_eq!(final_state(&events), "succeeded", "{events:#?}");
    assert_eq!(value(&running, "rbk_worker_steps_running", &[]), 1.0);
    let b = eventually(&b_metrics, "rbk_worker_steps_running", 0.0).await;
    assert_eq!(value(&b, "rbk_worker_steps_total", &[("result", "done")]), 1.0, "{b}");
    assert!(value(&b, "rbk_worker_restored_bytes_total", &[]) > 0.0, "b restored the cache: {b}");
    assert!(value(&b, "rbk_store_bytes_total", &[("direction", "read"), ("backend", "remote")]) > 0.0, "{b}");
    assert!(value(&b, "rbk_store_operation_duration_seconds_count", &[("op", "get"), ("backend", "remote")]) > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_counts_as_failed_on_its_worker() {
    let farm = Farm::start().await;
    let m = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let _a = farm.worker("a", &["--metrics-listen", &m]);
    let step = farm.run("s", "k", "exit 3", None, None);
    assert_eq!(final_state(&farm.build(vec![step]).await), "failed");
    let text = scrape(&m).await;
    assert_eq!(value(&text, "rbk_worker_steps_total", &[("result", "failed")]), 1.0, "{text}");
    assert_eq!(value(&text, "rbk_worker_steps_total", &[("result", "done")]), 0.0);
    assert_eq!(value(&text, "rbk_worker_steps_running", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_exports_its_build_info_and_process_series_and_no_coordinator_series() {
    let farm = Farm::start().await;
    let m = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let _a = farm.worker("a", &["--metrics-listen", &m]);
    let text = scrape(&m).await;
    let info = text.lines().find(|l| l.starts_with("rbk_build_info{")).unwrap_or_else(|| panic!("no rbk_build_info:\n{text}"));
    assert!(info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))) && info.contains("commit=\"") && info.ends_with(" 1"), "{info}");
    assert!(value(&text, "process_resident_memory_bytes", &[]) > 0.0, "{text}");
    assert!(value(&text, "process_start_time_seconds", &[]) > 0.0, "{text}");
    for coordinator_only in ["rbk_raft_", "rbk_queue_depth", "rbk_builds_", "rbk_workers_connected"] {
        assert!(!text.lines().any(|l| l.starts_with(coordinator_only)), "a worker exports {coordinator_only}*:\n{text}");
    }
    assert!(text.contains("rbk_worker_steps_running"), "{text}");
}
