//! How a replicated coordinator says "not me, ask the leader".
//!
//! Only the Raft leader schedules. A follower answers Build and Worker calls
//! with `UNAVAILABLE` and, when it knows the leader, the leader's client URL
//! in the [`LEADER_METADATA`] header ([`redirect`]). The server decides with
//! a [`LeaderGate`]; clients read the answer with [`leader_hint`] /
//! [`is_redirect`] (and follow it with `rbk_client::leader`). Both sides
//! live here so the convention has one definition.

use tonic::{Code, Status};

/// Decides whether this node may serve Build and Worker calls now.
pub trait LeaderGate: Send + Sync + 'static {
    /// `Ok` on the leader; [`redirect`] on a follower.
    fn check(&self) -> Result<(), Status>;
}

/// gRPC metadata key carrying the leader's client URL on a redirect.
pub const LEADER_METADATA: &str = "rbk-leader";

/// The status a follower answers with: UNAVAILABLE (so generic retry logic
/// treats it as transient) plus the leader's URL when known (none during an
/// election).
pub fn redirect(leader_url: Option<&str>) -> Status {
    let mut s = Status::unavailable(match leader_url {
        Some(u) => format!("this coordinator is not the leader; the leader is {u}"),
        None => "this coordinator is not the leader and no leader is known yet (election in progress)".to_owned(),
    });
    if let Some(v) = leader_url.and_then(|u| u.parse().ok()) {
        s.metadata_mut().insert(LEADER_METADATA, v);
    }
    s
}

/// The leader URL a redirect names, if `status` is one.
pub fn leader_hint(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    status.metadata().get(LEADER_METADATA).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether `status` says "not the leader" (with or without a hint).
pub fn is_redirect(status: &Status) -> bool {
    status.code() == Code::Unavailable && (leader_hint(status).is_some() || status.message().contains("not the leader"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_carries_the_leader_url() {
        let s = redirect(Some("http://127.0.0.1:7070"));
        assert_eq!(leader_hint(&s).as_deref(), Some("http://127.0.0.1:7070"));
        assert!(is_redirect(&s));
    }

    #[test]
    fn a_redirect_during_an_election_names_no_leader() {
        let s = redirect(None);
        assert_eq!(leader_hint(&s), None);
        assert!(is_redirect(&s));
        assert!(!is_redirect(&Status::unavailable("disk full")));
    }
}
