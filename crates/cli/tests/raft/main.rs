//! A replicated coordinator as real processes: `rbk coordinator` ×3 or ×5 (and a
//! fourth) on 127.0.0.1 with `[raft]`, killed, stopped, wiped and
//! reconfigured while builds run.

mod blob_scope;
mod bounds;
mod failover;
mod five_nodes;
#[path = "../common/busybox_steps.rs"]
mod busybox_steps;
mod gc;
mod harness;
mod membership;
mod readopt;
mod snapshot;
#[path = "../common/ssh_agent.rs"]
mod ssh_agent;
mod tokens;
mod transport;
mod watch;
