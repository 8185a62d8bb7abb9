//! The worker's side of SSH agent forwarding (`RUN --mount=type=ssh`).
//!
//! For each ssh mount of an assignment the worker creates a unix socket in
//! a private directory of its own (outside the rootfs, mode 0700, removed
//! with the step), and the step's container gets that socket bind-mounted
//! at the mount's target (`rbk_worker::mounts`). Every connection accepted
//! on it becomes one `SshRelay.Forward` stream to the coordinator, which
//! pairs it with the build's client; the client's agent answers. The key
//! never reaches the worker, and the socket exists only while the step
//! runs.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use rbk_worker::payload::{FarmStep, Work};

use crate::background_commit::BackgroundCommit;
use crate::exec::FarmExecutor;
use rbk_proto::ssh::ssh_relay_client::SshRelayClient;
use rbk_proto::ssh::{ConnData, ForwardFrame, ForwardOpen, forward_frame};
use rbk_proto::worker::{Assign, StepResult};
use rbk_worker::{LogLine, LogSink, MountKind, StepKind, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Bytes read from a step's connection per frame.
const READ: usize = 32 * 1024;

/// How a worker reaches the coordinator for forwards: the session's
/// channel, token and worker id.
#[derive(Clone)]
pub struct SshLink {
    pub channel: Channel,
    pub auth: MetadataValue<Ascii>,
    pub worker_id: String,
}

/// A socket to serve: the ssh id and the socket's mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub id: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The sockets a step payload's `type=ssh` mounts need, one per id (the
/// first mount of an id sets its mode and owner); none for payloads that
/// are not RUN steps, or not farm steps at all (the executor reports
/// those).
pub fn ssh_sockets(payload: &[u8]) -> Vec<SocketSpec> {
    let Ok(step) = serde_json::from_slice::<FarmStep>(payload) else { return vec![] };
    let Work::Step { step: StepKind::Run(run) } = step.work else { return vec![] };
    let mut out: Vec<SocketSpec> = Vec::new();
    for m in run.mounts {
        if let MountKind::Ssh { id, mode, uid, gid, .. } = m.kind
            && !out.iter().any(|s| s.id == id)
        {
            out.push(SocketSpec { id, mode, uid, gid });
        }
    }
    out
}

/// A step's agent sockets; they stop accepting and are removed on drop.
pub struct StepAgents {
    pub sockets: HashMap<String, PathBuf>,
    _tasks: JoinSet<()>,
    _dir: tempfile::TempDir,
}

fn note(log: &LogSink, line: String) {
    log(&LogLine { time: std::time::SystemTime::now(), stream: Stream::Stderr, line });
}

impl StepAgents {
    /// Creates a socket per ssh id of `assign` and relays every connection
    /// to it through `link`. Problems with a forward are written to the
    /// step's log (`log`), so the user sees why the agent did not answer.
    pub fn serve(assign: &Assign, link: &SshLink, log: &LogSink) -> std::io::Result<Option<Self>> {
        let specs = ssh_sockets(&assign.payload);
        if specs.is_empty() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("rbk-ssh-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let mut tasks = JoinSet::new();
        let mut sockets = HashMap::new();
        for (i, SocketSpec { id, mode, uid, gid }) in specs.into_iter().enumerate() {
            let path = dir.path().join(format!("agent.{i}.sock"));
            let listener = UnixListener::bind(&path)?;
            // The mount's mode and owner (BuildKit's defaults: 0600, root);
            // the directory stays root's 0700, reached only through the
            // bind mount.
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o777))?;
            sockets.insert(id.clone(), path);
            let open = ForwardOpen { worker_id: link.worker_id.clone(), assignment_id: assign.assignment_id.clone(), ssh_id: id };
            let (link, log) = (link.clone(), log.clone());
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (link, open, log) = (link.clone(), open.clone(), log.clone());
                    conns.spawn(async move {
                        let id = open.ssh_id.clone();
                        if let Err(why) = relay(stream, link, open).await {
                            note(&log, format!("rbk: ssh agent {id:?}: {why}"));
                        }
                    });
                }
            });
        }
        Ok(Some(StepAgents { sockets, _tasks: tasks, _dir: dir }))
    }
}

