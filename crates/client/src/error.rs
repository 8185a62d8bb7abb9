use std::path::PathBuf;
use std::time::Duration;

use crate::leader::LeaderError;

/// The tenant token cannot go into an `authorization` header.
#[derive(Debug, thiserror::Error)]
#[error("the token has characters a header cannot carry")]
pub struct BadToken;

/// A `--ssh` value that names no usable agent socket, or forwarding that
/// could not start.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "--ssh {spec}: rbk forwards one agent socket per id, not key files; load the keys into an agent (ssh-add) and pass its socket"
    )]
    KeyFiles { spec: String },
    #[error("--ssh {spec}: SSH_AUTH_SOCK is not set; start an agent (eval $(ssh-agent); ssh-add) or pass --ssh {spec}=/path/to/agent.sock")]
    NoAuthSock { spec: String },
    #[error("--ssh {spec}: expected default, ID or ID=SOCKET")]
    BadSpec { spec: String },
    #[error("--ssh {spec}: agent socket {}", path.display())]
    Socket { spec: String, path: PathBuf, source: std::io::Error },
    #[error(
        "--ssh {spec}: {} is not a unix socket; rbk forwards ssh agent sockets only (BuildKit's key files are not supported): load the key with ssh-add and pass the agent's socket",
        path.display()
    )]
    NotSocket { spec: String, path: PathBuf },
    #[error("--ssh {spec}: id {id:?} given twice")]
    Twice { spec: String, id: String },
    #[error(transparent)]
    Token(#[from] BadToken),
    #[error("relay closed")]
    RelayClosed,
    #[error("the coordinator refused the agent stream for build {build_id}: {message}")]
    Refused { build_id: String, message: String },
    #[error("the agent stream broke: {message}")]
    StreamBroke { message: String },
}

/// Why submitting or following a build failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Token(#[from] BadToken),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("--coordinator: no URL given")]
    NoUrl,
    /// No `--coordinator` URL accepted a connection (`retry`: how long it
    /// was tried again).
    #[error(
        "cannot reach the coordinator: {errors}{}",
        if retry.is_zero() { " (is `rbk coordinator` running at that address? --connect-retry DURATION waits for one that is starting)".to_string() } else { format!(" (tried for {retry:?})") }
    )]
    Unreachable { errors: String, retry: Duration },
    #[error("no coordinator leader reachable through {urls} within {patience:?}: {last}")]
    NoLeader { urls: String, patience: Duration, last: String },
    #[error("{url}: the build was refused: {message}")]
    Refused { url: String, message: String },
    #[error("{url}: the build's event stream broke: {message}")]
    StreamBroke { url: String, message: String },
    #[error("{url}: the event stream ended before the build finished")]
    StreamEnded { url: String },
    #[error("the build's event stream broke ({why}) and no coordinator took it over")]
    NoTakeover { why: String, source: Box<SubmitError> },
    #[error("{leader}: following build {build_id} after its event stream broke ({why}): {message}")]
    WatchRefused { leader: String, build_id: String, why: String, message: String },
    #[error("interrupted while following build {build_id} to a new leader; it was not cancelled")]
    InterruptedWhileFollowing { build_id: String },
    #[error("interrupted; build {build_id} was asked to cancel")]
    Interrupted { build_id: String },
    #[error("{url}: cancel: {message}")]
    Cancel { url: String, message: String },
    #[error("step {step_id}: the result the worker reported is not a farm result")]
    BadResult { step_id: String, source: serde_json::Error },
    /// A step failed: `label` and `place` (Dockerfile file:line) say which.
    #[error("{label}{place} failed{worker}: {why}")]
    StepFailed { label: String, place: String, worker: String, why: String },
    /// The build ended without a failed step to blame (cancelled, ...).
    #[error("build {state}: {message}")]
    BuildEnded { state: String, message: String },
    #[error("the build finished without a result for the target's step {step_id}")]
    NoTargetResult { step_id: String },
}
