//! The `[raft]` section of the coordinator config: present = this
//! coordinator is one node of a replicated (Raft) cluster (crate `rbk-raft`);
//! absent = the single-node in-memory state.
//!
//! ```toml
//! [raft]
//! node_id = 1
//! data_dir = "raft"                 # log, hard state, snapshots (relative to this file)
//! listen = "0.0.0.0:7071"           # the raft port (peer traffic + membership)
//! secret_file = "cluster.secret"    # required: peers and `members` must present it
//! snapshot_entries = 10000          # snapshot + compact after this many applied entries
//! tick_ms = 100
//! election_ticks = 10
//! heartbeat_ticks = 2
//! join = false                      # true: start empty and wait to be added
//! [raft.tls]                        # optional: mutual TLS between peers
//! cert = "raft/tls.crt"             # this node's certificate (server and client auth)
//! key = "raft/tls.key"
//! ca = "raft/ca.crt"                # the CA that signed every peer's certificate
//! [raft.peers]                      # the initial voters, this node included
//! 1 = { raft = "10.0.0.1:7071", api = "http://10.0.0.1:7070" }
//! 2 = { raft = "10.0.0.2:7071", api = "http://10.0.0.2:7070" }
//! 3 = { raft = "10.0.0.3:7071", api = "http://10.0.0.3:7070" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// This node's id (> 0, unique in the cluster, never reused for a
    /// different machine's data).
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The shared secret (>= 16 characters) every raft RPC must carry:
    /// peer traffic and `rbk coordinator members`. Required: without it
    /// anyone who reaches the raft port could change the membership (an
    /// `Option` only so that its absence is reported by [`Self::resolve`]
    /// naming the key).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Node id (a TOML key, so a string) → addresses; see [`Self::peers`].
    #[serde(default, rename = "peers")]
    peer_table: BTreeMap<String, PeerAddress>,
    #[serde(skip)]
    peers: BTreeMap<u64, PeerAddress>,
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "default_election_ticks")]
    pub election_ticks: usize,
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: usize,
    /// A node added at run time (`rbk coordinator members add`) starts with
    /// no voters of its own and learns the membership from the leader.
    #[serde(default)]
    pub join: bool,
    /// Mutual TLS on the raft port: peers (and `rbk coordinator members`)
    /// must present a certificate signed by `ca`, and each node dials its
    /// peers over TLS with its own. The secret is still required: TLS
    /// proves a machine, the secret the cluster.
    #[serde(default)]
    pub tls: Option<RaftTls>,
}

/// `[raft.tls]`: PEM files, relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Where one node listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddress {
    /// host:port of its raft port.
    pub raft: String,
    /// URL of its client API (followers redirect clients there).
    pub api: String,
}

fn default_snapshot_entries() -> u64 {
    10_000
}
fn default_tick_ms() -> u64 {
    100
}
fn default_election_ticks() -> usize {
    10
}
fn default_heartbeat_ticks() -> usize {
    2
}

impl RaftConfig {
    /// The initial voters and where they listen.
    pub fn peers(&self) -> &BTreeMap<u64, PeerAddress> {
        &self.peers
    }

    /// Checks the section and resolves relative paths against `base`.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        for (id, addr) in &self.peer_table {
            let n: u64 = id.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("raft.peers: key {id:?} is not a node id (an integer > 0)"))?;
            if addr.raft.is_empty() || !(addr.api.starts_with("http://") || addr.api.starts_with("https://")) {
                return Err(format!("raft.peers.{id}: raft must be host:port and api an http(s):// URL"));
            }
            self.peers.insert(n, addr.clone());
        }
        if self.node_id == 0 {
            return Err("raft.node_id must be > 0".into());
        }
        if !self.join && !self.peers.contains_key(&self.node_id) {
            return Err(format!("raft.peers must list this node (node_id {}) unless raft.join = true", self.node_id));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err("raft.election_ticks must exceed raft.heartbeat_ticks (> 0)".into());
        }
        if self.tick_ms == 0 || self.snapshot_entries == 0 {
            return Err("raft.tick_ms and raft.snapshot_entries must be > 0".into());
        }
        self.data_dir = base.join(&self.data_dir);
        if let Some(t) = &mut self.tls {
            for p in [&mut t.cert, &mut t.key, &mut t.ca] {
                *p = base.join(&*p);
            }
        }
        match &mut self.secret_file {
            Some(s) => *s = base.join(&*s),
            None => {
                return Err("raft.secret_file is required: the raft port (peer traffic and `rbk coordinator members`) accepts only callers presenting this shared secret (a file of >= 16 random characters, the same on every node)"
                    .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RaftConfig, String> {
        let mut c: RaftConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.resolve(Path::new("/etc/rbk"))?;
        Ok(c)
    }

    #[test]
    fn peers_are_keyed_by_node_id_and_paths_resolve() {
        let c = parse(
            "node_id = 2\ndata_dir = \"raft\"\nlisten = \"127.0.0.1:1\"\nsecret_file = \"s\"\n[peers]\n1 = { raft = \"h:1\", api = \"http://h:2\" }\n2 = { raft = \"h:3\", api = \"http://h:4\" }\n",
        )
        .unwrap();
        assert_eq!(c.peers()[&2].raft, "h:3");
        assert_eq!(c.data_dir, Path::new("/etc/rbk/raft"));
        assert_eq!(c.election_ticks, 10);
    }

    #[test]
    fn raft_without_a_secret_file_is_refused_naming_the_key() {
        let e = parse("node_id = 1\ndata_dir = \"r\"\nlisten = \"127.0.0.1:1\"\n[peers]\n1 = { raft = \"h:1\", api = \"http://h:2\" }\n").unwrap_err();
        assert!(e.starts_with("raft.secret_file is required"), "{e}");
    }

    #[test]
    fn a_node_missing_from_its_own_peers_is_refused() {
        let e = parse("node_id = 3\ndata_dir = \"r\"\nlisten = \"127.0.0.1:1\"\n[peers]\n1 = { raft = \"h:1\", api = \"http://h:2\" }\n").unwrap_err();
        assert!(e.contains("node_id 3"), "{e}");
    }

    #[test]
    fn a_non_numeric_peer_key_is_refused_naming_it() {
        let e = parse("node_id = 1\ndata_dir = \"r\"\nlisten = \"127.0.0.1:1\"\n[peers]\none = { raft = \"h:1\", api = \"http://h:2\" }\n").unwrap_err();
        assert!(e.contains("\"one\""), "{e}");
    }
}
