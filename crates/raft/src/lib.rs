//! A highly available coordinator: [`RaftState`] implements
//! `rbk_coordinator::CoordinatorState` by replicating every `Command`
//! through raft-rs on 1, 3 or 5 nodes.
//!
//! - [`storage`]: the durable log, hard state, membership and snapshots;
//! - [`node`]: the Ready loop on its own thread; [`shared`]: what it
//!   shares with other threads (readable state, its inbox);
//! - [`transport`]: raft messages over tonic streams, membership RPCs;
//!   [`peer_tls`]: the optional mutual TLS between peers;
//! - [`leadership`]: starts the scheduler on the leader, stops it elsewhere,
//!   and the gate that redirects clients of followers to the leader;
//! - [`backup`]: the state machine saved to a file while the group runs,
//!   and restored into a new group.
//!
//! Writes (`apply`) are proposed on the leader and answered once committed
//! and applied on this node; followers answer `StateError::NotLeader` with
//! the leader's URL. Reads (`read`) run on this node's state machine; the
//! correctness-deciding ones (action cache, cache heads) happen only in the
//! leader's scheduler, which only runs while this node holds the Raft leader
//! lease (check_quorum) and has applied its own first entry of the term —
//! so they see every committed write (leader-lease linearizability).

pub mod backup;
pub mod leadership;
pub mod node;
pub mod peer_tls;
mod segments;
mod snapshot_format;
pub mod shared;
pub mod storage;
mod storage_error;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rbk_coordinator::raft_config::{PeerAddress, RaftConfig};
use rbk_coordinator::state::{Command, CoordinatorState, Outcome, StateError, StateMachine};
use rbk_proto::raft::raft_server::RaftServer;
use tokio::sync::{oneshot, watch};

pub use shared::{MemberChange, MemberChangeError, Replication};
use node::{Node, NodeOptions};
use shared::{Input, Shared};
use storage::DiskStorage;
use transport::{Peers, RaftService};

/// How long `apply` waits for its command to commit before giving up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("raft data {dir}: snapshot: {message}")]
    Snapshot { dir: String, message: String },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft secret_file {path}: {message}")]
    Secret { path: String, message: String },
    #[error("raft.tls {path}: {message}")]
    Tls { path: String, message: String },
    #[error("raft listen {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// The replicated coordinator state. Cheap to clone.
#[derive(Clone)]
pub struct RaftState {
    shared: Arc<Shared>,
    inbox: std::sync::mpsc::Sender<Input>,
    next_id: Arc<AtomicU64>,
    server: Arc<tokio::task::AbortHandle>,
}

