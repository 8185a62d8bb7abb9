//! rbk's gRPC API. The `.proto` files under `proto/` are the source of
//! truth; this crate generates tonic code from them and holds the few
//! conventions on top of the messages that both ends must agree on:
//! [`chunks`] (how blob bytes are cut into messages), [`leader`] (the
//! "not the leader, ask X" redirect), [`replay`] (what a build's event
//! stream already said) and [`commit`] (how a cache commit answers its
//! grant).

pub mod chunks;
pub mod commit;
pub mod leader;
pub mod replay;

pub mod content {
    tonic::include_proto!("rbk.content.v1");
}

pub mod admin {
    tonic::include_proto!("rbk.admin.v1");
}

pub mod build {
    tonic::include_proto!("rbk.build.v1");
}

pub mod worker {
    tonic::include_proto!("rbk.worker.v1");
}

/// Coordinator-to-coordinator Raft traffic (crate `rbk-raft`).
pub mod raft {
    tonic::include_proto!("rbk.raft.v1");
}

/// SSH agent forwarding between `rbk submit` and workers, through the
/// coordinator (`proto/ssh.proto`).
pub mod ssh {
    tonic::include_proto!("rbk.ssh.v1");
}
