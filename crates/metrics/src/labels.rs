//! The closed sets of label values rbk's metrics use. Enums rather than
//! free strings so a typo cannot open a new time series, and so every value
//! can be pre-registered at zero (a dashboard's `rate()` needs the series to
//! exist before the first event).

use prometheus_client::encoding::EncodeLabelSet;

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildResult {
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildResult {
    pub const ALL: [BuildResult; 3] = [BuildResult::Succeeded, BuildResult::Failed, BuildResult::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildResult::Succeeded => "succeeded",
            BuildResult::Failed => "failed",
            BuildResult::Cancelled => "cancelled",
        }
    }
}

/// What happened to one step of one build. `Retried` counts extra attempts
/// (a worker was lost), so `done + failed + cached` is the number of steps
/// that reached an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepResult {
    Cached,
    Done,
    Failed,
    Retried,
}

impl StepResult {
    pub const ALL: [StepResult; 4] = [StepResult::Cached, StepResult::Done, StepResult::Failed, StepResult::Retried];

    pub fn as_str(self) -> &'static str {
        match self {
            StepResult::Cached => "cached",
            StepResult::Done => "done",
            StepResult::Failed => "failed",
            StepResult::Retried => "retried",
        }
    }
}

/// What a new coordinator leader did with a step the replicated state
/// said was running on a worker: `kept` (the worker came back and
/// re-reported it), `retried` (it did not, within the grace period), or a
/// result it `ignored` (an assignment it does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readopted {
    Kept,
    Retried,
    Ignored,
}

impl Readopted {
    pub const ALL: [Readopted; 3] = [Readopted::Kept, Readopted::Retried, Readopted::Ignored];

    pub fn as_str(self) -> &'static str {
        match self {
            Readopted::Kept => "kept",
            Readopted::Retried => "retried",
            Readopted::Ignored => "ignored",
        }
    }
}

/// Which cache answered (or failed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// The action cache: a step's key → its result (the step is CACHED).
    Action,
    /// A worker's local layer store: a parent layer already unpacked.
    Layer,
    /// A cache mount's head restored into a step (a miss is an empty cache).
    CacheMount,
}

impl CacheKind {
    pub const ALL: [CacheKind; 3] = [CacheKind::Action, CacheKind::Layer, CacheKind::CacheMount];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Action => "action",
            CacheKind::Layer => "layer",
            CacheKind::CacheMount => "cache_mount",
        }
    }
}

/// The five operations of `rbk_store::Store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    FindMissing,
    Put,
    Get,
    Delete,
    List,
}

impl StoreOp {
    pub const ALL: [StoreOp; 5] = [StoreOp::FindMissing, StoreOp::Put, StoreOp::Get, StoreOp::Delete, StoreOp::List];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::FindMissing => "find_missing",
            StoreOp::Put => "put",
            StoreOp::Get => "get",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CacheLabels {
    pub cache: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct StoreLabels {
    pub op: &'static str,
    pub backend: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct StoreErrorLabels {
    pub op: &'static str,
    pub backend: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub direction: &'static str,
    pub backend: &'static str,
}

/// `rbk_build_info`'s labels: which rbk a process runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildInfoLabels {
    pub version: String,
    pub commit: String,
}
