//! The Raft log on disk: checksummed records in preallocated, zero-filled
//! segment files `wal-NNNNNNNNNN`, written in place.
//!
//! Why preallocated: appending to a growing file makes every fdatasync also
//! flush the inode (its size) and the block allocation — on this project's
//! reference disk (ext4, no journal, virtio) that doubled the p99 of a
//! durable append (docs/benchmarks.md, `rbk-bench raft --fsync-probe`).
//! Overwriting bytes that are already allocated and written leaves
//! fdatasync nothing but the data blocks to flush. (fallocate alone is not
//! enough: writing into an unwritten extent converts it, which is metadata.)
//!
//! Record: `[kind u8][len u32 LE][checksum u32 LE][payload]`, the checksum
//! being the first 4 bytes of the blake3 of kind and payload. A segment's
//! records end at an all-zero header (the untouched preallocated space) or
//! the end of the file; a batch that does not fit starts the next segment,
//! which a background thread has zero-filled and fsynced ahead of time
//! (`wal.spare`), so rolling over costs a rename, not a 4 MiB write.
//!
//! Crash safety. Only the last segment can hold unsynced bytes (rolling
//! over fsyncs the full one first). In it, a record that fails its checksum
//! is a torn write — cut off, nothing after it was acknowledged — when part
//! of it lies in a 512-byte disk sector that is still all zero (a sector
//! that never reached the disk; the idea is etcd's `isTornEntry`). Any
//! other bad record, or a bad record in an earlier segment, is corruption
//! and an error naming the file and offset. After the cut, every stale byte
//! after the end (pages of the unsynced batch that did land) is zeroed, so
//! no later replay can read an unacknowledged record.
//!
//! A data dir written before segments existed has one growing file `log`;
//! it is read as segment 0 (its torn tail is a short or bad last record, as
//! then) and deleted by the first compaction that covers it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::storage_error::{StorageError, io};

pub(crate) const HEADER: usize = 9;
/// The default segment size: big enough that rolling over is rare, small
/// enough that zero-filling the spare does not starve the log's fsyncs.
pub(crate) const SEGMENT_BYTES: u64 = 4 << 20;
/// The disk sector a write is atomic in (the torn-write rule's unit).
const SECTOR: usize = 512;
const LEGACY: &str = "log";
const SPARE: &str = "wal.spare";

pub(crate) fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"))
}

/// Appends one record to `out`.
pub(crate) fn record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(kind, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:010}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Creates `path` holding `len` zero bytes, written (not just allocated)
/// and fsynced.
fn create_zeroed(path: &Path, len: u64) -> Result<(), StorageError> {
    let mut f = File::create(path).map_err(io(path))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n]).map_err(io(path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io(path))
}

/// Whether `path` is a spare segment of `len` bytes (written as zeros and
/// fsynced before it was renamed to its name; nothing writes it after).
fn spare_ready(path: &Path, len: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == len)
}

/// The position of the last non-zero byte of `bytes`. Compares 4 KiB
/// blocks against zeros (memcmp) rather than byte by byte: every open scans
/// the whole untouched rest of the current segment (up to 4 MiB), and the
/// per-byte loop alone cost ~40 ms of `rbk build`'s start in a debug build.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut stop = bytes.len();
    while stop > 0 {
        let start = stop.saturating_sub(BLOCK);
        let block = &bytes[start..stop];
        if block != &ZEROS[..block.len()] {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        stop = start;
    }
    None
}

/// Whether the record at `[at, end)` of a preallocated segment was torn:
/// some sector's share of it is all zero (never written to the disk).
fn is_torn(bytes: &[u8], at: usize, end: usize) -> bool {
    let end = end.min(bytes.len());
    let mut start = at;
    while start < end {
        let stop = ((start / SECTOR + 1) * SECTOR).min(end);
        if bytes[start..stop].iter().all(|&b| b == 0) {
            return true;
        }
        start = stop;
    }
    false
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written into it (0: none).
    max_entry: u64,
}

/// What [`SegmentLog::open`] hands its caller for each valid record.
pub(crate) struct Record<'a> {
    pub path: &'a Path,
    pub offset: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The segment files of one data dir and the position writes go to.
pub(crate) struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// In replay order; the last is the one being written.
    segments: Vec<Segment>,
    file: File,
    /// Where the next record goes in `file`, and its preallocated size.
    pos: u64,
    len: u64,
    /// Bytes written since the last fsync.
    dirty: bool,
    /// Zero-filling the next segment in the background.
    spare: Option<JoinHandle<Result<(), StorageError>>>,
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Some(t) = self.spare.take() {
            let _ = t.join();
        }
    }
}

