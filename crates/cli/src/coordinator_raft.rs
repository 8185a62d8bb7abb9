//! How `rbk coordinator` holds its state: in memory (no `[raft]` section:
//! a single node, state lost on restart, the original behaviour) or
//! replicated through Raft (`[raft]`, see crate `rbk-raft`), where only the
//! leader schedules and followers redirect clients to it.

use std::sync::Arc;

use anyhow::Context;
use rbk_coordinator::{Coordinator, CoordinatorConfig, MemoryState, Merger, TokenFile};
use rbk_store::Store;

/// Starts the coordinator on the state its config asks for.
pub async fn start(config: &CoordinatorConfig, store: Arc<dyn Store>, merger: Arc<dyn Merger>, tokens: &TokenFile) -> anyhow::Result<Coordinator> {
    let Some(raft_config) = &config.raft else {
        return Ok(Coordinator::start(Arc::new(MemoryState::new()), store, merger, tokens, config.scheduler_config()).await?);
    };
    let raft = rbk_raft::RaftState::start(raft_config).await.with_context(|| format!("starting raft node {}", raft_config.node_id))?;
    println!("rbk raft node {} listening on {}", raft_config.node_id, raft_config.listen);
    // Tokens are installed by whichever node leads (a follower cannot write).
    let coordinator = Coordinator::start(Arc::new(raft.clone()), store, merger, &TokenFile::default(), config.scheduler_config())
        .await?
        .with_gate(Arc::new(rbk_raft::leadership::RaftGate(raft.clone())));
    tokio::spawn(rbk_raft::leadership::drive(raft, coordinator.clone(), tokens.clone()));
    Ok(coordinator)
}
