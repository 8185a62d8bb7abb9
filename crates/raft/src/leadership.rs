//! Ties a [`Coordinator`] to Raft leadership: only the leader schedules.
//!
//! The coordinator is started on every node (its scheduler idle), gated by
//! [`RaftGate`] so followers redirect Build and Worker calls to the leader.
//! [`drive`] watches leadership: on becoming the serving leader it installs
//! the token file (replicated, so followers authenticate the same tokens)
//! and adopts the running builds; on losing it, the scheduler steps down.

use rbk_proto::leader::{LeaderGate, redirect};
use rbk_coordinator::{Coordinator, TokenFile};
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

/// Runs until the process ends.
pub async fn drive(raft: RaftState, coordinator: Coordinator, tokens: TokenFile) {
    let mut serving = raft.serving();
    loop {
        let now = *serving.borrow_and_update();
        if now {
            let started = std::time::Instant::now();
            // Tokens first: they also prove every earlier entry is applied.
            let mut installed = false;
            while raft.is_serving_leader() {
                match coordinator.auth.install(&tokens).await {
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
        if serving.changed().await.is_err() {
            return;
        }
    }
}
