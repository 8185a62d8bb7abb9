//! The Raft node: one OS thread owns the raft-rs `RawNode`, the storage and
//! the state machine's writes, and runs the Ready loop (tick, step incoming
//! messages, propose, persist + fsync, send, apply). Everything else talks
//! to it through [`Input`]s and reads [`Shared`].
//!
//! A thread, not a task: the loop fsyncs, and blocking a tokio worker on
//! disk would stall the gRPC servers on the same runtime.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use rbk_coordinator::raft_config::PeerAddress;
use rbk_coordinator::state::{Command, Outcome, StateError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::shared::{Input, MemberChange, MemberChangeError, Shared};
use crate::storage::DiskStorage;
use crate::snapshot_format::{encode_snapshot, restore};
use crate::transport::Peers;

/// A proposal as it sits in the log: who proposed it (so that node can
/// answer its caller) and the command.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: u64,
    id: u64,
    cmd: Command,
}

pub(crate) struct NodeOptions {
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_entries: u64,
}

pub(crate) struct Node {
    raw: RawNode<DiskStorage>,
    shared: Arc<Shared>,
    peers: Peers,
    pending: HashMap<u64, oneshot::Sender<Result<Outcome, StateError>>>,
    /// The membership change waiting to commit, and the member it is about.
    pending_conf: Option<(u64, oneshot::Sender<Result<(), MemberChangeError>>)>,
    opts: NodeOptions,
    /// Index of this leader's first entry of its term (0: not leader).
    term_start: u64,
    /// A membership change was applied: the next snapshot must carry it (a
    /// new member ignores a snapshot whose membership lacks it).
    snapshot_now: bool,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    // Storage failing under Raft means this node can no longer promise
    // anything it acknowledged; stop rather than diverge.
    tracing::error!("raft {what}: {e}; stopping this coordinator");
    std::process::exit(70)
}

impl Node {
    pub(crate) fn new(
        storage: DiskStorage,
        applied: u64,
        shared: Arc<Shared>,
        peers: Peers,
        opts: NodeOptions,
    ) -> Result<Self, raft::Error> {
        let config = Config {
            id: shared.id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            // A leader that cannot reach a quorum steps down within an
            // election timeout, and followers that recently heard from a
            // leader refuse votes: together the leader lease our reads rely on.
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, storage, &logger())?;
        Ok(Self { raw, shared, peers, pending: HashMap::new(), pending_conf: None, opts, term_start: 0, snapshot_now: false })
    }

