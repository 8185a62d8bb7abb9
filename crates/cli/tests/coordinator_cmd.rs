//! `rbk coordinator` and `rbk cache` as processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[path = "common/coordinator.rs"]
mod coordinator;
use coordinator::{Coordinator, RBK, scratch};

const TENANT: &str = "cli-test-tenant-token-0001";

fn start(dir: &std::path::Path) -> Coordinator {
    Coordinator::start(
        dir,
        &format!("[tenants]\n\"{TENANT}\" = \"team\"\n"),
        "listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n",
        |_| {},
    )
}

fn rbk_cache(url: &str, token: &str, sub: &str) -> std::process::Output {
    Command::new(RBK).args(["cache", sub, "--coordinator", url, "--token", token]).output().unwrap()
}

#[test]
fn cache_ls_and_du_answer_for_a_valid_token() {
    let dir = scratch("cli-ls");
    let c = start(&dir);
    let ls = rbk_cache(&c.url, TENANT, "ls");
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    assert!(String::from_utf8_lossy(&ls.stdout).starts_with("ID "));
    let du = rbk_cache(&c.url, TENANT, "du");
    assert!(du.status.success());
    let du = String::from_utf8_lossy(&du.stdout);
    assert!(du.trim_start().starts_with("0 B  total\n") && du.contains("cache heads:   0 B (no budget)"), "{du}");
    assert!(dir.join("store").is_dir(), "the filesystem store was opened where the config says");
}

#[test]
fn cache_ls_with_an_unknown_token_fails_and_says_why() {
    let dir = scratch("cli-badtoken");
    let c = start(&dir);
    let out = rbk_cache(&c.url, "someone-elses-token-123456", "ls");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown token"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_config_is_an_error_naming_the_file() {
    let dir = scratch("cli-badcfg");
    let cfg = dir.join("coordinator.toml");
    std::fs::write(&cfg, "listen = \"not an address\"\n").unwrap();
    let out = Command::new(RBK).args(["coordinator", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cache_prune_reports_what_it_dropped_and_refuses_a_bad_age() {
    let dir = scratch("cli-prune");
    let c = start(&dir);
    let out = Command::new(RBK).args(["cache", "prune", "--unused-for", "7d", "--coordinator", &c.url, "--token", TENANT]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dropped 0 heads, 0 B total");
    let out = Command::new(RBK).args(["cache", "prune", "--unused-for", "7 days", "--coordinator", &c.url, "--token", TENANT]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a number followed by s, m, h or d"));
}

#[test]
fn store_selftest_reads_the_dir_form_of_a_coordinator_configs_store_table() {
    let dir = scratch("selftest-dir");
    // As the chart renders it: the whole coordinator config, `[store] dir =`.
    let cfg = dir.join("coordinator.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n").unwrap();
    let out = Command::new(RBK).args(["store", "selftest", "--config"]).arg(&cfg).env_remove("RBK_STORE_DIR").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("store selftest passed"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(dir.join("store").is_dir(), "the store dir is relative to the config file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plaintext_on_a_non_loopback_address_needs_insecure_plaintext() {
    let dir = scratch("plaintext");
    std::fs::write(dir.join("tokens.toml"), format!("[tenants]\n\"{TENANT}\" = \"team\"\n")).unwrap();
    let cfg = dir.join("coordinator.toml");
    std::fs::write(&cfg, "listen = \"0.0.0.0:0\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n").unwrap();
    let mut refused = Command::new(RBK).args(["coordinator", "--config"]).arg(&cfg).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    // A coordinator that starts prints its address; one that refuses exits.
    BufReader::new(refused.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = refused.kill();
    let out = refused.wait_with_output().unwrap();
    assert!(line.is_empty() && !out.status.success(), "a plaintext coordinator started on 0.0.0.0: {line:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plaintext gRPC on 0.0.0.0:0") && err.contains("--insecure-plaintext"), "{err}");

    let mut child = Command::new(RBK)
        .args(["coordinator", "--insecure-plaintext", "--config"])
        .arg(&cfg)
        .env("RBK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(line.starts_with("rbk coordinator listening on 0.0.0.0:"), "{line:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-plaintext: serving plain HTTP/2 on a non-loopback address"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
