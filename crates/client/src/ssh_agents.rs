//! `--ssh default|ID[=SOCKET]` (`rbk submit`, `rbk build`): the client's
//! half of SSH agent forwarding. The agent stays on this machine: once the
//! coordinator accepts the build, the client opens one `SshRelay.Agent`
//! stream for it, naming the ids it serves, and for every connection a
//! step makes to its agent socket on a worker (announced as
//! `AgentConnect`) it connects to the local agent socket and relays bytes
//! both ways until both sides end. The stream, and with it every way to
//! reach the agent, ends with the build.
//!
//! BuildKit also accepts key files (`--ssh id=~/.ssh/id_ed25519`); rbk
//! forwards agent sockets only, and says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::FileTypeExt as _;
use std::path::PathBuf;

use rbk_proto::ssh::ssh_relay_client::SshRelayClient;
use rbk_proto::ssh::{AgentHello, AgentUp, ConnData, agent_down, agent_up};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::error::{BadToken, SshError};

/// Bytes read from the agent per frame.
const READ: usize = 32 * 1024;

/// The agents `--ssh` names: ssh id → local agent socket.
#[derive(Debug, Clone, Default)]
pub struct SshAgents {
    sockets: BTreeMap<String, PathBuf>,
}

impl SshAgents {
    /// Parses `--ssh` values as `docker build` does (`default`, `ID`, or
    /// `ID=PATH`; without a path the agent is `$SSH_AUTH_SOCK`) and checks
    /// that every path is a unix socket.
    pub fn parse(specs: &[String]) -> Result<Self, SshError> {
        Self::parse_with(specs, std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
    }

    fn parse_with(specs: &[String], auth_sock: Option<PathBuf>) -> Result<Self, SshError> {
        let mut sockets = BTreeMap::new();
        for spec in specs {
            let (id, path) = match spec.split_once('=') {
                Some((id, paths)) => {
                    if paths.contains(',') {
                        return Err(SshError::KeyFiles { spec: spec.clone() });
                    }
                    (id, PathBuf::from(paths))
                }
                None => {
                    let sock = auth_sock.clone().ok_or_else(|| SshError::NoAuthSock { spec: spec.clone() })?;
                    (spec.as_str(), sock)
                }
            };
            if id.is_empty() || id.contains(',') {
                return Err(SshError::BadSpec { spec: spec.clone() });
            }
            let md = std::fs::metadata(&path).map_err(|source| SshError::Socket { spec: spec.clone(), path: path.clone(), source })?;
            if !md.file_type().is_socket() {
                return Err(SshError::NotSocket { spec: spec.clone(), path });
            }
            if sockets.insert(id.to_owned(), path).is_some() {
                return Err(SshError::Twice { spec: spec.clone(), id: id.to_owned() });
            }
        }
        Ok(SshAgents { sockets })
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.sockets.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Serves the agents to `build_id`'s steps until the returned guard is
    /// dropped (the build is over).
    pub fn serve(&self, channel: Channel, token: &str, build_id: &str) -> Result<ServeGuard, SshError> {
        let auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {token}").parse().map_err(|_| BadToken)?;
        let (agents, build_id) = (self.sockets.clone(), build_id.to_owned());
        let task = tokio::spawn(async move {
            if let Err(e) = relay(channel, auth, build_id, agents).await {
                eprintln!("warning: ssh agent forwarding stopped: {e}");
            }
        });
        Ok(ServeGuard(task))
    }
}

/// Stops serving the agents when dropped.
pub struct ServeGuard(tokio::task::JoinHandle<()>);

impl Drop for ServeGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn frame(d: ConnData) -> AgentUp {
    AgentUp { frame: Some(agent_up::Frame::Data(d)) }
}

async fn relay(
    channel: Channel,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    build_id: String,
    agents: BTreeMap<String, PathBuf>,
) -> Result<(), SshError> {
    let (tx, rx) = mpsc::channel::<AgentUp>(64);
    let hello = AgentHello { build_id: build_id.clone(), ssh_ids: agents.keys().cloned().collect() };
    tx.send(AgentUp { frame: Some(agent_up::Frame::Hello(hello)) }).await.map_err(|_| SshError::RelayClosed)?;
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", auth);
    let mut down = SshRelayClient::new(channel)
        .agent(req)
        .await
        .map_err(|s| SshError::Refused { build_id: build_id.clone(), message: s.message().to_owned() })?
        .into_inner();
    let mut writers: HashMap<u64, OwnedWriteHalf> = HashMap::new();
    while let Some(msg) = down.message().await.map_err(|s| SshError::StreamBroke { message: s.message().to_owned() })? {
        match msg.frame {
            Some(agent_down::Frame::Connect(c)) => {
                let Some(path) = agents.get(&c.ssh_id) else {
                    let error = format!("this client serves no ssh id {:?}", c.ssh_id);
                    let _ = tx.send(frame(ConnData { conn: c.conn, eof: true, error, ..Default::default() })).await;
                    continue;
                };
                match UnixStream::connect(path).await {
                    Ok(s) => {
                        let (mut rd, wr) = s.into_split();
                        writers.insert(c.conn, wr);
                        let (tx, conn) = (tx.clone(), c.conn);
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; READ];
                            loop {
                                let (data, eof) = match rd.read(&mut buf).await {
                                    Ok(0) | Err(_) => (vec![], true),
                                    Ok(n) => (buf[..n].to_vec(), false),
                                };
                                if tx.send(frame(ConnData { conn, data, eof, ..Default::default() })).await.is_err() || eof {
                                    break;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        let error = format!("the client could not reach its agent {:?} at {}: {e}", c.ssh_id, path.display());
                        eprintln!("warning: {error}");
                        let _ = tx.send(frame(ConnData { conn: c.conn, eof: true, error, ..Default::default() })).await;
                    }
                }
            }
            Some(agent_down::Frame::Data(d)) => {
                let Some(w) = writers.get_mut(&d.conn) else { continue };
                let failed = !d.data.is_empty() && w.write_all(&d.data).await.is_err();
                if (d.eof || failed)
                    && let Some(mut w) = writers.remove(&d.conn)
                {
                    let _ = w.shutdown().await;
                }
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_auth_sock_and_ids_may_name_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let a = SshAgents::parse_with(&["default".into(), format!("gh={}", sock.display())], Some(sock.clone())).unwrap();
        assert_eq!(a.ids(), BTreeSet::from(["default".to_string(), "gh".to_string()]));
    }

    #[test]
    fn a_missing_auth_sock_or_a_key_file_is_refused_clearly() {
        let e = SshAgents::parse_with(&["default".into()], None).unwrap_err().to_string();
        assert!(e.contains("SSH_AUTH_SOCK is not set"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "not a socket").unwrap();
        let e = SshAgents::parse_with(&[format!("default={}", key.display())], None).unwrap_err().to_string();
        assert!(e.contains("is not a unix socket") && e.contains("key files are not supported"), "{e}");
        let e = SshAgents::parse_with(&[format!("default={}", dir.path().join("gone").display())], None).unwrap_err();
        assert!(format!("{e:#}").contains("gone"), "{e:#}");
    }
}
