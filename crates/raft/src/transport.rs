//! Peer transport: raft-rs messages (prost 0.11) as bytes inside our tonic
//! 0.14 `Raft.Send` client streams, one per peer, plus the membership RPCs.
//!
//! Sending never blocks the Ready loop: each peer has a bounded queue and a
//! task that (re)connects and streams it; when the queue is full or the peer
//! is down, messages are dropped — Raft retransmits what matters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost011::Message as _;
use raft::eraftpb::Message;
use rbk_coordinator::raft_config::PeerAddress;
use rbk_proto::raft::raft_client::RaftClient;
use rbk_proto::raft::raft_server::Raft;
use rbk_proto::raft::{self as pr};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::shared::{Input, MemberChange, Shared};

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Snapshots travel in one message; allow large ones.
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;
/// Metadata naming the leader's raft address on a refused membership change.
pub const RAFT_LEADER_METADATA: &str = "rbk-raft-leader";

/// A peer's raft address and the queue its pump task drains.
type Link = (String, mpsc::Sender<Vec<u8>>);

/// Outbound links to the other nodes.
#[derive(Clone)]
pub(crate) struct Peers {
    shared: Arc<Shared>,
    links: Arc<Mutex<HashMap<u64, Link>>>,
    runtime: tokio::runtime::Handle,
    auth: Option<MetadataValue<Ascii>>,
    /// Dial peers over mutual TLS (`[raft.tls]`).
    tls: Option<ClientTlsConfig>,
}

impl Peers {
    pub(crate) fn new(
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        auth: Option<MetadataValue<Ascii>>,
        tls: Option<ClientTlsConfig>,
    ) -> Self {
        Self { shared, links: Default::default(), runtime, auth, tls }
    }

    pub(crate) fn send(&self, m: Message) {
        let to = m.to;
        let Some(addr) = self.shared.peers.read().unwrap_or_else(|e| e.into_inner()).get(&to).map(|p| p.raft.clone()) else {
            tracing::debug!(to, "no address for raft peer; dropping a message");
            return;
        };
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let stale = links.get(&to).is_some_and(|(a, tx)| *a != addr || tx.is_closed());
        if stale {
            links.remove(&to);
        }
        let (_, tx) = links.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            self.runtime.spawn(pump(to, addr.clone(), rx, self.auth.clone(), self.tls.clone()));
            (addr, tx)
        });
        // Full: the peer is slow or down; Raft will resend.
        let _ = tx.try_send(m.encode_to_vec());
    }

    /// Stops sending to a removed member.
    pub(crate) fn forget(&self, id: u64) {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Streams one peer's queue, reconnecting whenever the stream breaks.
async fn pump(to: u64, addr: String, mut rx: mpsc::Receiver<Vec<u8>>, auth: Option<MetadataValue<Ascii>>, tls: Option<ClientTlsConfig>) {
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let Ok(mut endpoint) = Endpoint::from_shared(url.clone()) else {
        tracing::error!(to, "raft peer address {addr:?} is not host:port");
        return;
    };
    if let Some(tls) = tls {
        endpoint = match endpoint.tls_config(tls) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(to, "raft peer {addr}: TLS: {e}");
                return;
            }
        };
    }
    let endpoint = endpoint.connect_timeout(Duration::from_millis(500)).tcp_nodelay(true);
    while let Some(first) = rx.recv().await {
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to, "raft peer {addr} unreachable: {e}");
                // Drop what queued up meanwhile; it is stale by now.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (stream_tx, stream_rx) = mpsc::channel::<pr::RaftMessage>(QUEUE);
        let _ = stream_tx.try_send(pr::RaftMessage { message: first });
        let mut req = Request::new(ReceiverStream::new(stream_rx));
        if let Some(a) = &auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let mut client = RaftClient::new(channel).max_encoding_message_size(MAX_MESSAGE);
        let call = tokio::spawn(async move { client.send(req).await });
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => match stream_tx.try_send(pr::RaftMessage { message: m }) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    },
                    None => { call.abort(); return; }
                },
                _ = stream_tx.closed() => break,
            }
        }
        call.abort();
        tracing::debug!(to, "raft stream to {addr} ended; reconnecting");
    }
}

/// The inbound side and the membership RPCs.
pub struct RaftService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbox: std::sync::mpsc::Sender<Input>,
}

