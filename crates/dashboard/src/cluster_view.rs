//! What the binary knows about replication, for the Cluster page: the
//! coordinator crate does not know Raft, so the binary hands the dashboard
//! a [`ClusterView`] over its Raft node.

/// One member of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    pub raft: String,
    pub api: String,
    pub voter: bool,
    /// The highest log index known to match the leader's, and how many
    /// entries it lacks: known only on the leader (`None` elsewhere).
    pub matched: Option<u64>,
    pub lag: Option<u64>,
}

/// Replication as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// 0: unknown.
    pub leader_id: u64,
    pub term: u64,
    /// The last log index applied on this node.
    pub applied_index: u64,
    /// On the leader: its last log index and commit index (0 elsewhere).
    pub last_index: u64,
    pub commit_index: u64,
    pub members: Vec<MemberStatus>,
}

/// What the binary knows about replication.
pub trait ClusterView: Send + Sync + 'static {
    fn status(&self) -> ClusterStatus;
}
