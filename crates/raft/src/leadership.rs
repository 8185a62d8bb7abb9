//! Ties a [`Coordinator`] to Raft leadership: only the leader schedules.
//!
//! The coordinator is started on every node (its scheduler idle), gated by
//! [`RaftGate`] so followers redirect Build and Worker calls to the leader.
//! [`drive`] watches leadership: on becoming the serving leader it installs
//! the token file (replicated, so followers authenticate the same tokens),
//! again each time the file changes (revoking removed tokens), and adopts the running builds; on losing it, the scheduler steps down.

use rbk_proto::leader::{LeaderGate, redirect};
use std::sync::Arc;

use rbk_coordinator::{Coordinator, TokenFile};
use tokio::sync::watch;
use tonic::Status;

use crate::RaftState;

/// Followers answer with a redirect to the leader's client URL.
pub struct RaftGate(pub RaftState);

impl LeaderGate for RaftGate {
    fn check(&self) -> Result<(), Status> {
        if self.0.is_serving_leader() {
            return Ok(());
        }
        Err(redirect(self.0.leader().1.as_deref()))
    }
}

/// Runs until the process ends. `tokens` publishes the token file each
/// time it changes (`rbk_coordinator::token_reload`): the leader applies
/// it, so a token removed from the file is revoked on every node.
pub async fn drive(raft: RaftState, coordinator: Coordinator, mut tokens: watch::Receiver<Arc<TokenFile>>) {
    let mut serving = raft.serving();
    let mut file_open = true;
    loop {
        let now = *serving.borrow_and_update();
        if now {
            let started = std::time::Instant::now();
            // Tokens first: they also prove every earlier entry is applied.
            let mut installed = false;
            while raft.is_serving_leader() {
                let file = tokens.borrow_and_update().clone();
                match coordinator.auth.install(&file).await {
                    Ok(()) => {
                        installed = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("installing tokens as the new leader: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
            if installed {
                match coordinator.scheduler.adopt().await {
                    Ok(n) => tracing::info!(adopted = n, took_ms = started.elapsed().as_millis() as u64, "leading: scheduler started"),
                    Err(e) => tracing::error!("adopting builds: {e}"),
                }
            }
        } else {
            coordinator.scheduler.step_down();
        }
        loop {
            tokio::select! {
                changed = serving.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                changed = tokens.changed(), if file_open => {
                    if changed.is_err() {
                        file_open = false;
                        continue;
                    }
                    let file = tokens.borrow_and_update().clone();
                    if raft.is_serving_leader()
                        && let Err(e) = coordinator.auth.install(&file).await
                    {
                        tracing::error!("applying the changed token file: {e}");
                    }
                }
            }
        }
    }
}
