//! Backups of a replicated coordinator's state: `rbk coordinator snapshot
//! save` copies the leader's state machine (builds, action cache, cache
//! heads, leases, token hashes) while it runs; `restore` starts a new
//! group's history from such a copy.
//!
//! A backup is the state machine, not a node's data dir: a data dir holds
//! one node's log, hard state and the peer addresses of its group, none of
//! which belongs in another group. Restore writes the same snapshot at
//! index 1 into every initial member of the new group (as a fresh group's
//! bootstrap does with an empty machine), with the new group's addresses
//! from each node's config, so the members agree without a log to replay.
//!
//! The file: [`MAGIC`], the applied index it was taken at (u64 LE), the
//! length of the body (u64 LE), the body's BLAKE3 hash (32 bytes), then the
//! body (the snapshot encoding the nodes themselves use). A truncated or
//! altered file is refused before anything is written.

use std::path::Path;
use std::sync::atomic::Ordering;

use rbk_coordinator::raft_config::RaftConfig;

use crate::snapshot_format;
use crate::shared::Shared;
use crate::storage::DiskStorage;

/// The first bytes of every backup file (and its format version).
pub const MAGIC: &[u8; 16] = b"rbk-raft-backup1";
const HEADER: usize = MAGIC.len() + 8 + 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: not an rbk coordinator backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC))]
    NotABackup { path: String },
    #[error("{path}: truncated ({have} bytes of the {want} its header announces)")]
    Truncated { path: String, have: u64, want: u64 },
    #[error("{path}: the body does not match the hash in the header (altered or corrupt)")]
    Checksum { path: String },
    #[error("{path}: the state does not decode: {message}")]
    Decode { path: String, message: String },
    #[error("[raft] data_dir {dir} already holds a node's data; restore only into a new, empty data dir (stop the node and move it away first)")]
    NotEmpty { dir: String },
    #[error("[raft] join = true: a joining node gets the state from the leader; restore into the group's initial members (join = false) instead")]
    Joining,
    #[error("encoding the state: {0}")]
    Encode(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// A backup as read from a file and checked.
#[derive(Debug)]
pub struct Backup {
    /// The applied index of the node it was taken on (at least).
    pub index: u64,
    body: Vec<u8>,
}

impl Backup {
    /// Checks `bytes` (read from `path`, named in errors): header, length,
    /// hash, and that the state decodes.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, BackupError> {
        let path_s = || path.display().to_string();
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup { path: path_s() });
        }
        if bytes.len() < HEADER {
            return Err(BackupError::Truncated { path: path_s(), have: bytes.len() as u64, want: HEADER as u64 });
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let index = u64_at(MAGIC.len());
        let len = u64_at(MAGIC.len() + 8);
        let want = (HEADER as u64).saturating_add(len);
        if bytes.len() as u64 != want {
            return Err(BackupError::Truncated { path: path_s(), have: bytes.len() as u64, want });
        }
        let body = &bytes[HEADER..];
        if blake3::hash(body).as_bytes() != &bytes[MAGIC.len() + 16..HEADER] {
            return Err(BackupError::Checksum { path: path_s() });
        }
        snapshot_format::restore(body).map_err(|message| BackupError::Decode { path: path_s(), message })?;
        Ok(Backup { index, body: body.to_vec() })
    }
}

/// This node's state machine as a backup file's bytes: a clone taken under
/// the state's read lock, so one consistent state (every entry applied up
/// to some index, none half-applied).
pub(crate) fn save(shared: &Shared) -> Result<Vec<u8>, BackupError> {
    let (machine, index) = {
        let m = shared.machine.read().unwrap_or_else(|e| e.into_inner());
        (m.clone(), shared.applied.load(Ordering::Acquire))
    };
    let peers = shared.peers.read().unwrap_or_else(|e| e.into_inner()).clone();
    let body = snapshot_format::encode_snapshot(&machine, &peers).map_err(BackupError::Encode)?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Starts the data dir of `config`'s node (which must not hold data yet)
/// from `backup`, with the group's voters and addresses from `config`.
/// Run it for every initial member of the new group, then start them.
pub fn restore_into(config: &RaftConfig, backup: &Backup) -> Result<(), BackupError> {
    if config.join {
        return Err(BackupError::Joining);
    }
    let dir = &config.data_dir;
    let occupied = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(BackupError::NotEmpty { dir: dir.display().to_string() });
    }
    let (machine, _old_peers) = snapshot_format::restore(&backup.body).map_err(|message| BackupError::Decode { path: dir.display().to_string(), message })?;
    let data = snapshot_format::encode_snapshot(&machine, config.peers()).map_err(BackupError::Encode)?;
    let voters: Vec<u64> = config.peers().keys().copied().collect();
    let (storage, recovered) = DiskStorage::open(dir, &voters)?;
    if recovered.existed {
        return Err(BackupError::NotEmpty { dir: dir.display().to_string() });
    }
    storage.bootstrap(&voters, data)?;
    storage.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(shared: &Shared) -> Vec<u8> {
        save(shared).unwrap()
    }

    fn shared() -> Shared {
        let (serving_tx, _) = tokio::sync::watch::channel(false);
        Shared {
            id: 1,
            machine: Default::default(),
            peers: Default::default(),
            leader_id: Default::default(),
            term: Default::default(),
            applied: 7.into(),
            serving: Default::default(),
            serving_tx,
            voters: Default::default(),
            replication: Default::default(),
        }
    }

    #[test]
    fn a_saved_backup_parses_with_its_index() {
        let b = Backup::parse(Path::new("b"), &file(&shared())).unwrap();
        assert_eq!(b.index, 7);
    }

    #[test]
    fn a_truncated_backup_is_refused_naming_the_file() {
        let bytes = file(&shared());
        let e = Backup::parse(Path::new("backup.rbk"), &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(e, BackupError::Truncated { .. }), "{e}");
        assert!(e.to_string().starts_with("backup.rbk: truncated"), "{e}");
    }

    #[test]
    fn an_altered_backup_is_refused() {
        let mut bytes = file(&shared());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(Backup::parse(Path::new("b"), &bytes), Err(BackupError::Checksum { .. })));
    }

    #[test]
    fn another_file_is_not_a_backup() {
        assert!(matches!(Backup::parse(Path::new("b"), b"[raft]\nnode_id = 1\n"), Err(BackupError::NotABackup { .. })));
    }
}