fn members_reply(shared: &Shared) -> pr::MembersReply {
    let leader = shared.leader_id.load(Ordering::Acquire);
    let voters = shared.voters.read().unwrap_or_else(|e| e.into_inner()).clone();
    let peers = shared.peers.read().unwrap_or_else(|e| e.into_inner());
    pr::MembersReply {
        members: voters
            .iter()
            .map(|id| {
                let p = peers.get(id);
                pr::Member {
                    id: *id,
                    raft: p.map(|p| p.raft.clone()).unwrap_or_default(),
                    api: p.map(|p| p.api.clone()).unwrap_or_default(),
                    leader: *id == leader,
                }
            })
            .collect(),
        leader_id: leader,
        term: shared.term.load(Ordering::Acquire),
        applied_index: shared.applied.load(Ordering::Acquire),
    }
}

/// The size of the chunks a backup is streamed in.
const BACKUP_CHUNK: usize = 1 << 20;

/// This node is not the serving leader: UNAVAILABLE, naming the leader's
/// raft address when known (clients retry there).
fn not_leader(shared: &Shared) -> Status {
    let mut s = Status::unavailable("this node is not the raft leader");
    if let Some(v) = shared.leader_raft().and_then(|l| l.parse().ok()) {
        s.metadata_mut().insert(RAFT_LEADER_METADATA, v);
    }
    s
}

#[tonic::async_trait]
impl Raft for RaftService {
    type SaveSnapshotStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pr::SnapshotChunk, Status>> + Send>>;

    async fn send(&self, req: Request<Streaming<pr::RaftMessage>>) -> Result<Response<pr::SendAck>, Status> {
        let mut inbound = req.into_inner();
        while let Some(m) = inbound.next().await {
            let m = m?;
            let msg = Message::decode(&m.message[..]).map_err(|e| Status::invalid_argument(format!("raft message: {e}")))?;
            if self.inbox.send(Input::Message(Box::new(msg))).is_err() {
                return Err(Status::unavailable("this raft node has stopped"));
            }
        }
        Ok(Response::new(pr::SendAck {}))
    }

    async fn members(&self, _: Request<pr::MembersRequest>) -> Result<Response<pr::MembersReply>, Status> {
        Ok(Response::new(members_reply(&self.shared)))
    }

    async fn change_members(&self, req: Request<pr::ChangeMembersRequest>) -> Result<Response<pr::MembersReply>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("member id must be > 0"));
        }
        let change = match r.op.as_str() {
            "add" => {
                if r.raft.is_empty() || !(r.api.starts_with("http://") || r.api.starts_with("https://")) {
                    return Err(Status::invalid_argument("add: raft must be host:port and api an http(s):// URL"));
                }
                MemberChange::Add { id: r.id, addr: PeerAddress { raft: r.raft, api: r.api } }
            }
            "remove" => MemberChange::Remove { id: r.id },
            other => return Err(Status::invalid_argument(format!("op {other:?}: expected add or remove"))),
        };
        if !self.shared.serving.load(Ordering::Acquire) {
            return Err(not_leader(&self.shared));
        }
        let (reply, rx) = oneshot::channel();
        self.inbox.send(Input::ChangeMembers { change, reply }).map_err(|_| Status::unavailable("this raft node has stopped"))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(()))) => Ok(Response::new(members_reply(&self.shared))),
            Ok(Ok(Err(e))) => Err(Status::failed_precondition(e.to_string())),
            Ok(Err(_)) => Err(Status::unavailable("this raft node has stopped")),
            Err(_) => Err(Status::deadline_exceeded("the membership change did not commit within 10 s")),
        }
    }

    async fn save_snapshot(&self, _: Request<pr::SaveSnapshotRequest>) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        // The leader: a follower's state may lag what clients were told.
        if !self.shared.serving.load(Ordering::Acquire) {
            return Err(not_leader(&self.shared));
        }
        let bytes = crate::backup::save(&self.shared).map_err(|e| Status::internal(e.to_string()))?;
        let chunks: Vec<Result<pr::SnapshotChunk, Status>> = bytes.chunks(BACKUP_CHUNK).map(|c| Ok(pr::SnapshotChunk { data: c.to_vec() })).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

/// Checks the cluster secret on every Raft RPC.
pub(crate) fn secret_interceptor(
    secret: Option<Arc<str>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let Some(secret) = &secret else { return Ok(req) };
        let ok = req
            .metadata()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), secret.as_bytes()));
        if ok { Ok(req) } else { Err(Status::unauthenticated("raft port: missing or wrong cluster secret")) }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