impl RaftState {
    /// Opens the data dir, starts the Ready loop thread and serves the raft
    /// port; returns once the port is bound (not once a leader is known).
    pub async fn start(config: &RaftConfig) -> Result<Self, RaftError> {
        // `RaftConfig::resolve` refuses a config without one.
        let path = config
            .secret_file
            .as_ref()
            .ok_or_else(|| RaftError::Secret { path: "(none)".into(), message: "raft.secret_file is required".into() })?;
        let text =
            std::fs::read_to_string(path).map_err(|e| RaftError::Secret { path: path.display().to_string(), message: e.to_string() })?;
        let t = text.trim();
        if t.len() < 16 {
            return Err(RaftError::Secret { path: path.display().to_string(), message: "shorter than 16 characters".into() });
        }
        let secret: Option<Arc<str>> = Some(t.into());
        let voters: Vec<u64> = if config.join { vec![] } else { config.peers().keys().copied().collect() };
        let (storage, mut recovered) = DiskStorage::open(&config.data_dir, &voters)?;
        if !recovered.existed && !config.join {
            let data = snapshot_format::encode_snapshot(&StateMachine::default(), config.peers())
                .map_err(|message| RaftError::Snapshot { dir: config.data_dir.display().to_string(), message })?;
            storage.bootstrap(&voters, data.clone())?;
            recovered.snapshot = Some((1, data));
        }
        let mut peers: BTreeMap<u64, PeerAddress> = config.peers().clone();
        let mut machine = StateMachine::default();
        let mut applied = 0;
        if let Some((index, data)) = &recovered.snapshot {
            let (m, p) = snapshot_format::restore(data)
                .map_err(|message| RaftError::Snapshot { dir: config.data_dir.display().to_string(), message })?;
            machine = m;
            // The replicated table wins; the config fills in the rest.
            for (id, addr) in p {
                peers.insert(id, addr);
            }
            applied = *index;
        }
        let conf_voters = raft::Storage::initial_state(&storage)?.conf_state.voters;
        let (serving_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: config.node_id,
            machine: RwLock::new(machine),
            peers: RwLock::new(peers),
            leader_id: AtomicU64::new(0),
            term: AtomicU64::new(0),
            applied: AtomicU64::new(applied),
            serving: AtomicBool::new(false),
            serving_tx,
            voters: RwLock::new(conf_voters),
            replication: RwLock::new(None),
        });
        let auth = secret.as_ref().map(|s| format!("Bearer {s}").parse().expect("a trimmed secret file is a valid header"));
        let tls = config.tls.as_ref().map(peer_tls::PeerTls::load).transpose()?;
        let peers = Peers::new(shared.clone(), tokio::runtime::Handle::current(), auth, tls.as_ref().map(|t| t.client.clone()));
        let opts = NodeOptions {
            tick: Duration::from_millis(config.tick_ms),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            snapshot_entries: config.snapshot_entries,
        };
        let node = Node::new(storage, applied, shared.clone(), peers, opts)?;
        let (inbox, rx) = std::sync::mpsc::channel();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| RaftError::Listen { addr: config.listen.to_string(), source })?;
        std::thread::Builder::new()
            .name(format!("raft-{}", config.node_id))
            .spawn(move || node.run(rx))
            .map_err(|source| RaftError::Listen { addr: "raft thread".into(), source })?;
        let service = RaftServer::new(RaftService { shared: shared.clone(), inbox: inbox.clone() })
            .max_decoding_message_size(transport::MAX_MESSAGE);
        let service = tonic::service::interceptor::InterceptedService::new(service, transport::secret_interceptor(secret));
        let node_id = config.node_id;
        let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
        if let Some(t) = &tls {
            builder = builder
                .tls_config(t.server.clone())
                .map_err(|e| RaftError::Tls { path: config.tls.as_ref().map(|t| t.cert.display().to_string()).unwrap_or_default(), message: e.to_string() })?;
        }
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = builder.add_service(service).serve_with_incoming(incoming).await {
                tracing::error!(node = node_id, "raft port stopped serving: {e}");
            }
        });
        Ok(Self { shared, inbox, next_id: Arc::new(AtomicU64::new(1)), server: Arc::new(server.abort_handle()) })
    }

    /// Stops the Ready loop and the raft port (a process simply exits;
    /// tests and benchmarks reuse the data dir or the machine).
    pub fn stop(&self) {
        self.server.abort();
        let _ = self.inbox.send(Input::Stop);
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether this node is the leader and may serve (see the crate docs).
    pub fn is_serving_leader(&self) -> bool {
        self.shared.serving.load(Ordering::Acquire)
    }

    /// Flips to `true` when this node becomes a serving leader and back.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.shared.serving_tx.subscribe()
    }

    /// The leader's id (0: unknown) and client URL.
    pub fn leader(&self) -> (u64, Option<String>) {
        (self.shared.leader_id.load(Ordering::Acquire), self.shared.leader_api())
    }

    /// Index of the last entry applied on this node.
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// The current term as this node knows it.
    pub fn term(&self) -> u64 {
        self.shared.term.load(Ordering::Acquire)
    }

    /// The members this node knows, by id: their raft address and client
    /// URL, and whether each votes (the web dashboard's Cluster page).
    pub fn members(&self) -> Vec<(u64, rbk_coordinator::raft_config::PeerAddress, bool)> {
        let voters = self.shared.voters.read().unwrap_or_else(|e| e.into_inner()).clone();
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.iter().map(|(id, p)| (*id, p.clone(), voters.contains(id))).collect()
    }

    /// How far each member's log matches this node's, when it leads
    /// (`None` on a follower: only the leader tracks it).
    pub fn replication(&self) -> Option<shared::Replication> {
        self.shared.replication.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the leader (this node) to add or remove a voter.
    pub async fn change_members(&self, change: MemberChange) -> Result<(), MemberChangeError> {
        let (reply, rx) = oneshot::channel();
        self.inbox.send(Input::ChangeMembers { change, reply }).map_err(|_| MemberChangeError::Stopped)?;
        rx.await.map_err(|_| MemberChangeError::Stopped)?
    }
}

#[async_trait::async_trait]
impl CoordinatorState for RaftState {
    async fn apply(&self, cmd: Command) -> Result<Outcome, StateError> {
        let (reply, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.inbox.send(Input::Propose { id, cmd, reply }).map_err(|_| StateError::Unavailable("the raft node has stopped".into()))?;
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StateError::Unavailable("the raft node has stopped".into())),
            Err(_) => Err(StateError::Unavailable(format!("the command did not commit within {COMMIT_TIMEOUT:?} (no quorum?)"))),
        }
    }

    fn read(&self, f: &mut dyn FnMut(&StateMachine)) {
        f(&self.shared.machine.read().unwrap_or_else(|e| e.into_inner()))
    }
}
