//! `GET /metrics` over a real TCP connection.

use rbk_metrics::exposition::sample;
use rbk_metrics::{BuildResult, Metrics, MetricsServer, StepResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request; returns (status line, headers, body).
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_ascii_lowercase(), body.to_owned())
}

async fn server() -> (Metrics, MetricsServer) {
    let m = Metrics::new();
    let s = MetricsServer::start("127.0.0.1:0".parse().unwrap(), m.clone()).await.unwrap();
    (m, s)
}

#[tokio::test]
async fn get_metrics_answers_with_prometheus_text_showing_recorded_values() {
    let (m, s) = server().await;
    m.build_finished(BuildResult::Succeeded, std::time::Duration::from_millis(1500));
    m.step(StepResult::Cached);
    m.step(StepResult::Cached);
    m.set_scheduler(4, 2, 1, 1);
    let (status, headers, body) = request(s.local_addr(), "GET", "/metrics", None).await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    assert_eq!(sample(&body, "rbk_builds_total", &[("result", "succeeded")]), Some(1.0), "{body}");
    assert_eq!(sample(&body, "rbk_builds_total", &[("result", "failed")]), Some(0.0), "known results start at zero");
    assert_eq!(sample(&body, "rbk_steps_total", &[("result", "cached")]), Some(2.0));
    assert_eq!(sample(&body, "rbk_queue_depth", &[]), Some(4.0));
    assert_eq!(sample(&body, "rbk_workers_connected", &[]), Some(2.0));
    assert_eq!(sample(&body, "rbk_build_duration_seconds_count", &[("result", "succeeded")]), Some(1.0));
    assert!(body.contains("# HELP rbk_builds_total "), "{body}");
}

#[tokio::test]
async fn openmetrics_is_served_to_scrapers_that_ask_for_it() {
    let (_m, s) = server().await;
    let (status, headers, body) =
        request(s.local_addr(), "GET", "/metrics", Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")).await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: application/openmetrics-text"), "{headers}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let (_m, s) = server().await;
    let (status, _, body) = request(s.local_addr(), "GET", "/", None).await;
    assert!(status.contains("404"), "{status}");
    assert!(body.contains("/metrics"), "the 404 says where metrics are: {body}");
    let (status, _, _) = request(s.local_addr(), "GET", "/metrics/extra", None).await;
    assert!(status.contains("404"), "{status}");
}

#[tokio::test]
async fn only_get_and_head_are_allowed_on_metrics() {
    let (_m, s) = server().await;
    let (status, headers, _) = request(s.local_addr(), "POST", "/metrics", None).await;
    assert!(status.contains("405"), "{status}");
    assert!(headers.contains("allow: get, head"), "{headers}");
}

#[tokio::test]
async fn a_busy_address_is_an_error_naming_it() {
    let (_m, s) = server().await;
    let e = MetricsServer::start(s.local_addr(), Metrics::new()).await.unwrap_err();
    assert!(e.to_string().contains(&s.local_addr().to_string()), "{e}");
}

#[tokio::test]
async fn dropping_the_server_stops_serving() {
    let (_m, s) = server().await;
    let addr = s.local_addr();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening on {addr}");
}
