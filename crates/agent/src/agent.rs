//! The worker loop: connect out, register, take assignments, report back,
//! and reconnect when the stream breaks.
//!
//! One task owns the loop; each assignment runs in a task of its own and
//! reports through one channel (log lines, then its result), so the loop
//! never waits on a step. Running steps outlive a broken session. While
//! disconnected, finished results are kept and sent first on the next
//! session (the coordinator ignores results of assignments it has already
//! given to someone else); log lines of that gap are dropped. Every
//! registration names the assignments the worker still holds (running, or
//! finished with the result not yet sent), so a new coordinator leader
//! keeps those steps here instead of running them again.
//!
//! A step's cache mounts are captured after its result was sent (see
//! [`crate::background_commit`]); their commits follow on the stream, and
//! are kept and re-sent across a broken session like results. At most
//! [`COMMITS_IN_FLIGHT`] captures per step slot run behind the steps; past
//! that a step captures before its result, as a drain waits for them all.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exec::FarmExecutor;
use rbk_proto::worker::coordinator_message::Msg as Down;
use rbk_proto::worker::worker_client::WorkerClient;
use rbk_proto::worker::worker_message::Msg as Up;
use rbk_proto::worker::{self as pw};
use rbk_worker::{LogLine, LogSink, Stream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Code, Request, Streaming};

use rbk_client::ClientTls;

use crate::backoff::Backoff;

/// The platform steps run on here: this machine's, named as `rbk submit`
/// names the platform it plans for (no emulation).
pub fn platform() -> String {
    rbk_worker::payload::current_platform()
}

/// How a worker joins the farm and when it leaves. `Debug` leaves the
/// token out.
#[derive(Clone)]
pub struct AgentConfig {
    /// `http://host:port` of a coordinator.
    pub coordinator: String,
    /// A worker-pool token from the coordinator's token file.
    pub token: String,
    /// What to trust when the coordinator is `https://` (default: the
    /// system roots).
    pub tls: ClientTls,
    /// Stable across restarts, so the coordinator recognises a reconnect.
    pub worker_id: String,
    /// Steps may require labels (exact values) to land here.
    pub labels: BTreeMap<String, String>,
    pub max_parallel: u32,
    /// Drain and exit once no step has run for this long (CI runners).
    pub until_idle: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Platforms it offers to run through QEMU emulation besides its own
    /// (`rbk_worker::emulation::emulated_platforms`); empty: native only.
    pub emulated_platforms: Vec<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("coordinator", &self.coordinator)
            .field("worker_id", &self.worker_id)
            .field("labels", &self.labels)
            .field("max_parallel", &self.max_parallel)
            .field("until_idle", &self.until_idle)
            .field("emulated_platforms", &self.emulated_platforms)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    pub fn new(coordinator: impl Into<String>, token: impl Into<String>, worker_id: impl Into<String>) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            token: token.into(),
            tls: ClientTls::default(),
            worker_id: worker_id.into(),
            labels: BTreeMap::new(),
            max_parallel: 1,
            until_idle: None,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            emulated_platforms: vec![],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("coordinator url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("the worker token has characters an HTTP header cannot carry")]
    Token,
    /// The coordinator refused the worker for good (bad token, bad
    /// registration): retrying would not help.
    #[error("the coordinator at {url} refused this worker: {message}")]
    Refused { url: String, message: String },
}

/// What running steps report to the loop.
enum Event {
    Log(pw::StepLog),
    Done(pw::StepResult),
    /// The cache commits of a step whose result said they follow.
    Commits(pw::CacheCommits),
}

/// Captures running behind the steps, per step slot (`--max-parallel`).
const COMMITS_IN_FLIGHT: usize = 2;

/// What the loop keeps across sessions.
struct Local {
    /// By assignment id: the step's task and what registration reports.
    running: HashMap<String, (AbortHandle, pw::HeldAssignment)>,
    draining: bool,
    idle_since: Instant,
    /// Results finished while disconnected (with what registration
    /// reports about them, when known).
    backlog: Vec<(Option<pw::HeldAssignment>, pw::StepResult)>,
    /// Results sent on this session in the last [`RESEND_WINDOW`]: the
    /// protocol has no acknowledgement, so a result written just before
    /// the stream broke may never have been read. They are reported and
    /// sent again on the next session; a coordinator that already has them
    /// ignores them.
    sent: std::collections::VecDeque<(Instant, pw::HeldAssignment, pw::StepResult)>,
    shutdown_seen: bool,
    /// Assignments whose result went back and whose cache capture runs.
    committing: std::collections::HashSet<String>,
    /// Cache commits finished while disconnected, sent after the backlog
    /// of results on the next session.
    commits_backlog: Vec<pw::CacheCommits>,
    /// Commits sent on this session in the last [`RESEND_WINDOW`] (as
    /// `sent`).
    sent_commits: std::collections::VecDeque<(Instant, pw::CacheCommits)>,
    /// When this session told the coordinator it drains: an assignment it
    /// sent before reading that may still be on the way, so an idle worker
    /// waits [`DRAIN_GRACE`] before it leaves rather than dropping it.
    drain_sent: Option<tokio::time::Instant>,
    /// The coordinator acknowledged the drain on this session: nothing is
    /// in flight any more, so an idle worker leaves without the grace.
    drain_acked: bool,
}

/// How long a drained, idle worker keeps reading for assignments already in
/// flight when the coordinator does not acknowledge the drain (`DrainAck`
/// came later; an older coordinator never sends it).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a sent result is kept for re-sending after a broken session:
/// longer than a dead coordinator takes to be noticed (HTTP/2 keepalive,
/// 10 s + 10 s).
const RESEND_WINDOW: Duration = Duration::from_secs(60);

impl Local {
    /// Records a result as sent on this session.
    fn sent(&mut self, held: pw::HeldAssignment, r: pw::StepResult) {
        let now = Instant::now();
        while self.sent.front().is_some_and(|(t, _, _)| now.duration_since(*t) > RESEND_WINDOW) {
            self.sent.pop_front();
        }
        self.sent.push_back((now, held, r));
    }

