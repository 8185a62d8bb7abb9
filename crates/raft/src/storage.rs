//! Durable Raft storage: the log, the hard state, the membership and the
//! latest state-machine snapshot, in two files under the data dir.
//!
//! - `log`: append-only records `[kind u8][len u32 LE][checksum u32 LE]
//!   [payload]`, the checksum being the first 4 bytes of the blake3 of kind
//!   and payload. Kinds: an entry (prost-encoded `eraftpb::Entry`; an entry
//!   at index `i` replaces every entry from `i` on, which is how Raft
//!   truncates a conflicting tail), the hard state, the conf state. The
//!   last record of a kind wins. [`DiskStorage::sync`] fsyncs; the node
//!   calls it before any message that acknowledges what was written.
//! - `snapshot`: `[len u32][checksum u32][prost eraftpb::Snapshot]`, written
//!   to a temporary file, fsynced and renamed, so it is either the old or
//!   the new snapshot, never half of one. Taking a snapshot then rewrites
//!   `log` (same rename dance) without the entries it covers.
//!
//! Recovery reads the snapshot, then replays the log; a torn record at the
//! end (a crash mid-append) is cut off, since nothing after it was
//! acknowledged. A bad checksum anywhere else is reported, naming the file
//! and offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const CONF_STATE: u8 = 3;
const HEADER: usize = 9;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft storage {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("raft storage {path} at byte {offset}: {message}")]
    Corrupt { path: String, offset: u64, message: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.display().to_string(), source }
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"))
}

fn record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(kind, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The in-memory view raft-rs reads through [`raft::Storage`].
#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot, with the state machine's bytes; its metadata
    /// says which index and term the log starts after.
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl Core {
    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn snap_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }
    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snap_index(), |e| e.index)
    }
    fn append(&mut self, ents: &[Entry]) -> Result<(), String> {
        let Some(first) = ents.first() else { return Ok(()) };
        if first.index <= self.snap_index() || first.index > self.last_index() + 1 {
            return Err(format!(
                "entry {} does not follow the log (snapshot at {}, last entry {})",
                first.index,
                self.snap_index(),
                self.last_index()
            ));
        }
        let keep = (first.index - self.snap_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }
}

/// What a reopened data dir held.
pub struct Recovered {
    /// The snapshot's state-machine bytes and index (`None`: no snapshot).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Whether anything at all was on disk.
    pub existed: bool,
}

/// Raft storage backed by files under one directory.
pub struct DiskStorage {
    dir: PathBuf,
    core: RwLock<Core>,
    log: std::sync::Mutex<File>,
    /// Bytes written since the last fsync.
    dirty: std::sync::atomic::AtomicBool,
}

