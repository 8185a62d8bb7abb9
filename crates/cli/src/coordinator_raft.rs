//! How `rbk coordinator` holds its state: in memory (no `[raft]` section:
//! a single node, state lost on restart, the original behaviour) or
//! replicated through Raft (`[raft]`, see crate `rbk-raft`), where only the
//! leader schedules and followers redirect clients to it.

use std::sync::Arc;

use anyhow::Context;
use rbk_coordinator::token_reload::{install_changes, watch_token_file};
use rbk_coordinator::{Coordinator, CoordinatorConfig, MemoryState, Merger, TokenFile};
use rbk_store::Store;

/// What the web dashboard's Cluster page shows of a Raft node.
struct RaftCluster(rbk_raft::RaftState);

impl rbk_dashboard::ClusterView for RaftCluster {
    fn status(&self) -> rbk_dashboard::ClusterStatus {
        // Replication lag is the leader's knowledge (raft-rs `Progress`).
        let replication = self.0.replication().unwrap_or_default();
        rbk_dashboard::ClusterStatus {
            node_id: self.0.id(),
            leader_id: self.0.leader().0,
            term: self.0.term(),
            applied_index: self.0.applied_index(),
            last_index: replication.last_index,
            commit_index: replication.commit_index,
            members: self
                .0
                .members()
                .into_iter()
                .map(|(id, addr, voter)| rbk_dashboard::MemberStatus {
                    id,
                    raft: addr.raft,
                    api: addr.api,
                    voter,
                    matched: replication.matched.get(&id).copied(),
                    lag: replication.lag(id),
                })
                .collect(),
        }
    }
}

/// Starts the coordinator on the state its config asks for, and what the
/// dashboard can show of replication (none without `[raft]`). `tokens`:
/// the token file as read at start; it is re-read on SIGHUP and every
/// `token_reload_ms` (see `rbk_coordinator::token_reload`).
pub async fn start(
    config: &CoordinatorConfig,
    store: Arc<dyn Store>,
    merger: Arc<dyn Merger>,
    tokens: &TokenFile,
) -> anyhow::Result<(Coordinator, Option<Arc<dyn rbk_dashboard::ClusterView>>)> {
    let files = watch_token_file(config.token_file.clone(), tokens.clone(), config.token_reload());
    let Some(raft_config) = &config.raft else {
        let coordinator = Coordinator::start(Arc::new(MemoryState::new()), store, merger, tokens, config.scheduler_config()).await?;
        install_changes(coordinator.auth.clone(), files);
        return Ok((coordinator, None));
    };
    let raft = rbk_raft::RaftState::start(raft_config).await.with_context(|| format!("starting raft node {}", raft_config.node_id))?;
    println!("rbk raft node {} listening on {}", raft_config.node_id, raft_config.listen);
    // Tokens are installed by whichever node leads (a follower cannot write).
    let coordinator = Coordinator::new(Arc::new(raft.clone()), store, merger, config.scheduler_config())
        .with_gate(Arc::new(rbk_raft::leadership::RaftGate(raft.clone())));
    tokio::spawn(rbk_raft::leadership::drive(raft.clone(), coordinator.clone(), files));
    Ok((coordinator, Some(Arc::new(RaftCluster(raft)))))
}