    /// Records cache commits as sent on this session.
    fn sent_commits(&mut self, c: pw::CacheCommits) {
        let now = Instant::now();
        while self.sent_commits.front().is_some_and(|(t, _)| now.duration_since(*t) > RESEND_WINDOW) {
            self.sent_commits.pop_front();
        }
        self.sent_commits.push_back((now, c));
    }

    /// The session broke: recently sent results and commits go back to
    /// the backlogs.
    fn unsent(&mut self) {
        let recent: Vec<_> =
            self.sent.drain(..).filter(|(t, _, _)| t.elapsed() <= RESEND_WINDOW).map(|(_, h, r)| (Some(h), r)).collect();
        self.backlog.splice(0..0, recent);
        let commits: Vec<_> = self.sent_commits.drain(..).filter(|(t, _)| t.elapsed() <= RESEND_WINDOW).map(|(_, c)| c).collect();
        self.commits_backlog.splice(0..0, commits);
    }

    /// Steps running, or captures of finished ones.
    fn busy(&self) -> bool {
        !self.running.is_empty() || !self.committing.is_empty()
    }

    /// A step's result arrived from its task: it no longer runs, and its
    /// capture may.
    fn step_done(&mut self, r: &pw::StepResult) -> Option<pw::HeldAssignment> {
        let held = self.running.remove(&r.assignment_id).map(|(_, h)| h);
        if r.commits_follow {
            self.committing.insert(r.assignment_id.clone());
        }
        self.idle_since = Instant::now();
        held
    }
}

enum SessionEnd {
    /// Drained: exit.
    Finished,
    /// The stream broke; `registered` says whether it got that far.
    Broken { why: String, registered: bool },
}

/// A farm worker: [`FarmExecutor`] behind a Worker.Session stream.
pub struct Agent {
    config: AgentConfig,
    exec: Arc<FarmExecutor>,
    permits: Arc<Semaphore>,
    /// Captures behind the steps (see [`COMMITS_IN_FLIGHT`]).
    commit_permits: Arc<Semaphore>,
    /// The leader a follower named when it refused our session (replicated
    /// coordinators): the next session goes there.
    leader_hint: std::sync::Mutex<Option<String>>,
}

fn endpoint_for(tls: &ClientTls, url: &str) -> Result<Endpoint, AgentError> {
    Ok(tls
        .endpoint(url)
        .map_err(|e| AgentError::Url { url: url.to_owned(), message: e.to_string() })?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10)))
}

impl Agent {
    pub fn new(config: AgentConfig, exec: Arc<FarmExecutor>) -> Self {
        let slots = config.max_parallel.max(1) as usize;
        let permits = Arc::new(Semaphore::new(slots));
        let commit_permits = Arc::new(Semaphore::new(slots * COMMITS_IN_FLIGHT));
        Agent { config, exec, permits, commit_permits, leader_hint: std::sync::Mutex::new(None) }
    }