/// One connection of a step to its agent socket, relayed both ways until
/// both sides have ended.
async fn relay(stream: UnixStream, link: SshLink, open: ForwardOpen) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<ForwardFrame>(16);
    tx.send(ForwardFrame { frame: Some(forward_frame::Frame::Open(open)) }).await.map_err(|_| "relay closed".to_owned())?;
    let mut req = Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", link.auth.clone());
    let mut down = SshRelayClient::new(link.channel.clone())
        .forward(req)
        .await
        .map_err(|s| format!("the coordinator refused the forward: {}", s.message()))?
        .into_inner();
    let (mut rd, mut wr) = stream.into_split();
    let up = async move {
        let mut buf = vec![0u8; READ];
        loop {
            let (data, eof) = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => (vec![], true),
                Ok(n) => (buf[..n].to_vec(), false),
            };
            let frame = ForwardFrame { frame: Some(forward_frame::Frame::Data(ConnData { data, eof, ..Default::default() })) };
            if tx.send(frame).await.is_err() || eof {
                break;
            }
        }
    };
    let down = async move {
        let mut error = None;
        loop {
            match down.message().await {
                Ok(Some(ForwardFrame { frame: Some(forward_frame::Frame::Data(d)) })) => {
                    if !d.data.is_empty() && wr.write_all(&d.data).await.is_err() {
                        break;
                    }
                    if d.eof {
                        if !d.error.is_empty() {
                            error = Some(d.error);
                        }
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    error = Some(s.message().to_owned());
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
        error
    };
    let ((), error) = tokio::join!(up, down);
    error.map_or(Ok(()), Err)
}

/// Runs `assign` on `exec` with its agent sockets served for the step's
/// lifetime; its cache mounts are captured by the returned commit, if any
/// (see [`FarmExecutor::run_committing_later`]).
pub async fn run(exec: &Arc<FarmExecutor>, assign: &Assign, log: LogSink, link: &SshLink) -> (StepResult, Option<BackgroundCommit>) {
    match StepAgents::serve(assign, link, &log) {
        Ok(None) => exec.run_committing_later(assign, log, HashMap::new()).await,
        Ok(Some(agents)) => {
            let r = exec.run_committing_later(assign, log, agents.sockets.clone()).await;
            drop(agents);
            r
        }
        Err(e) => (StepResult {
            assignment_id: assign.assignment_id.clone(),
            ok: false,
            message: format!("step {}: creating its ssh agent socket: {e}", assign.step_id),
            exit_code: -1,
            ..Default::default()
        }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_worker::payload::{FARM_STEP_VERSION, ImageSource};
    use rbk_worker::{Mount, RunStep};

    fn ssh(target: &str, id: &str, mode: u32, uid: u32) -> Mount {
        Mount { target: target.into(), kind: MountKind::Ssh { id: id.into(), required: true, mode, uid, gid: uid } }
    }

    fn payload(mounts: Vec<Mount>) -> Vec<u8> {
        let run = RunStep { mounts, ..RunStep::new(rbk_worker::Command::Exec(vec!["ssh-add".into(), "-l".into()])) };
        serde_json::to_vec(&FarmStep {
            version: FARM_STEP_VERSION,
            label: "[1/1] RUN ssh-add -l".into(),
            file: "Dockerfile".into(),
            line: 2,
            parent: ImageSource::Scratch,
            work: Work::Step { step: StepKind::Run(run) },
            cache_ids: vec![],
            context: None,
            stages: Default::default(),
            allow: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn each_ssh_id_gets_one_socket_with_the_first_mounts_mode_and_owner() {
        let p = payload(vec![ssh("/a", "gh", 0o660, 1000), ssh("/b", "gh", 0o600, 5), ssh("/c", "default", 0o600, 0)]);
        assert_eq!(
            ssh_sockets(&p),
            [
                SocketSpec { id: "gh".into(), mode: 0o660, uid: 1000, gid: 1000 },
                SocketSpec { id: "default".into(), mode: 0o600, uid: 0, gid: 0 },
            ]
        );
        assert!(ssh_sockets(b"not a payload").is_empty());
    }
}
