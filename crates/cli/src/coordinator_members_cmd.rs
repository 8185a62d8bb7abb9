//! `rbk coordinator members list|add|remove`: the membership of a
//! replicated coordinator, changed through Raft configuration changes.
//! Talks to any node's raft port; changes are forwarded to the leader's.

use std::time::Duration;

use anyhow::bail;
use rbk_proto::raft::{ChangeMembersRequest, MembersReply, MembersRequest};
use rbk_raft::transport::RAFT_LEADER_METADATA;
use crate::raft_port::{Target, request};

#[derive(clap::Subcommand)]
pub enum CoordinatorCommand {
    /// Lists, adds or removes the voters of a replicated coordinator.
    Members {
        #[command(subcommand)]
        op: MembersOp,
    },
    /// Backs up the replicated state (save) and starts a new group from a
    /// backup (restore).
    Snapshot {
        #[command(subcommand)]
        op: crate::coordinator_snapshot_cmd::SnapshotOp,
    },
}

#[derive(clap::Subcommand)]
pub enum MembersOp {
    /// Prints the voters, which one leads, the term and the applied index.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Adds a voter; start it first with `[raft] join = true`.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
        /// The new node's raft port (host:port).
        #[arg(long)]
        raft: String,
        /// The new node's client API URL.
        #[arg(long)]
        api: String,
    },
    /// Removes a voter.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
    },
}

fn print(reply: &MembersReply) {
    println!("term {}  applied index {}  leader {}", reply.term, reply.applied_index, reply.leader_id);
    println!("{:<6} {:<8} {:<24} API", "ID", "ROLE", "RAFT");
    for m in &reply.members {
        println!("{:<6} {:<8} {:<24} {}", m.id, if m.leader { "leader" } else { "follower" }, m.raft, m.api);
    }
}

pub async fn run(cmd: CoordinatorCommand) -> anyhow::Result<()> {
    let op = match cmd {
        CoordinatorCommand::Members { op } => op,
        CoordinatorCommand::Snapshot { op } => return crate::coordinator_snapshot_cmd::run(op).await,
    };
    let (target, change) = match op {
        MembersOp::List { target } => {
            let reply = target.client(&target.coordinator).await?.members(request(MembersRequest {}, &target.token)?).await?.into_inner();
            print(&reply);
            return Ok(());
        }
        MembersOp::Add { target, id, raft, api } => (target, ChangeMembersRequest { op: "add".into(), id, raft, api }),
        MembersOp::Remove { target, id } => (target, ChangeMembersRequest { op: "remove".into(), id, ..Default::default() }),
    };
    let mut url = target.coordinator.clone();
    for _ in 0..20 {
        match target.client(&url).await?.change_members(request(change.clone(), &target.token)?).await {
            Ok(reply) => {
                print(&reply.into_inner());
                return Ok(());
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                if let Some(leader) = s.metadata().get(RAFT_LEADER_METADATA).and_then(|v| v.to_str().ok()) {
                    url = target.url_of(leader);
                } else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            Err(s) => bail!("{} {} at {url}: {}", change.op, change.id, s.message()),
        }
    }
    bail!("no raft leader answered from {} (election in progress?)", target.coordinator)
}
