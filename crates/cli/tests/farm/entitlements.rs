//! Entitlements end to end (issue #14, item 3): `RUN --network=host` and
//! `RUN --security=insecure` run only when the worker pool's policy allows
//! them *and* the build asks for them with `--allow`, the spelling of
//! `docker buildx build --allow`. A refused step fails before anything of
//! it runs, naming its Dockerfile line and the missing entitlement.

use std::path::Path;
use std::process::{Command, Output};

use rbk_testsupport::program;

use crate::harness::{Farm, RBK, TENANT};

fn context(run: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), dir.path().join("busybox")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{run}\n"),
    )
    .unwrap();
    dir
}

fn submit(farm: &Farm, ctx: &Path, extra: &[&str]) -> (Output, String) {
    let out = Command::new(RBK)
        .args(["submit", "--progress=plain", "--coordinator", &farm.url, "--token", TENANT, "--client-dir"])
        .arg(farm.dir.path().join("client"))
        .args(extra)
        .arg(ctx)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

/// A policy file for `rbk worker --policy` allowing `entitlements`.
fn policy(farm: &Farm, entitlements: &[&str]) -> String {
    let f = farm.dir.path().join(format!("policy-{}.json", entitlements.join("-")));
    std::fs::write(&f, serde_json::json!({ "entitlements": entitlements }).to_string()).unwrap();
    f.display().to_string()
}

/// The network namespace of this test process, which is the worker's.
fn host_netns() -> String {
    std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string()
}

const HOST_NET_STEP: &str = "RUN --network=host echo \"netns=$(readlink /proc/self/ns/net)\"";
const INSECURE_STEP: &str = "RUN --security=insecure grep -E '^(Seccomp|CapEff):' /proc/self/status";

#[tokio::test(flavor = "multi_thread")]
async fn network_host_without_allow_is_refused_at_plan_time_naming_the_line() {
    let farm = Farm::start().await;
    let _w = farm.worker("a", &["--policy", &policy(&farm, &["network.host"])]);
    let ctx = context(HOST_NET_STEP);
    let (out, stderr) = submit(&farm, ctx.path(), &[]);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:4") && stderr.contains("--allow network.host"), "{stderr}");
    assert!(!stderr.contains(" on a"), "nothing ran:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn network_host_with_allow_is_refused_by_a_pool_whose_policy_does_not_allow_it() {
    let farm = Farm::start().await;
    let _w = farm.worker("a", &[]);
    let ctx = context(HOST_NET_STEP);
    let (out, stderr) = submit(&farm, ctx.path(), &["--allow", "network.host"]);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:4") && stderr.contains("policy does not allow"), "{stderr}");
    assert!(!stderr.contains("netns=net:"), "the step never ran:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn network_host_with_allow_and_the_pools_policy_runs_in_the_workers_network() {
    let farm = Farm::start().await;
    let _w = farm.worker("a", &["--policy", &policy(&farm, &["network.host"])]);
    let ctx = context(&format!("RUN echo \"sandboxed=$(readlink /proc/self/ns/net)\"\n{HOST_NET_STEP}"));
    let (out, stderr) = submit(&farm, ctx.path(), &["--allow", "network.host"]);
    assert!(out.status.success(), "{stderr}");
    let host = host_netns();
    assert!(stderr.contains(&format!("netns={host}")), "the host step shares {host}:\n{stderr}");
    assert!(stderr.contains("sandboxed=net:") && !stderr.contains(&format!("sandboxed={host}")), "an ordinary step still has its own:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn security_insecure_without_allow_or_without_the_policy_is_refused() {
    let farm = Farm::start().await;
    let _w = farm.worker("a", &[]);
    let ctx = context(INSECURE_STEP);
    let (out, stderr) = submit(&farm, ctx.path(), &[]);
    assert!(!out.status.success() && stderr.contains("Dockerfile:4") && stderr.contains("--allow security.insecure"), "{stderr}");
    let (out, stderr) = submit(&farm, ctx.path(), &["--allow=security.insecure"]);
    assert!(!out.status.success() && stderr.contains("Dockerfile:4") && stderr.contains("policy does not allow"), "{stderr}");
    assert!(!stderr.contains("CapEff:\t"), "the step never ran:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn security_insecure_with_allow_and_the_pools_policy_runs_without_seccomp_and_with_every_capability() {
    let farm = Farm::start().await;
    let _w = farm.worker("a", &["--policy", &policy(&farm, &["security.insecure", "network.host"])]);
    let ctx = context(INSECURE_STEP);
    let (out, stderr) = submit(&farm, ctx.path(), &["--allow", "network.host,security.insecure"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Seccomp:\t0"), "{stderr}");
    let cap_eff = stderr.lines().find_map(|l| l.split("CapEff:\t").nth(1)).unwrap_or_else(|| panic!("no CapEff:\n{stderr}"));
    let caps = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    const CAP_SYS_ADMIN: u32 = 21;
    assert!(caps & (1 << CAP_SYS_ADMIN) != 0, "CapEff {cap_eff} lacks CAP_SYS_ADMIN");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_entitlement_is_a_clear_error() {
    let farm = Farm::start().await;
    let ctx = context("RUN true");
    let (out, stderr) = submit(&farm, ctx.path(), &["--allow", "network.everything"]);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow network.everything") && stderr.contains("known: network.host, security.insecure"), "{stderr}");
}
