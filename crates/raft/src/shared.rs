//! What the Ready loop's thread shares with everyone else: the state
//! readable from any thread ([`Shared`]) and the messages that reach the
//! loop ([`Input`]). The node (which owns the loop) and the transport
//! (which feeds it peers' messages and membership requests) both use them,
//! so they live below both.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raft::eraftpb::Message;
use rbk_coordinator::raft_config::PeerAddress;
use rbk_coordinator::state::{Command, Outcome, StateError, StateMachine};
use tokio::sync::{oneshot, watch};

/// A membership change as requested.
#[derive(Debug, Clone)]
pub enum MemberChange {
    Add { id: u64, addr: PeerAddress },
    Remove { id: u64 },
}

impl MemberChange {
    /// The member the change is about.
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::Add { id, .. } | MemberChange::Remove { id } => *id,
        }
    }
}

/// Why a membership change did not happen, naming the member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberChangeError {
    #[error("not the leader (change of member {member})")]
    NotLeader { member: u64 },
    #[error("another membership change is in progress (change of member {member})")]
    InProgress { member: u64 },
    #[error("raft refused the membership change of member {member}: {message}")]
    Refused { member: u64, message: String },
    #[error("lost leadership before the change of member {member} committed")]
    LostLeadership { member: u64 },
    #[error("the raft node has stopped")]
    Stopped,
}

pub(crate) enum Input {
    Propose { id: u64, cmd: Command, reply: oneshot::Sender<Result<Outcome, StateError>> },
    ChangeMembers { change: MemberChange, reply: oneshot::Sender<Result<(), MemberChangeError>> },
    Message(Box<Message>),
    /// Ends the Ready loop (tests, benchmarks; a process just exits).
    Stop,
}

/// How far each member's log matches the leader's, as the leader sees it
/// (raft-rs's `Progress`): the web dashboard's replication lag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// The leader's last log index and commit index.
    pub last_index: u64,
    pub commit_index: u64,
    /// Member id → the highest index known to match the leader's log.
    pub matched: BTreeMap<u64, u64>,
}

impl Replication {
    /// Entries `member` lacks of the leader's log (`None`: not tracked).
    pub fn lag(&self, member: u64) -> Option<u64> {
        self.matched.get(&member).map(|m| self.last_index.saturating_sub(*m))
    }
}

/// State readable from any thread.
pub struct Shared {
    pub id: u64,
    pub machine: RwLock<StateMachine>,
    pub peers: RwLock<BTreeMap<u64, PeerAddress>>,
    pub leader_id: AtomicU64,
    pub term: AtomicU64,
    pub applied: AtomicU64,
    /// Leader AND has applied everything committed before its term (its
    /// first own entry): only then may it serve reads and schedule.
    pub serving: AtomicBool,
    /// Flips with `serving`, for the scheduler's start/stop.
    pub serving_tx: watch::Sender<bool>,
    pub voters: RwLock<Vec<u64>>,
    /// The leader's view of its followers (refreshed every tick; `None`
    /// on a follower, which does not know it).
    pub replication: RwLock<Option<Replication>>,
}

impl Shared {
    pub fn leader_api(&self) -> Option<String> {
        let leader = self.leader_id.load(Ordering::Acquire);
        (leader != 0).then(|| self.peers.read().unwrap_or_else(|e| e.into_inner()).get(&leader).map(|p| p.api.clone())).flatten()
    }
    pub fn leader_raft(&self) -> Option<String> {
        let leader = self.leader_id.load(Ordering::Acquire);
        (leader != 0).then(|| self.peers.read().unwrap_or_else(|e| e.into_inner()).get(&leader).map(|p| p.raft.clone())).flatten()
    }
}
