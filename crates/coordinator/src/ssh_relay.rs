//! SSH agent forwarding through the coordinator (`proto/ssh.proto`): the
//! agent and its keys stay on the client machine, as with BuildKit's
//! session-forwarded agent; the coordinator pairs byte streams and checks
//! who may open them.
//!
//! - A client (`rbk submit --ssh`) holds one `Agent` stream per build,
//!   naming the build (which must be its tenant's and running) and the ssh
//!   ids it serves. It is registered here until the stream ends.
//! - A worker opens one `Forward` stream per connection a step made to its
//!   agent socket. It is refused unless the assignment it names is running
//!   *on that worker* right now and one of the assignment's builds has a
//!   client serving that ssh id. A forward that arrives before the client's
//!   stream (the client opens it when it sees `Accepted`) waits for it, up
//!   to [`CLIENT_WAIT`].
//! - Each accepted forward gets a connection id, announced to the client
//!   (`AgentConnect`), and bytes flow both ways; an end (`eof`) travels per
//!   direction, so half-closes work. When the client's stream ends, every
//!   open forward of it ends too.
//!
//! Nothing here is replicated or logged: the bytes are the agent protocol
//! (signatures, public keys) and live only in the channels below.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rbk_proto::ssh::ssh_relay_server::SshRelay;
use rbk_proto::ssh::{AgentConnect, AgentDown, AgentUp, ConnData, ForwardFrame, agent_down, agent_up, forward_frame};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Credential, tenant_of, worker_pool_of};
use crate::model::RunningAssignment;
use crate::scheduler::Scheduler;
use crate::state::{BuildState, CoordinatorState, query};

/// How long a worker's forward waits for its build's client to open the
/// `Agent` stream (it does so as soon as the build is accepted).
pub const CLIENT_WAIT: Duration = Duration::from_secs(15);

/// Frames buffered per direction before the sender waits.
const DEPTH: usize = 64;

type Down<T> = mpsc::Sender<Result<T, Status>>;

/// One client's `Agent` stream.
struct Client {
    session: u64,
    namespace: String,
    ids: BTreeSet<String>,
    tx: Down<AgentDown>,
    /// Open connections: where the client's bytes for each go.
    conns: HashMap<u64, Down<ForwardFrame>>,
}

#[derive(Default)]
struct Inner {
    /// By build id.
    clients: HashMap<String, Client>,
    next: u64,
}

/// The registry of clients serving agents, shared by both rpcs.
#[derive(Clone, Default)]
pub struct AgentRelay {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// Where a forward goes: the client's stream and the connection's id.
struct Paired {
    conn: u64,
    client: Down<AgentDown>,
    rx: mpsc::Receiver<Result<ForwardFrame, Status>>,
}

impl AgentRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client for `build_id`; a second stream for the same build
    /// replaces the first.
    fn register(&self, build_id: &str, namespace: String, ids: BTreeSet<String>, tx: Down<AgentDown>) -> u64 {
        let mut inner = self.lock();
        inner.next += 1;
        let session = inner.next;
        inner.clients.insert(build_id.to_owned(), Client { session, namespace, ids, tx, conns: HashMap::new() });
        drop(inner);
        self.changed.notify_waiters();
        session
    }

    fn unregister(&self, build_id: &str, session: u64) {
        let mut inner = self.lock();
        if inner.clients.get(build_id).is_some_and(|c| c.session == session) {
            // Dropping the connection senders ends every open forward.
            inner.clients.remove(build_id);
        }
    }

    /// The client's bytes for `conn`; `None` when the connection is gone.
    fn to_worker(&self, build_id: &str, session: u64, conn: u64, eof: bool) -> Option<Down<ForwardFrame>> {
        let mut inner = self.lock();
        let c = inner.clients.get_mut(build_id).filter(|c| c.session == session)?;
        if eof { c.conns.remove(&conn) } else { c.conns.get(&conn).cloned() }
    }