    pub(crate) fn run(mut self, inbox: Receiver<Input>) {
        self.campaign_if_sole_voter();
        let mut next_tick = Instant::now() + self.opts.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Input::Stop) => return,
                Ok(input) => {
                    self.handle(input);
                    // Batch whatever else is queued into the same Ready.
                    while let Ok(input) = inbox.try_recv() {
                        if matches!(input, Input::Stop) {
                            return;
                        }
                        self.handle(input);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                self.publish_replication();
                next_tick += self.opts.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.opts.tick;
                }
            }
            self.on_ready();
        }
    }

    /// A group whose only voter is this node elects it at once instead of
    /// after a randomized election timeout (100–200 ms at `rbk build`'s
    /// 10 ms tick, paid on every embedded build): its own vote is the
    /// quorum, nobody can be disrupted, and a campaign is exactly what the
    /// timer would start. raft-rs refuses it while a membership change
    /// awaits applying; the timer then campaigns as before.
    fn campaign_if_sole_voter(&mut self) {
        let sole = *self.shared.voters.read().unwrap_or_else(|e| e.into_inner()) == [self.shared.id];
        if !sole {
            return;
        }
        if let Err(e) = self.raw.campaign() {
            tracing::warn!("campaigning at start as the sole voter: {e}; waiting for the election timeout");
        }
        self.on_ready();
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { id, cmd, reply } => {
                if !self.is_leader() {
                    let _ = reply.send(Err(StateError::NotLeader { leader: self.shared.leader_api() }));
                    return;
                }
                let data = match serde_json::to_vec(&Envelope { node: self.shared.id, id, cmd }) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(StateError::Unavailable(format!("encoding the command: {e}"))));
                        return;
                    }
                };
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(StateError::Unavailable(format!("raft refused the proposal: {e}"))));
                    }
                }
            }
            Input::ChangeMembers { change, reply } => {
                let member = change.id();
                if !self.is_leader() {
                    let _ = reply.send(Err(MemberChangeError::NotLeader { member }));
                    return;
                }
                if self.pending_conf.is_some() {
                    let _ = reply.send(Err(MemberChangeError::InProgress { member }));
                    return;
                }
                let mut cc = ConfChange::default();
                match &change {
                    MemberChange::Add { id, addr } => {
                        cc.set_change_type(ConfChangeType::AddNode);
                        cc.node_id = *id;
                        cc.context = serde_json::to_vec(addr).expect("addresses serialise");
                    }
                    MemberChange::Remove { id } => {
                        cc.set_change_type(ConfChangeType::RemoveNode);
                        cc.node_id = *id;
                    }
                }
                match self.raw.propose_conf_change(vec![], cc) {
                    Ok(()) => self.pending_conf = Some((member, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(MemberChangeError::Refused { member, message: e.to_string() }));
                    }
                }
            }
            Input::Stop => {}
            Input::Message(mut m) => {
                // A node whose data was wiped rejoins with an empty log while
                // the leader still remembers it as up to date, and raft-rs
                // panics on a heartbeat committing beyond the log. The leader
                // only ever sends commit <= what matches, so clamping changes
                // nothing for an intact node; the wiped one then rejects the
                // next append and is sent a snapshot.
                if m.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat {
                    let last = self.raw.raft.raft_log.last_index();
                    m.commit = m.commit.min(last);
                }
                // Messages from unknown or removed peers are dropped by raft.
                let _ = self.raw.step(*m);
            }
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let is_snapshot = m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let to = m.to;
            self.peers.send(m);
            if is_snapshot {
                // One message carries it all; if it is lost or refused, the
                // follower's next rejection makes the leader send a new one.
                self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
                tracing::info!(to, "sent a snapshot");
            }
        }
    }

    fn on_ready(&mut self) {
        if !self.raw.has_ready() {
            return;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.shared.leader_id.store(ss.leader_id, Ordering::Release);
            if ss.raft_state == StateRole::Leader {
                self.term_start = self.raw.raft.raft_log.last_index();
                tracing::info!(term = self.raw.raft.term, "this node is the raft leader");
            } else {
                self.term_start = 0;
                self.fail_pending();
            }
        }
        self.shared.term.store(self.raw.raft.term, Ordering::Release);
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let index = snap.get_metadata().index;
            match restore(&snap.data) {
                Ok((machine, peers)) => {
                    *self.shared.machine.write().unwrap_or_else(|e| e.into_inner()) = machine;
                    *self.shared.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
                }
                Err(e) => fatal("decoding a snapshot from the leader", e),
            }
            *self.shared.voters.write().unwrap_or_else(|e| e.into_inner()) = snap.get_metadata().get_conf_state().voters.clone();
            if let Err(e) = self.raw.mut_store().apply_snapshot(snap) {
                fatal("installing a snapshot", e);
            }
            self.shared.applied.store(index, Ordering::Release);
            tracing::info!(index, "installed a snapshot from the leader");
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed);
        // Only new entries and a new term or vote must be durable before
        // the messages below go out; a commit index that moved alone need
        // not be (Raft's commit index is volatile, a restarted node learns
        // it again), so it rides along with the next fsync instead of
        // costing one of its own on every commit (etcd's MustSync rule).
        let before = self.raw.store().hard_state();
        let must_sync = !rd.entries().is_empty() || rd.hs().is_some_and(|hs| hs.term != before.term || hs.vote != before.vote);
        if !rd.entries().is_empty()
            && let Err(e) = self.raw.store().append(rd.entries())
        {
            fatal("appending to the log", e);
        }
        if let Some(hs) = rd.hs()
            && let Err(e) = self.raw.store().set_hard_state(hs)
        {
            fatal("writing the hard state", e);
        }
        if must_sync && let Err(e) = self.raw.store().sync() {
            fatal("fsync of the log", e);
        }
        self.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index()
            && let Err(e) = self.raw.store().set_commit(commit)
        {
            fatal("writing the commit index", e);
        }
        self.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed);
        self.raw.advance_apply();
        self.update_serving();
        self.maybe_compact();
        let (raft, metrics) = (&self.raw.raft, rbk_metrics::global());
        metrics.set_raft_term(raft.term);
        metrics.set_raft_leader(raft.leader_id, raft.state == StateRole::Leader);
        metrics.set_raft_commit_index(raft.raft_log.committed);
        metrics.set_raft_applied_index(raft.raft_log.applied);
    }

    /// What the leader knows of its followers' logs, for readers on other
    /// threads (the Cluster page).
    fn publish_replication(&self) {
        let raft = &self.raw.raft;
        let replication = (raft.state == StateRole::Leader).then(|| crate::shared::Replication {
            last_index: raft.raft_log.last_index(),
            commit_index: raft.raft_log.committed,
            matched: raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect(),
        });
        *self.shared.replication.write().unwrap_or_else(|e| e.into_inner()) = replication;
    }

    fn fail_pending(&mut self) {
        let leader = self.shared.leader_api();
        for (_, reply) in self.pending.drain() {
            // The entry may still commit under the new leader: the caller
            // learns "unknown outcome", as with any lost RPC.
            let _ = reply.send(Err(StateError::NotLeader { leader: leader.clone() }));
        }
        if let Some((member, reply)) = self.pending_conf.take() {
            let _ = reply.send(Err(MemberChangeError::LostLeadership { member }));
        }
    }

    fn update_serving(&mut self) {
        let serving =
            self.is_leader() && self.term_start > 0 && self.shared.applied.load(Ordering::Acquire) >= self.term_start;
        if self.shared.serving.swap(serving, Ordering::AcqRel) != serving {
            // `send_replace`, not `send`: `send` drops the value when no
            // receiver exists yet, and a node that leads before anyone
            // subscribes (the sole voter campaigns at once) would then look
            // not serving to every later subscriber.
            self.shared.serving_tx.send_replace(serving);
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for e in entries {
            let index = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => match serde_json::from_slice::<Envelope>(&e.data) {
                    Ok(env) => {
                        let r = self.shared.machine.write().unwrap_or_else(|e| e.into_inner()).apply(env.cmd);
                        if env.node == self.shared.id
                            && let Some(reply) = self.pending.remove(&env.id)
                        {
                            let _ = reply.send(r);
                        }
                    }
                    // Every node skips it the same way, so states agree.
                    Err(err) => tracing::error!(index, "skipping an undecodable log entry: {err}"),
                },
                EntryType::EntryConfChange => self.apply_conf_change(&e),
                EntryType::EntryConfChangeV2 => tracing::error!(index, "skipping a joint-consensus change (never proposed by rbk)"),
            }
            self.shared.applied.store(index, Ordering::Release);
        }
    }

    fn apply_conf_change(&mut self, e: &Entry) {
        let cc = match ConfChange::decode(&e.data[..]) {
            Ok(cc) => cc,
            Err(err) => fatal("decoding a membership change", err),
        };
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::error!("membership change refused by raft: {err}");
                if let Some((member, reply)) = self.pending_conf.take() {
                    let _ = reply.send(Err(MemberChangeError::Refused { member, message: err.to_string() }));
                }
                return;
            }
        };
        if let Err(err) = self.raw.store().set_conf_state(&cs) {
            fatal("writing the membership", err);
        }
        {
            let mut peers = self.shared.peers.write().unwrap_or_else(|e| e.into_inner());
            match cc.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Ok(addr) = serde_json::from_slice::<PeerAddress>(&cc.context) {
                        peers.insert(cc.node_id, addr);
                    }
                }
                ConfChangeType::RemoveNode => {
                    peers.remove(&cc.node_id);
                    self.peers.forget(cc.node_id);
                }
            }
        }
        *self.shared.voters.write().unwrap_or_else(|e| e.into_inner()) = cs.voters.clone();
        self.snapshot_now = true;
        tracing::info!(voters = ?cs.voters, "membership changed");
        if let Some((_, reply)) = self.pending_conf.take() {
            let _ = reply.send(Ok(()));
        }
    }

    fn maybe_compact(&mut self) {
        let applied = self.shared.applied.load(Ordering::Acquire);
        let store = self.raw.store();
        let due = applied >= store.snapshot_index() + self.opts.snapshot_entries;
        if !(due || self.snapshot_now && applied > store.snapshot_index()) {
            return;
        }
        self.snapshot_now = false;
        let data = {
            let machine = self.shared.machine.read().unwrap_or_else(|e| e.into_inner());
            let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
            encode_snapshot(&machine, &peers)
        };
        match data {
            Ok(data) => {
                let size = data.len();
                if let Err(e) = store.compact(applied, data) {
                    fatal("taking a snapshot", e);
                }
                tracing::info!(index = applied, bytes = size, "took a snapshot and compacted the log");
            }
            Err(e) => tracing::error!("encoding a snapshot: {e}"),
        }
    }
}