impl SegmentLog {
    /// Whether `dir` holds any log file.
    pub(crate) fn exists(dir: &Path) -> Result<bool, StorageError> {
        Ok(dir.join(LEGACY).exists() || !Self::list(dir)?.is_empty())
    }

    fn list(dir: &Path) -> Result<Vec<u64>, StorageError> {
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            if let Some(seq) = e.file_name().to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Opens the log under `dir` (creating its first segment if there is
    /// none), replaying every valid record through `visit` in order;
    /// `visit` returns the entry index a record holds (0: not an entry).
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        mut visit: impl FnMut(Record<'_>) -> Result<u64, StorageError>,
    ) -> Result<Self, StorageError> {
        // A spare of the right size is kept: it only gets its name once its
        // zeros are fsynced, so it is ready, and re-creating it cost every
        // start (each `rbk build`) a 4 MiB write and fsync. A half-written
        // `.tmp`, or a spare from another segment size, goes.
        let spare = dir.join(SPARE);
        if spare.exists() && !spare_ready(&spare, segment_bytes) {
            std::fs::remove_file(&spare).map_err(io(&spare))?;
        }
        let tmp = dir.join("wal.spare.tmp");
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        }
        let mut files: Vec<(u64, PathBuf, bool)> = Vec::new();
        let legacy = dir.join(LEGACY);
        if legacy.exists() {
            files.push((0, legacy, true));
        }
        files.extend(Self::list(dir)?.into_iter().map(|seq| (seq, dir.join(segment_name(seq)), false)));
        let mut segments = Vec::new();
        let mut tail = None;
        for (i, (seq, path, legacy)) in files.iter().enumerate() {
            let last = i + 1 == files.len();
            let bytes = std::fs::read(path).map_err(io(path))?;
            let (end, max_entry) = replay(path, &bytes, last, *legacy, &mut visit)?;
            if last {
                tail = Some((end, bytes));
            }
            segments.push(Segment { seq: *seq, path: path.clone(), max_entry });
        }
        let mut log = match (segments.last(), tail) {
            (Some(s), Some((end, bytes))) if !files.last().expect("a last file").2 => {
                let file = OpenOptions::new().read(true).write(true).open(&s.path).map_err(io(&s.path))?;
                // Zero whatever follows the end: a torn record, or pages of
                // an unsynced batch that reached the disk out of order.
                if let Some(stale) = last_nonzero(&bytes[end..]) {
                    tracing::warn!(path = %s.path.display(), offset = end, "cutting off a torn tail of the raft log");
                    file.write_all_at(&vec![0u8; stale + 1], end as u64).map_err(io(&s.path))?;
                    file.sync_data().map_err(io(&s.path))?;
                }
                let len = bytes.len() as u64;
                Self { dir: dir.to_owned(), segment_bytes, segments, file, pos: end as u64, len, dirty: false, spare: None }
            }
            (_, tail) => {
                // No segment yet, or only the legacy file: cut its torn
                // tail (it is never written again) and start segment 1.
                if let (Some(s), Some((end, bytes))) = (segments.last(), &tail)
                    && *end < bytes.len()
                {
                    tracing::warn!(path = %s.path.display(), offset = end, "cutting off a torn record at the end of the raft log");
                    let f = OpenOptions::new().write(true).open(&s.path).map_err(io(&s.path))?;
                    f.set_len(*end as u64).and_then(|_| f.sync_all()).map_err(io(&s.path))?;
                }
                let path = dir.join(segment_name(1));
                create_zeroed(&path, segment_bytes)?;
                sync_dir(dir)?;
                let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
                segments.push(Segment { seq: 1, path, max_entry: 0 });
                Self { dir: dir.to_owned(), segment_bytes, segments, file, pos: 0, len: segment_bytes, dirty: false, spare: None }
            }
        };
        log.prepare_spare();
        Ok(log)
    }

    fn prepare_spare(&mut self) {
        let (dir, len) = (self.dir.clone(), self.segment_bytes);
        self.spare = Some(std::thread::spawn(move || {
            if spare_ready(&dir.join(SPARE), len) {
                return Ok(());
            }
            let tmp = dir.join("wal.spare.tmp");
            create_zeroed(&tmp, len)?;
            let spare = dir.join(SPARE);
            std::fs::rename(&tmp, &spare).map_err(io(&spare))
        }));
    }

    /// Writes `buf` (whole records) at the end of the log; `max_entry` is
    /// the highest entry index among them (0: none). Durable after
    /// [`Self::sync`].
    pub(crate) fn write(&mut self, buf: &[u8], max_entry: u64) -> Result<(), StorageError> {
        if self.pos + buf.len() as u64 > self.len {
            self.roll(buf.len() as u64)?;
        }
        let cur = self.segments.last_mut().expect("a current segment");
        self.file.write_all_at(buf, self.pos).map_err(io(&cur.path))?;
        self.pos += buf.len() as u64;
        cur.max_entry = cur.max_entry.max(max_entry);
        self.dirty = true;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            let cur = self.segments.last().expect("a current segment");
            self.file.sync_data().map_err(io(&cur.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Continues in a new segment with room for at least `need` bytes.
    pub(crate) fn roll(&mut self, need: u64) -> Result<(), StorageError> {
        // Only the current segment is ever unsynced: flush it before moving on.
        self.sync()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq));
        let spare_ok = match self.spare.take().map(|t| t.join()) {
            Some(Ok(Ok(()))) => true,
            Some(Ok(Err(e))) => {
                tracing::warn!("preparing the next raft log segment: {e}; preparing it now");
                false
            }
            Some(Err(_)) | None => false,
        };
        let len = need.max(self.segment_bytes);
        if spare_ok && len == self.segment_bytes {
            let spare = self.dir.join(SPARE);
            std::fs::rename(&spare, &path).map_err(io(&path))?;
        } else {
            create_zeroed(&path, len)?;
        }
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
        self.segments.push(Segment { seq, path, max_entry: 0 });
        (self.pos, self.len) = (0, len);
        self.prepare_spare();
        Ok(())
    }

    /// Deletes the oldest segments (never the current one) whose entries
    /// are all at or below `index` — a snapshot covers them. Call after
    /// the records that restate the hard state and membership are synced.
    pub(crate) fn drop_through(&mut self, index: u64) -> Result<(), StorageError> {
        let n = self.segments[..self.segments.len() - 1].iter().take_while(|s| s.max_entry <= index).count();
        self.drop_first(n)
    }

    /// Deletes every segment but the current one.
    pub(crate) fn drop_older(&mut self) -> Result<(), StorageError> {
        self.drop_first(self.segments.len() - 1)
    }

    fn drop_first(&mut self, n: usize) -> Result<(), StorageError> {
        if n == 0 {
            return Ok(());
        }
        for s in self.segments.drain(..n) {
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
        }
        sync_dir(&self.dir)
    }

    /// The segment files in replay order (tests, diagnostics).
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

/// Replays one file's records; returns where its valid records end and the
/// highest entry index among them.
fn replay(
    path: &Path,
    bytes: &[u8],
    last: bool,
    legacy: bool,
    visit: &mut impl FnMut(Record<'_>) -> Result<u64, StorageError>,
) -> Result<(usize, u64), StorageError> {
    let corrupt = |at: usize, m: String| StorageError::Corrupt { path: path.display().to_string(), offset: at as u64, message: m };
    let mut at = 0usize;
    let mut max_entry = 0;
    while at < bytes.len() {
        let header = &bytes[at..(at + HEADER).min(bytes.len())];
        if !legacy && header.iter().all(|&b| b == 0) {
            break; // the preallocated, never written space
        }
        let torn = |end: usize| if legacy { end >= bytes.len() } else { is_torn(bytes, at, end) };
        if header.len() < HEADER {
            if last && torn(bytes.len()) {
                break;
            }
            return Err(corrupt(at, "a record header cut short".into()));
        }
        let kind = bytes[at];
        let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().expect("4")) as usize;
        let sum = u32::from_le_bytes(bytes[at + 5..at + 9].try_into().expect("4"));
        let end = at.saturating_add(HEADER).saturating_add(len);
        let Some(payload) = bytes.get(at + HEADER..end) else {
            if last && torn(bytes.len()) {
                break;
            }
            return Err(corrupt(at, format!("a record of {len} bytes runs past the end of the file")));
        };
        if checksum(kind, payload) != sum {
            if last && torn(end) {
                break;
            }
            return Err(corrupt(at, "checksum mismatch in the middle of the log".into()));
        }
        let index = visit(Record { path, offset: at as u64, kind, payload })?;
        max_entry = max_entry.max(index);
        at = end;
    }
    Ok((at, max_entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_last_nonzero_byte_across_blocks() {
        let mut bytes = vec![0u8; 3 * 4096 + 17];
        assert_eq!(last_nonzero(&bytes), None);
        bytes[5] = 1;
        assert_eq!(last_nonzero(&bytes), Some(5));
        bytes[4096 + 9] = 7;
        assert_eq!(last_nonzero(&bytes), Some(4096 + 9));
        let last = bytes.len() - 1;
        bytes[last] = 2;
        assert_eq!(last_nonzero(&bytes), Some(last));
        assert_eq!(last_nonzero(&[]), None);
    }
}
