//! How integration tests find the real services they talk to.
//!
//! `deploy/dev/services.sh up` starts them and `services.sh env` prints the
//! variables read here. A test that needs a service and cannot reach it
//! panics at once with the name of the service and the command that starts
//! it: never a hang, never a silent skip.

pub mod data;
pub mod faults;
pub mod git;

pub use data::{half_compressible, incompressible};
pub use faults::{FaultCounts, FaultPolicy, FaultProxy};
pub use git::{GitDaemon, git};

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

const HOW: &str = "start the test services with `eval \"$(deploy/dev/services.sh up)\"` (or run `make test`)";

fn var(name: &str, service: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{service} is not configured: {name} is unset; {HOW}"),
    }
}

/// Fails fast when nothing listens at `addr`.
fn reachable(addr: &str, service: &str) {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{service} address {addr:?} is not valid: {e}"))
        .collect();
    let ok = resolved.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
    assert!(ok, "{service} at {addr} is not answering; {HOW}");
}

fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// An S3-compatible server (moto in tests).
#[derive(Debug, Clone)]
pub struct S3Service {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Service {
    /// `rbk coordinator --config CONFIG` as tests and benchmarks start it:
    /// the S3 credentials in its environment (never in the file), its
    /// stdout piped for the "listening on" line, its log to `log`.
    pub fn coordinator_command(&self, rbk: &std::path::Path, config: &std::path::Path, log: std::fs::File) -> std::process::Command {
        let mut c = std::process::Command::new(rbk);
        c.args(["coordinator", "--config"])
            .arg(config)
            .env("RBK_S3_ACCESS_KEY_ID", &self.access_key)
            .env("RBK_S3_SECRET_ACCESS_KEY", &self.secret_key)
            .env("RBK_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        c
    }
}

pub fn s3() -> S3Service {
    let endpoint = var("RBK_TEST_S3_ENDPOINT", "the S3 server");
    reachable(host_port(&endpoint), "the S3 server");
    S3Service {
        endpoint,
        region: std::env::var("RBK_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key: var("RBK_TEST_S3_ACCESS_KEY", "the S3 server"),
        secret_key: var("RBK_TEST_S3_SECRET_KEY", "the S3 server"),
    }
}

/// The `redis://` URL of a running redis-server.
pub fn redis_url() -> String {
    let url = var("RBK_TEST_REDIS_URL", "redis-server");
    reachable(host_port(&url), "redis-server");
    url
}

/// `host:port` of a running docker-registry (plain HTTP).
pub fn registry() -> String {
    let addr = var("RBK_TEST_REGISTRY", "docker-registry");
    reachable(&addr, "docker-registry");
    addr
}

/// A program the services script installed, for tests that run their own
/// instance (to stop it mid-test) or need a runtime: `moto_server`,
/// `redis-server`, `runc`, `crun`, `busybox`.
pub fn program(name: &str) -> PathBuf {
    let key = format!("RBK_TEST_BIN_{}", name.to_uppercase().replace('-', "_"));
    let path = PathBuf::from(var(&key, name));
    assert!(path.exists(), "{name} is not installed at {} ({key}); {HOW}", path.display());
    path
}

/// A TCP port nothing listens on right now, for a test's private server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding an ephemeral port")
}

/// Waits until `addr` accepts connections, or panics naming the service.
pub fn wait_for_port(addr: &str, service: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{service} did not start listening on {addr} within {timeout:?}");
}

/// SIGTERMs the pasta processes serving step namespaces under `dir`: a
/// worker a test SIGKILLs leaves them behind (the next start of that
/// worker would stop them; a test's worker never starts again).
pub fn stop_pasta_under(dir: &std::path::Path) {
    let dir = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_pasta = args.first().is_some_and(|a| a.ends_with(b"pasta"));
        if is_pasta && args.iter().any(|a| String::from_utf8_lossy(a).starts_with(&dir)) {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
