//! rbk's gRPC API. The `.proto` files under `proto/` are the source of
//! truth; this crate generates tonic code from them and holds the few
//! conventions on top of the messages that both ends must agree on:
//! [`chunks`] (how blob bytes are cut into messages), [`leader`] (the
//! "not the leader, ask X" redirect), [`replay`] (what a build's event
//! stream already said), [`commit`] (how a cache commit answers its
//! grant) and [`version`] (which rbk versions may talk to each other).

pub mod chunks;
pub mod commit;
pub mod leader;
pub mod replay;
pub mod version;

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

/// The farm pulls base images and pushes results (`proto/images.proto`).
pub mod images {
    tonic::include_proto!("rbk.images.v1");

    impl std::fmt::Debug for RegistryAuth {
        // The registry and user only: never a password or token.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RegistryAuth").field("registry", &self.registry).field("username", &self.username).finish_non_exhaustive()
        }
    }
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

/// Build history for `rbk builds inspect|logs` (`proto/history.proto`).
pub mod history {
    tonic::include_proto!("rbk.history.v1");
}
