//! `rbk submit --ssh default` on a farm of real processes: the client's
//! ssh-agent answers a `RUN --mount=type=ssh` step on a worker, through the
//! coordinator's relay; the key never leaves the client.

use std::process::Command;

use rbk_testsupport::program;

use crate::harness::{Farm, RBK, TENANT};

#[path = "../common/ssh_agent.rs"]
mod ssh_agent;

#[tokio::test(flavor = "multi_thread")]
async fn submit_ssh_default_forwards_the_clients_agent_to_a_step_on_a_worker() {
    let agent = ssh_agent::TestAgent::start();
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), ctx.path().join("busybox")).unwrap();
    ssh_agent::stage_ssh_add(ctx.path());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY sshroot/ /\nRUN --mount=type=ssh,required=true ssh-add -l\n",
    )
    .unwrap();
    let out = Command::new(RBK)
        .args(["submit", "--coordinator", &farm.url, "--token", TENANT, "--progress=plain", "--ssh", "default", "--client-dir"])
        .arg(farm.dir.path().join("client"))
        .arg(ctx.path())
        .env("SSH_AUTH_SOCK", &agent.sock)
        .env_remove("RBK_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&agent.fingerprint) && stderr.contains("rbk-test-key"), "ssh-add -l on worker a lists the client's key:\n{stderr}");
    assert!(stderr.contains(" on a"), "{stderr}");
    // The private key never left the client: no line of it is anywhere in
    // the coordinator's or the worker's state, or in their logs.
    let pem = std::fs::read_to_string(&agent.key).unwrap();
    let line = pem.lines().nth(2).expect("an OpenSSH private key has body lines");
    let grep = Command::new("grep").args(["-rlF", line]).arg(farm.dir.path()).output().unwrap();
    assert!(grep.stdout.is_empty(), "the private key reached {}", String::from_utf8_lossy(&grep.stdout));
}