    /// Pairs a worker's connection with the client of one of `a`'s builds
    /// that serves `ssh_id`, waiting up to `wait` for such a client to
    /// register.
    async fn pair(&self, a: &RunningAssignment, ssh_id: &str, wait: Duration) -> Result<Paired, Status> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                inner.next += 1;
                let conn = inner.next;
                let mut registered = Vec::new();
                for b in &a.build_ids {
                    let Some(c) = inner.clients.get_mut(b).filter(|c| c.namespace == a.namespace) else { continue };
                    if !c.ids.contains(ssh_id) {
                        registered.push(b.clone());
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(DEPTH);
                    c.conns.insert(conn, tx);
                    return Ok(Paired { conn, client: c.tx.clone(), rx });
                }
                if !registered.is_empty() {
                    return Err(Status::permission_denied(format!(
                        "ssh agent {ssh_id:?}: the client of build {} does not serve that id (rbk submit --ssh {ssh_id}=...)",
                        registered.join(", ")
                    )));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Status::unavailable(format!(
                    "ssh agent {ssh_id:?}: no client is serving ssh agents for build {} (it did not connect within {}s, or has gone)",
                    a.build_ids.join(", "),
                    wait.as_secs()
                )));
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `SshRelay` gRPC service over a coordinator's scheduler and state.
pub struct SshRelayService {
    state: Arc<dyn CoordinatorState>,
    scheduler: Scheduler,
    relay: AgentRelay,
    wait: Duration,
}

impl SshRelayService {
    pub fn new(state: Arc<dyn CoordinatorState>, scheduler: Scheduler, relay: AgentRelay) -> Self {
        Self { state, scheduler, relay, wait: CLIENT_WAIT }
    }
}

fn data(conn: u64, d: ConnData) -> ConnData {
    ConnData { conn, ..d }
}

#[async_trait::async_trait]
impl SshRelay for SshRelayService {
    type AgentStream = BoxStream<AgentDown>;
    type ForwardStream = BoxStream<ForwardFrame>;

    async fn agent(&self, req: Request<Streaming<AgentUp>>) -> Result<Response<Self::AgentStream>, Status> {
        let namespace = tenant_of(&req)?;
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentUp { frame: Some(agent_up::Frame::Hello(h)) }) => h,
            _ => return Err(Status::invalid_argument("ssh agent stream: the first frame must be hello")),
        };
        let build_id = hello.build_id;
        let running = query(&*self.state, |m| {
            m.build(&build_id).filter(|b| b.namespace == namespace).map(|b| b.state == BuildState::Running)
        });
        match running {
            None => return Err(Status::not_found(format!("build {build_id} not found"))),
            Some(false) => return Err(Status::failed_precondition(format!("build {build_id} has finished"))),
            Some(true) => {}
        }
        let relay = self.relay.clone();
        let (tx, rx) = mpsc::channel(DEPTH);
        let ids: BTreeSet<String> = hello.ssh_ids.into_iter().collect();
        tracing::info!(build = %build_id, ids = ?ids, "client serves ssh agents");
        let session = relay.register(&build_id, namespace, ids, tx);
        tokio::spawn(async move {
            while let Ok(Some(up)) = inbound.message().await {
                let Some(agent_up::Frame::Data(d)) = up.frame else { continue };
                let Some(to) = relay.to_worker(&build_id, session, d.conn, d.eof) else { continue };
                let _ = to.send(Ok(ForwardFrame { frame: Some(forward_frame::Frame::Data(data(0, d))) })).await;
            }
            relay.unregister(&build_id, session);
            tracing::info!(build = %build_id, "ssh agent stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }

    async fn forward(&self, req: Request<Streaming<ForwardFrame>>) -> Result<Response<Self::ForwardStream>, Status> {
        let grant = worker_pool_of(&req)?;
        let credential = req.extensions().get::<Credential>().cloned();
        let mut inbound = req.into_inner();
        let open = match inbound.message().await? {
            Some(ForwardFrame { frame: Some(forward_frame::Frame::Open(o)) }) => o,
            _ => return Err(Status::invalid_argument("ssh forward: the first frame must be open")),
        };
        let refused = || {
            Status::permission_denied(format!(
                "ssh forward: assignment {} is not running on worker {}",
                open.assignment_id, open.worker_id
            ))
        };
        let a = self.scheduler.running_assignment(&open.assignment_id).await.ok_or_else(refused)?;
        // Only the session that holds the assignment: same id, same token.
        let same_session = credential.is_some_and(|c| c.0 == a.credential) && grant.id.as_ref().is_none_or(|id| *id == a.worker_id);
        if a.worker_id != open.worker_id || !same_session {
            tracing::warn!(worker = %open.worker_id, assignment = %open.assignment_id, "refused an ssh forward for an assignment the caller does not hold");
            return Err(refused());
        }
        let Paired { conn, client, rx } = self.relay.pair(&a, &open.ssh_id, self.wait).await?;
        let connect = AgentDown { frame: Some(agent_down::Frame::Connect(AgentConnect { conn, ssh_id: open.ssh_id.clone() })) };
        if client.send(Ok(connect)).await.is_err() {
            return Err(Status::unavailable(format!("ssh agent {:?}: the client has gone", open.ssh_id)));
        }
        tokio::spawn(async move {
            let mut ended = false;
            while let Ok(Some(f)) = inbound.message().await {
                let Some(forward_frame::Frame::Data(d)) = f.frame else { continue };
                ended = d.eof;
                let down = AgentDown { frame: Some(agent_down::Frame::Data(data(conn, d))) };
                if client.send(Ok(down)).await.is_err() || ended {
                    break;
                }
            }
            if !ended {
                // The worker's stream broke: the client closes its side.
                let eof = ConnData { conn, eof: true, error: "the worker's connection ended".into(), ..Default::default() };
                let _ = client.send(Ok(AgentDown { frame: Some(agent_down::Frame::Data(eof)) })).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }
}