impl DiskStorage {
    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Opens (or creates) the data dir. A fresh dir starts with `voters` as
    /// the membership (empty for a node that joins later).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<(Self, Recovered), StorageError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut core = Core::default();
        let snap_path = dir.join("snapshot");
        let log_path = dir.join("log");
        let existed = snap_path.exists() || log_path.exists();
        let mut recovered = Recovered { snapshot: None, existed };
        if snap_path.exists() {
            let bytes = std::fs::read(&snap_path).map_err(io(&snap_path))?;
            let corrupt = |m: &str| StorageError::Corrupt { path: snap_path.display().to_string(), offset: 0, message: m.into() };
            if bytes.len() < 8 {
                return Err(corrupt("shorter than its header"));
            }
            let len = u32::from_le_bytes(bytes[..4].try_into().expect("4")) as usize;
            let sum = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
            let body = bytes.get(8..8 + len).ok_or_else(|| corrupt("truncated"))?;
            if checksum(0, body) != sum {
                return Err(corrupt("checksum mismatch"));
            }
            let snap = Snapshot::decode(body).map_err(|e| corrupt(&e.to_string()))?;
            let meta = snap.get_metadata();
            core.hard_state.commit = meta.index;
            core.hard_state.term = meta.term;
            core.conf_state = meta.get_conf_state().clone();
            recovered.snapshot = Some((meta.index, snap.data.clone()));
            core.snapshot = snap;
        } else if !existed {
            core.conf_state.voters = voters.to_vec();
        }
        if log_path.exists() {
            let mut bytes = Vec::new();
            File::open(&log_path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(&log_path))?;
            let mut at = 0usize;
            while at < bytes.len() {
                let corrupt = |m: String| StorageError::Corrupt { path: log_path.display().to_string(), offset: at as u64, message: m };
                if bytes.len() - at < HEADER {
                    break;
                }
                let kind = bytes[at];
                let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().expect("4")) as usize;
                let sum = u32::from_le_bytes(bytes[at + 5..at + 9].try_into().expect("4"));
                let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
                if checksum(kind, payload) != sum {
                    if at + HEADER + len == bytes.len() {
                        break; // a torn last record
                    }
                    return Err(corrupt("checksum mismatch in the middle of the log".into()));
                }
                match kind {
                    ENTRY => {
                        let e = Entry::decode(payload).map_err(|e| corrupt(e.to_string()))?;
                        if e.index > core.snap_index() {
                            core.append(&[e]).map_err(corrupt)?;
                        }
                    }
                    HARD_STATE => {
                        let hs = HardState::decode(payload).map_err(|e| corrupt(e.to_string()))?;
                        let floor = core.snap_index();
                        core.hard_state = hs;
                        core.hard_state.commit = core.hard_state.commit.max(floor);
                    }
                    CONF_STATE => core.conf_state = ConfState::decode(payload).map_err(|e| corrupt(e.to_string()))?,
                    other => return Err(corrupt(format!("unknown record kind {other}"))),
                }
                at += HEADER + len;
            }
            if at < bytes.len() {
                tracing::warn!(path = %log_path.display(), offset = at, "cutting off a torn record at the end of the raft log");
                let f = OpenOptions::new().write(true).open(&log_path).map_err(io(&log_path))?;
                f.set_len(at as u64).map_err(io(&log_path))?;
                f.sync_all().map_err(io(&log_path))?;
            }
        }
        // Entries the commit index cannot reach (a lost tail) are harmless:
        // the leader overwrites them. A commit beyond the log is not.
        if core.hard_state.commit > core.last_index() {
            return Err(StorageError::Corrupt {
                path: log_path.display().to_string(),
                offset: 0,
                message: format!("commit index {} is beyond the last entry {}", core.hard_state.commit, core.last_index()),
            });
        }
        let file = OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path))?;
        let s = Self {
            dir: dir.to_owned(),
            core: RwLock::new(core),
            log: std::sync::Mutex::new(file),
            dirty: Default::default(),
        };
        if !existed {
            let cs = s.rl().conf_state.clone();
            s.set_conf_state(&cs)?;
            s.sync()?;
            sync_dir(dir)?;
        }
        Ok((s, recovered))
    }

    fn rl(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|e| e.into_inner())
    }
    fn wl(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, buf: &[u8]) -> Result<(), StorageError> {
        let path = self.log_path();
        self.log.lock().unwrap_or_else(|e| e.into_inner()).write_all(buf).map_err(io(&path))?;
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Appends entries (replacing any from the first one's index on).
    pub fn append(&self, ents: &[Entry]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        for e in ents {
            record(&mut buf, ENTRY, &e.encode_to_vec());
        }
        self.write(&buf)?;
        self.wl().append(ents).map_err(|m| StorageError::Corrupt { path: self.log_path().display().to_string(), offset: 0, message: m })
    }

    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        record(&mut buf, HARD_STATE, &hs.encode_to_vec());
        self.write(&buf)?;
        self.wl().hard_state = hs.clone();
        Ok(())
    }

    pub fn set_commit(&self, commit: u64) -> Result<(), StorageError> {
        let hs = {
            let mut c = self.wl();
            c.hard_state.commit = commit;
            c.hard_state.clone()
        };
        let mut buf = Vec::new();
        record(&mut buf, HARD_STATE, &hs.encode_to_vec());
        self.write(&buf)
    }

    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        record(&mut buf, CONF_STATE, &cs.encode_to_vec());
        self.write(&buf)?;
        self.wl().conf_state = cs.clone();
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        self.rl().conf_state.clone()
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let path = self.log_path();
            self.log.lock().unwrap_or_else(|e| e.into_inner()).sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Index of the latest snapshot (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.rl().snap_index()
    }

    /// Starts a new cluster member's history with a snapshot at index 1
    /// holding the initial membership and `data`. Every initial member does
    /// the same, so they agree; a node added later has no entry 1 and gets
    /// the leader's snapshot — which is how it learns the voters (static
    /// membership is nowhere in the log).
    pub fn bootstrap(&self, voters: &[u64], data: Vec<u8>) -> Result<(), StorageError> {
        let conf_state = ConfState { voters: voters.to_vec(), ..Default::default() };
        let mut snap = Snapshot { data, ..Default::default() };
        snap.metadata = Some(SnapshotMetadata { conf_state: Some(conf_state), index: 1, term: 1 });
        self.apply_snapshot(snap)
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub fn apply_snapshot(&self, snap: Snapshot) -> Result<(), StorageError> {
        self.write_snapshot(&snap)?;
        let mut c = self.wl();
        let meta = snap.get_metadata().clone();
        c.entries.clear();
        c.hard_state.commit = c.hard_state.commit.max(meta.index);
        c.hard_state.term = c.hard_state.term.max(meta.term);
        c.conf_state = meta.get_conf_state().clone();
        c.snapshot = snap;
        self.rewrite_log(&c)
    }

    /// Takes a snapshot at `index` (applied, in the log) holding `data`,
    /// and drops the entries it covers.
    pub fn compact(&self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let term = raft::Storage::term(self, index).map_err(|e| StorageError::Corrupt {
            path: self.log_path().display().to_string(),
            offset: 0,
            message: format!("term of entry {index}: {e}"),
        })?;
        let mut snap = Snapshot { data, ..Default::default() };
        snap.metadata = Some(SnapshotMetadata { conf_state: Some(self.conf_state()), index, term });
        self.write_snapshot(&snap)?;
        let mut c = self.wl();
        let drop = (index - c.snap_index()) as usize;
        let drop = drop.min(c.entries.len());
        c.entries.drain(..drop);
        c.snapshot = snap;
        self.rewrite_log(&c)
    }

    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let body = snap.encode_to_vec();
        let mut bytes = Vec::with_capacity(body.len() + 8);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(0, &body).to_le_bytes());
        bytes.extend_from_slice(&body);
        replace_file(&self.dir, "snapshot", &bytes)
    }

    fn rewrite_log(&self, c: &Core) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        record(&mut buf, HARD_STATE, &c.hard_state.encode_to_vec());
        record(&mut buf, CONF_STATE, &c.conf_state.encode_to_vec());
        for e in &c.entries {
            record(&mut buf, ENTRY, &e.encode_to_vec());
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        replace_file(&self.dir, "log", &buf)?;
        let path = self.log_path();
        *log = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        self.dirty.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `name` in `dir` atomically and durably.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn unavailable(e: RaftStorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.rl();
        Ok(RaftState { hard_state: c.hard_state.clone(), conf_state: c.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let c = self.rl();
        if low <= c.snap_index() {
            return Err(unavailable(RaftStorageError::Compacted));
        }
        if high > c.last_index() + 1 {
            return Err(unavailable(RaftStorageError::Unavailable));
        }
        let base = c.snap_index() + 1;
        let slice = &c.entries[(low - base) as usize..(high - base) as usize];
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in slice {
            size += e.encoded_len() as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.rl();
        if idx == c.snap_index() {
            return Ok(c.snap_term());
        }
        if idx < c.snap_index() {
            return Err(unavailable(RaftStorageError::Compacted));
        }
        if idx > c.last_index() {
            return Err(unavailable(RaftStorageError::Unavailable));
        }
        Ok(c.entries[(idx - c.snap_index() - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.rl().snap_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let c = self.rl();
        if c.snap_index() < request_index || c.snap_index() == 0 {
            return Err(unavailable(RaftStorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(c.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry { index, term, data: data.as_bytes().to_vec(), ..Default::default() }
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, r) = DiskStorage::open(dir.path(), &[1, 2, 3]).unwrap();
            assert!(!r.existed);
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
            s.set_hard_state(&HardState { term: 1, vote: 2, commit: 2 }).unwrap();
            s.sync().unwrap();
        }
        let (s, r) = DiskStorage::open(dir.path(), &[9]).unwrap();
        assert!(r.existed);
        assert_eq!(s.last_index().unwrap(), 2);
        let st = s.initial_state().unwrap();
        assert_eq!((st.hard_state.vote, st.hard_state.commit), (2, 2));
        assert_eq!(st.conf_state.voters, vec![1, 2, 3], "membership comes from disk, not the new config");
        assert_eq!(s.entries(2, 3, None, GetEntriesContext::empty(false)).unwrap()[0].data, b"b");
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]).unwrap();
            s.append(&[entry(2, 2, "B")]).unwrap();
            assert_eq!(s.last_index().unwrap(), 2);
            s.sync().unwrap();
        }
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
            s.sync().unwrap();
        }
        let log = dir.path().join("log");
        let len = std::fs::metadata(&log).unwrap().len();
        OpenOptions::new().write(true).open(&log).unwrap().set_len(len - 1).unwrap();
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 1);
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "aaaa"), entry(2, 1, "bbbb")]).unwrap();
            s.sync().unwrap();
        }
        let log = dir.path().join("log");
        let mut bytes = std::fs::read(&log).unwrap();
        let at = bytes.windows(4).position(|w| w == b"aaaa").unwrap();
        bytes[at] = b'x';
        std::fs::write(&log, bytes).unwrap();
        let e = DiskStorage::open(dir.path(), &[1]).err().unwrap().to_string();
        assert!(e.contains("log") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn compaction_keeps_the_tail_and_the_snapshot_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&(1..=5).map(|i| entry(i, 1, "x")).collect::<Vec<_>>()).unwrap();
            s.set_hard_state(&HardState { term: 1, vote: 1, commit: 5 }).unwrap();
            s.compact(3, b"state@3".to_vec()).unwrap();
            assert_eq!(s.first_index().unwrap(), 4);
            assert_eq!(s.term(3).unwrap(), 1);
            assert!(matches!(s.entries(2, 4, None, GetEntriesContext::empty(false)), Err(raft::Error::Store(RaftStorageError::Compacted))));
        }
        let (s, r) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(r.snapshot, Some((3, b"state@3".to_vec())));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 5));
        assert_eq!(s.snapshot(0, 2).unwrap().data, b"state@3");
    }

    #[test]
    fn a_bootstrapped_node_starts_after_index_one_with_its_voters() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), &[]).unwrap();
        s.bootstrap(&[1, 2, 3], b"empty".to_vec()).unwrap();
        drop(s);
        let (s, r) = DiskStorage::open(dir.path(), &[]).unwrap();
        assert_eq!(r.snapshot, Some((1, b"empty".to_vec())));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 1));
        let st = s.initial_state().unwrap();
        assert_eq!((st.conf_state.voters, st.hard_state.commit), (vec![1, 2, 3], 1));
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), &[]).unwrap();
        let mut snap = Snapshot { data: b"sm".to_vec(), ..Default::default() };
        snap.metadata = Some(SnapshotMetadata { conf_state: Some(ConfState { voters: vec![1, 2], ..Default::default() }), index: 10, term: 3 });
        s.apply_snapshot(snap).unwrap();
        drop(s);
        let (s, r) = DiskStorage::open(dir.path(), &[]).unwrap();
        assert_eq!(r.snapshot.unwrap().0, 10);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2]);
        assert_eq!(s.last_index().unwrap(), 10);
    }
}