    /// Serves until drained: `shutdown` resolving (SIGTERM) or the idle
    /// limit starts a drain (no new steps; running ones finish and report),
    /// then the session is closed and this returns `Ok`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let url = self.config.coordinator.clone();
        let configured = endpoint_for(&self.config.tls, &url)?;
        // Where sessions go: the configured coordinator, or the leader a
        // follower named (a replicated coordinator schedules only on its
        // leader). Back to the configured one when the named leader cannot
        // be reached, so a worker finds the next leader after a failover.
        let (mut target, mut endpoint) = (url.clone(), configured.clone());
        let auth: MetadataValue<Ascii> = format!("Bearer {}", self.config.token).parse().map_err(|_| AgentError::Token)?;
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let mut local = Local {
            running: HashMap::new(),
            draining: false,
            idle_since: Instant::now(),
            backlog: vec![],
            sent: Default::default(),
            shutdown_seen: false,
            committing: Default::default(),
            commits_backlog: vec![],
            sent_commits: Default::default(),
            drain_sent: None,
            drain_acked: false,
        };
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        tokio::pin!(shutdown);
        loop {
            match self.session(&endpoint, &auth, &mut local, &ev_tx, &mut ev_rx, shutdown.as_mut()).await? {
                SessionEnd::Finished => return Ok(()),
                SessionEnd::Broken { why, registered } => {
                    local.unsent();
                    if registered {
                        backoff.reset();
                    }
                    let hint = self.leader_hint.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let mut follow = false;
                    match hint {
                        Some(leader) if leader != target => match endpoint_for(&self.config.tls, &leader) {
                            Ok(e) => {
                                tracing::info!(%leader, "following the coordinator leader");
                                (target, endpoint, follow) = (leader, e, true);
                            }
                            Err(e) => tracing::warn!("ignoring the leader a coordinator named: {e}"),
                        },
                        Some(_) => {}
                        None if target != url && !registered => {
                            (target, endpoint) = (url.clone(), configured.clone());
                        }
                        None => {}
                    }
                    if local.draining && !local.busy() {
                        // Nobody to drain towards; what is left is lost
                        // either way, and the coordinator retries it.
                        tracing::warn!("draining while disconnected ({why}); exiting");
                        return Ok(());
                    }
                    if let Some(limit) = self.config.until_idle
                        && !local.busy()
                        && local.idle_since.elapsed() >= limit
                    {
                        // A CI job's worker must end even if the farm is gone.
                        tracing::warn!("idle for {limit:?} without a coordinator ({why}); exiting");
                        return Ok(());
                    }
                    let delay = if follow { Duration::from_millis(100) } else { backoff.next_delay() };
                    tracing::warn!(coordinator = %target, "worker session ended: {why}; reconnecting in {delay:?}");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = shutdown.as_mut(), if !local.shutdown_seen => {
                                local.shutdown_seen = true;
                                local.draining = true;
                                if !local.busy() {
                                    return Ok(());
                                }
                            }
                            Some(ev) = ev_rx.recv() => match ev {
                                Event::Done(r) => {
                                    let held = local.step_done(&r);
                                    local.backlog.push((held, r));
                                }
                                Event::Commits(c) => {
                                    local.committing.remove(&c.assignment_id);
                                    local.commits_backlog.push(c);
                                }
                                Event::Log(_) => {}
                            }
                        }
                    }
                }
            }
        }
    }

    fn register(&self, local: &Local) -> pw::Register {
        let mut running: Vec<pw::HeldAssignment> = local.running.values().map(|(_, h)| h.clone()).collect();
        running.extend(local.backlog.iter().filter_map(|(h, _)| h.clone()));
        running.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        pw::Register {
            worker_id: self.config.worker_id.clone(),
            platform: platform(),
            emulated_platforms: self.config.emulated_platforms.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            resources: Some(pw::Resources { cpus, memory_bytes: memory_bytes(), max_parallel: self.config.max_parallel.max(1) }),
            layers: self.exec.held_layers(),
            snapshots: self
                .exec
                .held_caches()
                .into_iter()
                .map(|h| pw::HeldSnapshot { namespace: h.namespace, cache_id: h.cache_id, slot: h.slot, snapshot: h.snapshot.to_string() })
                .collect(),
            running,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        endpoint: &Endpoint,
        auth: &MetadataValue<Ascii>,
        local: &mut Local,
        ev_tx: &mpsc::UnboundedSender<Event>,
        ev_rx: &mut mpsc::UnboundedReceiver<Event>,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<SessionEnd, AgentError> {
        let broken = |why: String| Ok(SessionEnd::Broken { why, registered: false });
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return broken(format!("connecting: {}", rbk_client::tls::describe(&e))),
        };
        let (up, up_rx) = mpsc::unbounded_channel();
        let send = |m: Up| {
            let _ = up.send(pw::WorkerMessage { msg: Some(m) });
        };
        send(Up::Register(self.register(local)));
        let mut req = Request::new(UnboundedReceiverStream::new(up_rx));
        req.metadata_mut().insert("authorization", auth.clone());
        let ssh = crate::ssh_forward::SshLink { channel: channel.clone(), auth: auth.clone(), worker_id: self.config.worker_id.clone() };
        let mut down = match WorkerClient::new(channel).session(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return self.refused_or_broken(s),
        };
        let heartbeat_ms = match down.message().await {
            Ok(Some(pw::CoordinatorMessage { msg: Some(Down::Registered(r)) })) => r.heartbeat_interval_ms,
            Ok(other) => return broken(format!("expected `registered` first, got {other:?}")),
            Err(s) => return self.refused_or_broken(s),
        };
        tracing::info!(worker = %self.config.worker_id, "registered with {}", self.config.coordinator);
        let registered = |why: String| Ok(SessionEnd::Broken { why, registered: true });
        for (held, r) in std::mem::take(&mut local.backlog) {
            if let Some(held) = held {
                local.sent(held, r.clone());
            }
            send(Up::Result(r));
        }
        for c in std::mem::take(&mut local.commits_backlog) {
            local.sent_commits(c.clone());
            send(Up::Commits(c));
        }
        local.drain_sent = None;
        local.drain_acked = false;
        if local.draining {
            send(Up::Drain(pw::Drain {}));
            local.drain_sent = Some(tokio::time::Instant::now());
        }
        let every = Duration::from_millis(if heartbeat_ms == 0 { 5000 } else { heartbeat_ms });
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let grace_over = local.drain_sent.map(|t| t + DRAIN_GRACE);
            let nothing_in_flight = local.drain_acked || grace_over.is_some_and(|t| t <= tokio::time::Instant::now());
            if local.draining && !local.busy() && nothing_in_flight {
                return Ok(self.finish(up, down).await);
            }
            let idle_deadline = self.config.until_idle.map(|d| tokio::time::Instant::from_std(local.idle_since + d));
            tokio::select! {
                _ = heartbeat.tick() => send(Up::Heartbeat(pw::Heartbeat {})),
                _ = sleep_until_opt(grace_over), if local.draining && !local.busy() => {}
                m = down.message() => match m {
                    Ok(Some(pw::CoordinatorMessage { msg: Some(Down::Assign(a)) })) => self.start(a, local, ev_tx, &ssh),
                    Ok(Some(pw::CoordinatorMessage { msg: Some(Down::Cancel(c)) })) => {
                        if let Some((h, _)) = local.running.remove(&c.assignment_id) {
                            // Dropping the step's future kills its container
                            // (the runtime deletes it on drop).
                            h.abort();
                            tracing::info!(assignment = %c.assignment_id, "cancelled");
                            local.idle_since = Instant::now();
                            send(Up::Result(pw::StepResult {
                                assignment_id: c.assignment_id,
                                ok: false,
                                message: "cancelled by the coordinator".into(),
                                exit_code: -1,
                                ..Default::default()
                            }));
                        }
                    }
                    Ok(Some(pw::CoordinatorMessage { msg: Some(Down::DrainAck(_)) })) => local.drain_acked = true,
                    Ok(Some(_)) => {}
                    Ok(None) => return registered("the coordinator closed the stream".into()),
                    Err(s) => return registered(s.to_string()),
                },
                Some(ev) = ev_rx.recv() => match ev {
                    Event::Log(l) => send(Up::Log(l)),
                    Event::Done(r) => {
                        // A cancelled step's result was already sent.
                        if let Some(held) = local.step_done(&r) {
                            tracing::info!(assignment = %r.assignment_id, ok = r.ok, commits_follow = r.commits_follow, "step finished");
                            local.sent(held, r.clone());
                            send(Up::Result(r));
                        }
                    }
                    Event::Commits(c) => {
                        local.committing.remove(&c.assignment_id);
                        local.idle_since = Instant::now();
                        tracing::info!(assignment = %c.assignment_id, commits = c.commits.len(), "cache commits sent");
                        local.sent_commits(c.clone());
                        send(Up::Commits(c));
                    }
                },
                _ = shutdown.as_mut(), if !local.shutdown_seen => {
                    tracing::info!("draining: finishing {} running steps", local.running.len());
                    local.shutdown_seen = true;
                    local.draining = true;
                    send(Up::Drain(pw::Drain {}));
                    local.drain_sent = Some(tokio::time::Instant::now());
                }
                _ = sleep_until_opt(idle_deadline), if idle_deadline.is_some() && !local.busy() && !local.draining => {
                    tracing::info!("idle for {:?}; draining", self.config.until_idle.unwrap_or_default());
                    local.draining = true;
                    send(Up::Drain(pw::Drain {}));
                    local.drain_sent = Some(tokio::time::Instant::now());
                }
            }
        }
    }

    fn refused_or_broken(&self, s: tonic::Status) -> Result<SessionEnd, AgentError> {
        if let Some(leader) = rbk_client::leader::leader_hint(&s) {
            *self.leader_hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(leader);
        }
        match s.code() {
            Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
                Err(AgentError::Refused { url: self.config.coordinator.clone(), message: s.message().to_owned() })
            }
            _ => Ok(SessionEnd::Broken { why: s.to_string(), registered: false }),
        }
    }

    /// Closes our half of the stream and waits (bounded) for the
    /// coordinator to close its half, so every result sent is delivered.
    async fn finish(&self, up: mpsc::UnboundedSender<pw::WorkerMessage>, mut down: Streaming<pw::CoordinatorMessage>) -> SessionEnd {
        drop(up);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = down.message().await {}
        })
        .await;
        // The last steps' disk sweeps, so a drained worker leaves its disk
        // within the limit (and no eviction half done).
        self.exec.disk_settled().await;
        tracing::info!(worker = %self.config.worker_id, "drained");
        SessionEnd::Finished
    }

    fn start(&self, a: pw::Assign, local: &mut Local, ev_tx: &mpsc::UnboundedSender<Event>, ssh: &crate::ssh_forward::SshLink) {
        let id = a.assignment_id.clone();
        tracing::info!(assignment = %id, build = %a.build_id, step = %a.step_id, attempt = a.attempt, "assigned");
        let held = pw::HeldAssignment { assignment_id: id.clone(), build_id: a.build_id.clone(), step_id: a.step_id.clone(), attempt: a.attempt };
        let (exec, tx, permits, ssh) = (self.exec.clone(), ev_tx.clone(), self.permits.clone(), ssh.clone());
        let commit_permits = self.commit_permits.clone();
        let h = tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let metrics = rbk_metrics::global();
            let running = metrics.worker_step_running();
            let (aid, ltx) = (a.assignment_id.clone(), tx.clone());
            let sink: LogSink = Arc::new(move |l: &LogLine| {
                let stream = match l.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let _ = ltx.send(Event::Log(pw::StepLog { assignment_id: aid.clone(), stream: stream.into(), line: l.line.clone() }));
            });
            let (mut r, later) = crate::ssh_forward::run(&exec, &a, sink, &ssh).await;
            let later = match later.map(|c| (commit_permits.try_acquire_owned(), c)) {
                Some((Ok(p), c)) => Some((p, c)),
                Some((Err(_), c)) => {
                    // Enough captures behind the steps already: this one
                    // goes before the result.
                    c.run_into(&mut r).await;
                    None
                }
                None => None,
            };
            metrics.worker_step_finished(if r.ok { rbk_metrics::StepResult::Done } else { rbk_metrics::StepResult::Failed });
            metrics.worker_restored(r.bytes_restored);
            if !r.ok {
                tracing::warn!(assignment = %r.assignment_id, "step failed: {}", r.message);
            }
            // The slot is free for the next step while this one's cache
            // mounts are captured.
            drop(permit);
            drop(running);
            let _ = tx.send(Event::Done(r));
            if let Some((_p, c)) = later {
                let _ = tx.send(Event::Commits(c.run().await));
            }
        });
        local.running.insert(id, (h.abort_handle(), held));
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Total memory from `/proc/meminfo` (0 when unknown).
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_never_prints_its_token() {
        let c = AgentConfig::new("http://127.0.0.1:1", "very-secret-worker-token", "w1");
        let shown = format!("{c:?}");
        assert!(shown.contains("w1") && !shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn memory_is_read_from_proc_meminfo() {
        assert!(memory_bytes() > 0);
    }
}
