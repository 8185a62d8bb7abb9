//! The worker the load benchmarks (`tenants`, `raft --soak-kills`) run
//! against the coordinator: one Worker.Session over the real protocol
//! that finishes every assigned step after 20 ms, committing a snapshot
//! per cache mount, so what is measured is the coordinator, not the steps.

use std::time::Duration;

use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::{self as pw, coordinator_message::Msg as Down, worker_message::Msg as Up};
use tokio::sync::mpsc;

/// `msg` with `token` as its bearer token.
pub(crate) fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    r
}

/// One session on `channel` as `worker_id` (8 steps at a time), a
/// heartbeat every `heartbeat`; returns when the coordinator ends it.
pub(crate) async fn session(channel: tonic::transport::Channel, worker_id: String, token: &str, heartbeat: Duration) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let register = pw::Register { worker_id, resources: Some(pw::Resources { cpus: 2, memory_bytes: 1 << 30, max_parallel: 8 }), ..Default::default() };
    tx.send(pw::WorkerMessage { msg: Some(Up::Register(register)) })?;
    let up = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut down = WorkerClient::new(channel).session(bearer(up, token)).await?.into_inner();
    let beat = tx.clone();
    let hb = tokio::spawn(async move {
        while beat.send(pw::WorkerMessage { msg: Some(Up::Heartbeat(pw::Heartbeat {})) }).is_ok() {
            tokio::time::sleep(heartbeat).await;
        }
    });
    while let Some(m) = down.message().await? {
        if let Some(Down::Assign(a)) = m.msg {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let commits = a
                    .mounts
                    .iter()
                    .map(|g| g.commit(rbk_store::Digest::of(a.key.as_bytes()).to_string(), 1))
                    .collect();
                let result = pw::StepResult { assignment_id: a.assignment_id, ok: true, config: b"{}".to_vec(), commits, ..Default::default() };
                let _ = tx.send(pw::WorkerMessage { msg: Some(Up::Result(result)) });
            });
        }
    }
    hb.abort();
    Ok(())
}
