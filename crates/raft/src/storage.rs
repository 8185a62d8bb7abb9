//! Durable Raft storage: the log, the hard state, the membership and the
//! latest state-machine snapshot, under the data dir.
//!
//! - `wal-NNNNNNNNNN`: the log's records in preallocated segments
//!   ([`crate::segments`]: format, torn-tail rules, why preallocated).
//!   Kinds: an entry (prost-encoded `eraftpb::Entry`; an entry at index `i`
//!   replaces every entry from `i` on, which is how Raft truncates a
//!   conflicting tail), the hard state, the conf state, and "restart" (the
//!   log starts over after an installed snapshot). The last record of a
//!   kind wins. [`DiskStorage::sync`] fdatasyncs; the node calls it before
//!   any message that acknowledges what was written.
//! - `snapshot`: `[len u32][checksum u32][prost eraftpb::Snapshot]`, written
//!   to a temporary file, fsynced and renamed, so it is either the old or
//!   the new snapshot, never half of one. Taking a snapshot then restates
//!   the hard state and membership in the current segment and deletes the
//!   oldest segments whose entries it covers; installing the leader's
//!   snapshot starts a new segment with "restart" and deletes the others.
//!
//! Recovery reads the snapshot, then replays the segments; a torn record at
//! the end (a crash mid-append) is cut off, since nothing after it was
//! acknowledged. A bad checksum anywhere else is reported, naming the file
//! and offset.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use crate::segments::{Record, SEGMENT_BYTES, SegmentLog, checksum, record, sync_dir};
pub use crate::storage_error::StorageError;
use crate::storage_error::io;

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const CONF_STATE: u8 = 3;
/// Drops every entry replayed so far: the log restarts after the snapshot
/// (written when a snapshot from the leader replaces the whole log).
const RESTART: u8 = 4;

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
    /// Lock order: `core` before `log`.
    log: Mutex<SegmentLog>,
}

impl DiskStorage {
    /// Opens (or creates) the data dir. A fresh dir starts with `voters` as
    /// the membership (empty for a node that joins later).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<(Self, Recovered), StorageError> {
        Self::open_with(dir, voters, SEGMENT_BYTES)
    }

    /// [`Self::open`] with log segments of `segment_bytes` (tests cross
    /// segment boundaries with small ones).
    pub(crate) fn open_with(dir: &Path, voters: &[u64], segment_bytes: u64) -> Result<(Self, Recovered), StorageError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut core = Core::default();
        let snap_path = dir.join("snapshot");
        let existed = snap_path.exists() || SegmentLog::exists(dir)?;
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
        let log = SegmentLog::open(dir, segment_bytes, |r: Record<'_>| {
            let corrupt = |m: String| StorageError::Corrupt { path: r.path.display().to_string(), offset: r.offset, message: m };
            match r.kind {
                ENTRY => {
                    let e = Entry::decode(r.payload).map_err(|e| corrupt(e.to_string()))?;
                    if e.index > core.snap_index() {
                        core.append(std::slice::from_ref(&e)).map_err(corrupt)?;
                    }
                    return Ok(e.index);
                }
                HARD_STATE => {
                    let hs = HardState::decode(r.payload).map_err(|e| corrupt(e.to_string()))?;
                    let floor = core.snap_index();
                    core.hard_state = hs;
                    core.hard_state.commit = core.hard_state.commit.max(floor);
                }
                CONF_STATE => core.conf_state = ConfState::decode(r.payload).map_err(|e| corrupt(e.to_string()))?,
                RESTART => core.entries.clear(),
                other => return Err(corrupt(format!("unknown record kind {other}"))),
            }
            Ok(0)
        })?;
        // Entries the commit index cannot reach (a lost tail) are harmless:
        // the leader overwrites them. A commit beyond the log is not.
        if core.hard_state.commit > core.last_index() {
            return Err(StorageError::Corrupt {
                path: dir.display().to_string(),
                offset: 0,
                message: format!("commit index {} is beyond the last entry {}", core.hard_state.commit, core.last_index()),
            });
        }
        let s = Self { dir: dir.to_owned(), core: RwLock::new(core), log: Mutex::new(log) };
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

    fn lock_log(&self) -> MutexGuard<'_, SegmentLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, buf: &[u8]) -> Result<(), StorageError> {
        self.lock_log().write(buf, 0)
    }

    /// Appends entries (replacing any from the first one's index on).
    pub fn append(&self, ents: &[Entry]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        for e in ents {
            record(&mut buf, ENTRY, &e.encode_to_vec());
        }
        let max = ents.iter().map(|e| e.index).max().unwrap_or(0);
        self.lock_log().write(&buf, max)?;
        self.wl().append(ents).map_err(|m| StorageError::Corrupt { path: self.dir.display().to_string(), offset: 0, message: m })
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

    /// The hard state as last written (durable or not).
    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.rl().conf_state.clone()
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.lock_log().sync()
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
        // A fresh segment that starts over; the old ones go once it is durable.
        // (Not the current one: its stale entries would then follow nothing.)
        let mut log = self.lock_log();
        log.roll(0)?;
        let mut buf = Vec::new();
        record(&mut buf, RESTART, &[]);
        restate(&mut buf, &c);
        log.write(&buf, 0)?;
        log.sync()?;
        log.drop_older()
    }

    /// Takes a snapshot at `index` (applied, in the log) holding `data`,
    /// and drops the entries it covers.
    pub fn compact(&self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let term = raft::Storage::term(self, index).map_err(|e| StorageError::Corrupt {
            path: self.dir.display().to_string(),
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
        // The segments the snapshot covers may hold the latest hard state
        // and membership: restate them before deleting those segments.
        let mut log = self.lock_log();
        let mut buf = Vec::new();
        restate(&mut buf, &c);
        log.write(&buf, 0)?;
        log.sync()?;
        log.drop_through(index)
    }

    /// The log's segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.lock_log().paths()
    }

    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let body = snap.encode_to_vec();
        let mut bytes = Vec::with_capacity(body.len() + 8);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(0, &body).to_le_bytes());
        bytes.extend_from_slice(&body);
        replace_file(&self.dir, "snapshot", &bytes)
    }

}

