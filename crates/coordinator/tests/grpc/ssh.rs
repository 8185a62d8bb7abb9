//! SSH agent forwarding through the real `SshRelay` service: who may open a
//! forward, and bytes relayed between a worker's connection and the
//! build's client.

use rbk_proto::ssh::ssh_relay_client::SshRelayClient;
use rbk_proto::ssh::{self as ps, agent_down, agent_up, forward_frame};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::harness::*;

/// A client serving `ids` to `build_id` (its `Agent` stream).
struct AgentClient {
    tx: mpsc::Sender<ps::AgentUp>,
    down: Streaming<ps::AgentDown>,
}

async fn serve_agents(farm: &Farm, token: &str, build_id: &str, ids: &[&str]) -> Result<AgentClient, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    let hello = ps::AgentHello { build_id: build_id.into(), ssh_ids: ids.iter().map(|s| s.to_string()).collect() };
    tx.send(ps::AgentUp { frame: Some(agent_up::Frame::Hello(hello)) }).await.unwrap();
    let down = SshRelayClient::new(farm.channel().await).agent(bearer(ReceiverStream::new(rx), token)).await?.into_inner();
    Ok(AgentClient { tx, down })
}

/// A worker's connection: `Forward` opened for (worker, assignment, id).
struct Forward {
    tx: mpsc::Sender<ps::ForwardFrame>,
    down: Streaming<ps::ForwardFrame>,
}

async fn forward(farm: &Farm, worker_id: &str, assignment_id: &str, ssh_id: &str) -> Result<Forward, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    let open = ps::ForwardOpen { worker_id: worker_id.into(), assignment_id: assignment_id.into(), ssh_id: ssh_id.into() };
    tx.send(ps::ForwardFrame { frame: Some(forward_frame::Frame::Open(open)) }).await.unwrap();
    let down = SshRelayClient::new(farm.channel().await).forward(bearer(ReceiverStream::new(rx), WORKER)).await?.into_inner();
    Ok(Forward { tx, down })
}

fn bytes(data: &[u8], eof: bool) -> ps::ConnData {
    ps::ConnData { data: data.to_vec(), eof, ..Default::default() }
}

#[tokio::test]
async fn a_forward_is_paired_with_the_builds_client_and_bytes_flow_both_ways() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let build = farm.client(TENANT_A).await.submit(vec![step("s", "k-s", &[])]).await.unwrap();
    let a = w.assignment().await;
    let mut client = serve_agents(&farm, TENANT_A, &build.build_id, &["default"]).await.unwrap();

    let mut f = forward(&farm, "w1", &a.assignment_id, "default").await.unwrap();
    let conn = match timeout(WAIT, client.down.message()).await.unwrap().unwrap().unwrap().frame {
        Some(agent_down::Frame::Connect(c)) => {
            assert_eq!(c.ssh_id, "default");
            c.conn
        }
        other => panic!("expected connect, got {other:?}"),
    };
    f.tx.send(ps::ForwardFrame { frame: Some(forward_frame::Frame::Data(bytes(b"request", false))) }).await.unwrap();
    match timeout(WAIT, client.down.message()).await.unwrap().unwrap().unwrap().frame {
        Some(agent_down::Frame::Data(d)) => assert_eq!((d.conn, d.data.as_slice(), d.eof), (conn, &b"request"[..], false)),
        other => panic!("expected data, got {other:?}"),
    }
    let answer = ps::ConnData { conn, ..bytes(b"answer", true) };
    client.tx.send(ps::AgentUp { frame: Some(agent_up::Frame::Data(answer)) }).await.unwrap();
    match timeout(WAIT, f.down.message()).await.unwrap().unwrap().unwrap().frame {
        Some(forward_frame::Frame::Data(d)) => assert_eq!((d.data.as_slice(), d.eof), (&b"answer"[..], true)),
        other => panic!("expected data, got {other:?}"),
    }
    assert!(timeout(WAIT, f.down.message()).await.unwrap().unwrap().is_none(), "the connection ends after both eofs");
}

#[tokio::test]
async fn a_worker_cannot_forward_for_an_assignment_it_does_not_run() {
    let farm = farm().await;
    let mut w1 = farm.worker("w1", 1).await;
    let _w2 = farm.worker("w2", 1).await;
    let build = farm.client(TENANT_A).await.submit(vec![step("s", "k-s", &[])]).await.unwrap();
    // Ties go to the smallest worker id: w1 runs the step, w2 does not.
    let a = w1.assignment().await;
    let (owner, other) = ("w1", "w2");
    let _client = serve_agents(&farm, TENANT_A, &build.build_id, &["default"]).await.unwrap();

    let e = forward(&farm, other, &a.assignment_id, "default").await.err().expect("another worker's forward is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(&a.assignment_id) && e.message().contains(other), "{}", e.message());
    let e = forward(&farm, owner, "a-made-up-assignment", "default").await.err().expect("an unknown assignment is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = forward(&farm, owner, &a.assignment_id, "github").await.err().expect("an id the client does not serve is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("\"github\""), "{}", e.message());
    assert!(forward(&farm, owner, &a.assignment_id, "default").await.is_ok(), "the owner's forward for a served id is accepted");
}

#[tokio::test]
async fn agents_cannot_be_served_to_a_finished_build() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut build = farm.client(TENANT_A).await.submit(vec![step("s", "k-s", &[])]).await.unwrap();
    let a = w.assignment().await;
    w.succeed(&a, vec![]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");
    let e = serve_agents(&farm, TENANT_A, &build.build_id, &["default"]).await.err().expect("a finished build takes no agents");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = forward(&farm, "w1", &a.assignment_id, "default").await.err().expect("a finished step's forward is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn only_the_builds_tenant_can_serve_agents_to_it() {
    let farm = farm().await;
    let _w = farm.worker("w1", 1).await;
    let build = farm.client(TENANT_A).await.submit(vec![step("s", "k-s", &[])]).await.unwrap();
    let e = serve_agents(&farm, TENANT_B, &build.build_id, &["default"]).await.err().expect("another tenant is refused");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = serve_agents(&farm, WORKER, &build.build_id, &["default"]).await.err().expect("a worker token is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}
