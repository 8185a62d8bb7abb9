//! `rbk coordinator` with `[tls]`: clients reach it over https:// when they
//! trust its certificate (`--tls-ca`), and are refused with the reason when
//! they do not.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "common/coordinator.rs"]
mod coordinator;
use coordinator::{Coordinator, RBK, scratch};

const TENANT: &str = "tls-test-tenant-token-0001";
const WORKER: &str = "tls-test-worker-token-0001";

/// A coordinator serving a fresh self-signed certificate for `localhost`
/// and 127.0.0.1; the certificate is written to `ca.pem` in its dir, and
/// `url` is `https://localhost:PORT`.
fn start_tls(name: &str) -> Coordinator {
    let dir = scratch(&format!("cli-tls-{name}"));
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("tls/tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls/tls.key"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
    let mut c = Coordinator::start(
        &dir,
        &format!("[tenants]\n\"{TENANT}\" = \"team\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team\"]\n"),
        "listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n[tls]\ncert = \"tls/tls.crt\"\nkey = \"tls/tls.key\"\n",
        |_| {},
    );
    let port = c.url.rsplit(':').next().unwrap().to_owned();
    c.url = format!("https://localhost:{port}");
    c
}

fn cache_ls(url: &str, ca: Option<&Path>) -> Output {
    let mut cmd = Command::new(RBK);
    cmd.args(["cache", "ls", "--coordinator", url, "--token", TENANT]).env_remove("RBK_TLS_CA");
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    cmd.output().unwrap()
}

/// `rbk submit` of `dockerfile` (written into the coordinator's dir, also
/// the context) to `c`, trusting `ca` when given.
fn submit(c: &Coordinator, dockerfile: &str, ca: Option<&Path>) -> Output {
    std::fs::write(c.dir.join("Dockerfile"), dockerfile).unwrap();
    let mut cmd = Command::new(RBK);
    cmd.args(["submit", "--coordinator", &c.url, "--token", TENANT]).env_remove("RBK_TLS_CA");
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    cmd.arg("-f").arg(c.dir.join("Dockerfile")).arg(&c.dir).output().unwrap()
}

#[test]
fn a_client_trusting_the_ca_is_served_over_https() {
    let c = start_tls("trusted");
    let out = cache_ls(&c.url, Some(&c.dir.join("ca.pem")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID "));
}

#[test]
fn the_ca_can_come_from_rbk_tls_ca() {
    let c = start_tls("env");
    let out = Command::new(RBK)
        .args(["cache", "du", "--coordinator", &c.url, "--token", TENANT])
        .env("RBK_TLS_CA", c.dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_client_without_the_ca_is_refused_naming_the_certificate_problem() {
    let c = start_tls("untrusted");
    let out = cache_ls(&c.url, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") && err.contains(&c.url), "{err}");
}

#[test]
fn submit_without_the_ca_is_refused_naming_the_certificate_problem() {
    let c = start_tls("submit");
    let out = submit(&c, "FROM scratch\nCOPY Dockerfile /\n", None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn a_plain_client_to_a_tls_coordinator_fails_instead_of_hanging() {
    let c = start_tls("plain");
    let out = cache_ls(&c.url.replace("https://", "http://"), None);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn submit_trusting_the_ca_is_served_over_https() {
    let c = start_tls("submit-ok");
    let out = submit(&c, "FROM scratch\n", Some(&c.dir.join("ca.pem")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts `rbk worker` against `c` and returns the first stderr line
/// containing one of `markers` (or everything read, if it exited).
fn worker_until(c: &Coordinator, ca: Option<&Path>, markers: &[&str]) -> String {
    let mut cmd = Command::new(RBK);
    cmd.args(["worker", "--coordinator", &c.url, "--token", WORKER, "--id", "tls-worker", "--until-idle", "5s", "--state-dir"])
        .arg(c.dir.join("worker"))
        .arg("--runtime-path")
        .arg(rbk_testsupport::program("runc"))
        .env("RBK_LOG", "info")
        .env_remove("RBK_TLS_CA")
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    let mut child = cmd.spawn().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if markers.iter().any(|m| line.contains(m)) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn a_worker_trusting_the_ca_registers_over_https() {
    let c = start_tls("worker-ok");
    let seen = worker_until(&c, Some(&c.dir.join("ca.pem")), &["registered with", "certificate"]);
    assert!(seen.contains("registered with"), "{seen}");
}

#[test]
fn a_worker_without_the_ca_says_the_certificate_is_not_trusted() {
    let c = start_tls("worker-untrusted");
    let seen = worker_until(&c, None, &["registered with", "certificate"]);
    assert!(seen.contains("certificate") && !seen.contains("registered with"), "{seen}");
}