fn restate(buf: &mut Vec<u8>, c: &Core) {
    record(buf, HARD_STATE, &c.hard_state.encode_to_vec());
    record(buf, CONF_STATE, &c.conf_state.encode_to_vec());
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
    use crate::segments::HEADER;

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

    /// The segment being written and the byte range of the record whose
    /// payload contains `needle`.
    fn find(dir: &Path, needle: &[u8]) -> (PathBuf, std::ops::Range<usize>) {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
            .collect();
        segs.sort();
        for seg in segs.into_iter().rev() {
            let bytes = std::fs::read(&seg).unwrap();
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                // An entry's payload ends with its data; walk back to the header.
                let mut start = 0;
                loop {
                    let len = u32::from_le_bytes(bytes[start + 1..start + 5].try_into().unwrap()) as usize;
                    if start + HEADER + len > at {
                        return (seg, start..start + HEADER + len);
                    }
                    start += HEADER + len;
                }
            }
        }
        panic!("no record holds {needle:?}")
    }

    fn overwrite(path: &Path, at: usize, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at as u64).unwrap();
    }

    const SMALL: u64 = 4096;

    #[test]
    fn a_torn_last_record_in_a_preallocated_segment_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let big = "t".repeat(1500);
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, &big)]).unwrap();
            s.sync().unwrap();
        }
        // A multi-sector write of which only the first sector reached the disk.
        let (seg, rec) = find(dir.path(), big.as_bytes());
        let first_sector_end = (rec.start / 512 + 1) * 512;
        overwrite(&seg, first_sector_end, &vec![0; rec.end - first_sector_end]);
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 1);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), SEGMENT_BYTES, "the segment stays preallocated");
        s.append(&[entry(2, 2, "c")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!((s.last_index().unwrap(), s.term(2).unwrap()), (2, 2));
    }

    #[test]
    fn a_zeroed_tail_ends_the_log_and_stale_records_after_it_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "one"), entry(2, 1, "two"), entry(3, 1, "three")]).unwrap();
            s.sync().unwrap();
        }
        // The unsynced batch's pages landed out of order: entry 2 never
        // reached the disk, entry 3 did.
        let (seg, rec) = find(dir.path(), b"two");
        overwrite(&seg, rec.start, &vec![0; rec.len()]);
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 1);
        // A record of the same length where entry 2 was: entry 3's stale
        // bytes, right after it, must not be read on the next start.
        s.append(&[entry(2, 2, "owt")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), &[1]).unwrap();
            s.append(&[entry(1, 1, "aaaa"), entry(2, 1, "bbbb")]).unwrap();
            s.sync().unwrap();
        }
        let (seg, rec) = find(dir.path(), b"aaaa");
        overwrite(&seg, rec.end - 1, b"x");
        let e = DiskStorage::open(dir.path(), &[1]).err().unwrap().to_string();
        assert!(e.contains("wal-0000000001") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn the_log_continues_into_the_next_segment_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = "d".repeat(300);
        {
            let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
            for i in 1..=40 {
                s.append(&[entry(i, 1, &data)]).unwrap();
                s.sync().unwrap();
            }
            s.set_hard_state(&HardState { term: 1, vote: 1, commit: 40 }).unwrap();
            s.sync().unwrap();
            assert!(s.segment_paths().len() >= 3, "{:?}", s.segment_paths());
        }
        let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 40));
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 40);
        assert_eq!(s.entries(17, 18, None, GetEntriesContext::empty(false)).unwrap()[0].data, data.as_bytes());
    }

    #[test]
    fn a_record_bigger_than_a_segment_gets_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let huge = "h".repeat(3 * SMALL as usize);
        {
            let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, &huge)]).unwrap();
            s.append(&[entry(3, 1, "c")]).unwrap();
            s.sync().unwrap();
        }
        let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.entries(2, 3, None, GetEntriesContext::empty(false)).unwrap()[0].data.len(), huge.len());
    }

    #[test]
    fn a_corrupt_record_in_a_full_segment_is_an_error_even_if_it_looks_torn() {
        let dir = tempfile::tempdir().unwrap();
        let data = "e".repeat(1500);
        {
            let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
            for i in 1..=6 {
                s.append(&[entry(i, 1, &format!("{i}{data}"))]).unwrap();
            }
            s.sync().unwrap();
            assert!(s.segment_paths().len() >= 2);
        }
        let (seg, rec) = find(dir.path(), format!("1{data}").as_bytes());
        assert!(seg.ends_with("wal-0000000001"));
        overwrite(&seg, rec.end - 600, &[0; 600]);
        let e = DiskStorage::open_with(dir.path(), &[1], SMALL).err().unwrap().to_string();
        assert!(e.contains("wal-0000000001") && e.contains("checksum"), "{e}");
    }

    #[test]
    fn compaction_deletes_the_segments_it_covers_and_a_restart_sees_snapshot_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let data = "c".repeat(300);
        {
            let (s, _) = DiskStorage::open_with(dir.path(), &[1, 2], SMALL).unwrap();
            s.set_hard_state(&HardState { term: 3, vote: 2, commit: 0 }).unwrap();
            s.append(&(1..=40).map(|i| entry(i, 3, &data)).collect::<Vec<_>>()).unwrap();
            for i in 41..=60 {
                s.append(&[entry(i, 3, &data)]).unwrap();
            }
            s.set_commit(60).unwrap();
            s.sync().unwrap();
            let before = s.segment_paths();
            s.compact(55, b"state@55".to_vec()).unwrap();
            let after = s.segment_paths();
            assert!(after.len() < before.len(), "{before:?} -> {after:?}");
            assert!(before.iter().filter(|p| !after.contains(p)).all(|p| !p.exists()));
        }
        let (s, r) = DiskStorage::open_with(dir.path(), &[9], SMALL).unwrap();
        assert_eq!(r.snapshot, Some((55, b"state@55".to_vec())));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (56, 60));
        let st = s.initial_state().unwrap();
        assert_eq!((st.hard_state.term, st.hard_state.vote, st.hard_state.commit), (3, 2, 60));
        assert_eq!(st.conf_state.voters, vec![1, 2]);
    }

    #[test]
    fn an_installed_snapshot_leaves_no_stale_entries_behind() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
            for i in 1..=30 {
                s.append(&[entry(i, 1, &"old".repeat(100))]).unwrap();
            }
            s.sync().unwrap();
            assert!(s.segment_paths().len() >= 3);
            let mut snap = Snapshot { data: b"sm@20".to_vec(), ..Default::default() };
            snap.metadata = Some(SnapshotMetadata { conf_state: Some(ConfState { voters: vec![1], ..Default::default() }), index: 20, term: 4 });
            s.apply_snapshot(snap).unwrap();
            // A new segment holds the restart; the ones with entries are gone.
            assert_eq!(s.segment_paths().len(), 1);
        }
        let (s, _) = DiskStorage::open_with(dir.path(), &[1], SMALL).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (21, 20));
    }

    #[test]
    fn a_data_dir_with_the_old_single_log_file_is_read_and_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        record(&mut buf, CONF_STATE, &ConfState { voters: vec![1], ..Default::default() }.encode_to_vec());
        for i in 1..=3 {
            record(&mut buf, ENTRY, &entry(i, 1, "legacy").encode_to_vec());
        }
        record(&mut buf, HARD_STATE, &HardState { term: 1, vote: 1, commit: 3 }.encode_to_vec());
        buf.extend_from_slice(&[ENTRY, 200, 0]); // a torn last record, as the old format had them
        std::fs::write(dir.path().join("log"), &buf).unwrap();
        let (s, r) = DiskStorage::open(dir.path(), &[7]).unwrap();
        assert!(r.existed);
        assert_eq!((s.last_index().unwrap(), s.initial_state().unwrap().conf_state.voters), (3, vec![1]));
        s.append(&[entry(4, 1, "new")]).unwrap();
        s.sync().unwrap();
        s.compact(3, b"state@3".to_vec()).unwrap();
        assert!(!dir.path().join("log").exists());
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), &[7]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 4));
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
