//! The manifest: every entry of a snapshot, and where each file's bytes live.
//!
//! Encoded as a small versioned binary format (not JSON) because paths are
//! arbitrary bytes on Unix, because a 50,000-entry manifest must encode and
//! decode in milliseconds for the unchanged-tree fast path, and because the
//! decoder must bound every count and length by the bytes actually present
//! (manifests are untrusted). Layout, after zstd decompression:
//!
//! ```text
//! magic "RBKSNAP" version u8(=1)
//! namespace: bytes        created_unix_ns: zigzag varint
//! packs: varint n, n × (hash[32], size varint)
//! entries: varint n, n × entry  (sorted by path, unique)
//! entry: path bytes, kind u8 (0 dir, 1 file, 2 symlink, 3 hard link),
//!        mode varint (permission bits only), uid varint, gid varint,
//!        mtime secs zigzag varint, mtime nanos varint, then by kind:
//!   file:     digest (hash[32], size varint), chunks varint n,
//!             n × chunk: [hash[32], size varint — omitted when n = 1, the
//!             chunk is then the whole file], pack index varint,
//!             offset varint, stored length varint, codec u8 (0 raw, 1 zstd)
//!   symlink:  target bytes
//!   hard link: path bytes of the file it links to
//! bytes: varint length then the bytes
//! ```
//!
//! The stored blob is `magic "RBKSNAPZ"` followed by one zstd frame of the
//! above, so the snapshot is named by the digest of that blob.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use rbk_store::Digest;

use crate::error::{SnapshotError, SnapshotResult, show};

/// A snapshot's manifest. Entries are sorted by path bytes; parents precede
/// children because `/` sorts before every other byte a name may hold… except
/// the bytes below it, so code never relies on that ordering for parent-first
/// walks (restore sorts by depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The tenant/project the snapshot belongs to (see the crate docs on
    /// dedupe scope).
    pub namespace: String,
    /// When the capture (or merge) committed: orders concurrent commits in a
    /// three-way merge ("the later commit wins").
    pub created_unix_ns: i64,
    pub entries: Vec<Entry>,
}

/// One path in the tree. `path` is relative, `/`-separated, never empty,
/// with no `.`/`..` components (checked by [`Manifest::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`), never file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(FileContent),
    /// The link target, never followed by restore.
    Symlink(Vec<u8>),
    /// Another path of the same inode; it names a `File` entry.
    Hardlink(Vec<u8>),
}

/// A file's bytes: the concatenation of its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileContent {
    /// blake3 of the whole file; its size is the file's size.
    pub digest: Digest,
    pub chunks: Vec<ChunkRef>,
}

/// Where one chunk of content lives: a byte range of a pack blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// blake3 of the chunk's uncompressed bytes (its size is their length).
    pub digest: Digest,
    pub pack: Digest,
    pub offset: u64,
    pub stored_len: u64,
    pub codec: Codec,
}

/// How a chunk is stored inside its pack. Each chunk is compressed on its
/// own so that any one chunk can be fetched with a ranged read and
/// decompressed and verified without the rest of the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Entry {
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File(c) => c.digest.size(),
            _ => 0,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }
}

impl Manifest {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), created_unix_ns: now_unix_ns(), entries: Vec::new() }
    }

    /// Every pack any file of this snapshot reads from.
    pub fn packs(&self) -> BTreeSet<Digest> {
        self.chunks().map(|c| c.pack).collect()
    }

    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entries.iter().flat_map(|e| match &e.kind {
            EntryKind::File(c) => c.chunks.as_slice(),
            _ => &[],
        })
    }

    /// Total bytes of file content (hard links counted once).
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(Entry::size).sum()
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_slice().cmp(path)).ok().map(|i| &self.entries[i])
    }

    /// Sorts entries by path; call after building a manifest by hand.
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// Checks every rule restore relies on. Restore calls this on every
    /// manifest it reads; nothing else should be trusted about one.
    pub fn validate(&self) -> SnapshotResult<()> {
        let mut kinds: HashMap<&[u8], &EntryKind> = HashMap::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            validate_path(&e.path)?;
            if i > 0 && self.entries[i - 1].path >= e.path {
                if self.entries[i - 1].path == e.path {
                    return Err(SnapshotError::bad(Some(&e.path), "duplicate path"));
                }
                return Err(SnapshotError::bad(Some(&e.path), "entries are not sorted by path"));
            }
            if e.mode & !0o7777 != 0 {
                return Err(SnapshotError::bad(
                    Some(&e.path),
                    format!("mode {:o} has file-type bits (device nodes and other special files are not allowed)", e.mode),
                ));
            }
            if e.mtime.nanos >= 1_000_000_000 {
                return Err(SnapshotError::bad(Some(&e.path), format!("mtime nanoseconds {} out of range", e.mtime.nanos)));
            }
            kinds.insert(&e.path, &e.kind);
        }
        for e in &self.entries {
            // Every ancestor must be a directory of this manifest: a path
            // through a symlink (or a file) would let restore write elsewhere.
            let mut end = 0;
            while let Some(pos) = e.path[end..].iter().position(|&b| b == b'/') {
                let parent = &e.path[..end + pos];
                match kinds.get(parent) {
                    Some(EntryKind::Dir) => {}
                    Some(EntryKind::Symlink(_)) => {
                        return Err(SnapshotError::bad(Some(&e.path), format!("path goes through symlink {:?}", show(parent))));
                    }
                    Some(_) => return Err(SnapshotError::bad(Some(&e.path), format!("parent {:?} is not a directory", show(parent)))),
                    None => return Err(SnapshotError::bad(Some(&e.path), format!("parent {:?} is not in the manifest", show(parent)))),
                }
                end += pos + 1;
            }
            match &e.kind {
                EntryKind::File(c) => validate_content(&e.path, c)?,
                EntryKind::Hardlink(target) => match kinds.get(target.as_slice()) {
                    Some(EntryKind::File(_)) => {}
                    _ => return Err(SnapshotError::bad(Some(&e.path), format!("hard link target {:?} is not a file of this snapshot", show(target)))),
                },
                EntryKind::Symlink(target) => {
                    if target.is_empty() || target.contains(&0) {
                        return Err(SnapshotError::bad(Some(&e.path), "symlink target is empty or holds a NUL byte"));
                    }
                }
                EntryKind::Dir => {}
            }
        }
        Ok(())
    }

    /// Serialises (and compresses) the manifest into the blob that names the
    /// snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<Digest> = self.packs().into_iter().collect();
        packs.sort();
        let pack_index: HashMap<Digest, u64> = packs.iter().enumerate().map(|(i, d)| (*d, i as u64)).collect();
        let mut w = Vec::with_capacity(64 + self.entries.len() * 96);
        w.extend_from_slice(BODY_MAGIC);
        put_bytes(&mut w, self.namespace.as_bytes());
        put_varint(&mut w, zigzag(self.created_unix_ns));
        put_varint(&mut w, packs.len() as u64);
        for p in &packs {
            put_digest(&mut w, p);
        }
        put_varint(&mut w, self.entries.len() as u64);
        for e in &self.entries {
            put_bytes(&mut w, &e.path);
            w.push(match e.kind {
                EntryKind::Dir => 0,
                EntryKind::File(_) => 1,
                EntryKind::Symlink(_) => 2,
                EntryKind::Hardlink(_) => 3,
            });
            put_varint(&mut w, e.mode as u64);
            put_varint(&mut w, e.uid as u64);
            put_varint(&mut w, e.gid as u64);
            put_varint(&mut w, zigzag(e.mtime.secs));
            put_varint(&mut w, e.mtime.nanos as u64);
            match &e.kind {
                EntryKind::Dir => {}
                EntryKind::File(c) => {
                    put_digest(&mut w, &c.digest);
                    put_varint(&mut w, c.chunks.len() as u64);
                    // A single chunk is the whole file: its digest is elided.
                    let single = c.chunks.len() == 1;
                    for ch in &c.chunks {
                        if !single {
                            put_digest(&mut w, &ch.digest);
                        }
                        put_varint(&mut w, pack_index[&ch.pack]);
                        put_varint(&mut w, ch.offset);
                        put_varint(&mut w, ch.stored_len);
                        w.push(ch.codec as u8);
                    }
                }
                EntryKind::Symlink(t) | EntryKind::Hardlink(t) => put_bytes(&mut w, t),
            }
        }
        let mut out = Vec::with_capacity(w.len() / 3 + 16);
        out.extend_from_slice(BLOB_MAGIC);
        out.extend_from_slice(&zstd::bulk::compress(&w, 3).expect("zstd compression of an in-memory buffer cannot fail"));
        out
    }

    /// Parses a manifest blob and validates it. Every count and length is
    /// bounded by the bytes present, and decompression is capped, so a
    /// hostile blob costs at most [`MAX_MANIFEST_BYTES`] of memory.
    pub fn decode(blob: &[u8]) -> SnapshotResult<Self> {
        Self::decode_within(blob, MAX_MANIFEST_BYTES)
    }

    /// [`Self::decode`] refusing a manifest larger than `max_bytes`
    /// uncompressed: for a reader (the coordinator) that must not spend
    /// [`MAX_MANIFEST_BYTES`] of memory on one untrusted blob.
    pub fn decode_within(blob: &[u8], max_bytes: u64) -> SnapshotResult<Self> {
        let max_bytes = max_bytes.min(MAX_MANIFEST_BYTES);
        let body = blob
            .strip_prefix(BLOB_MAGIC)
            .ok_or_else(|| SnapshotError::bad(None, "not a snapshot manifest (bad magic)"))?;
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(max_bytes + 1).read_to_end(&mut raw))
            .map_err(|e| SnapshotError::bad(None, format!("decompressing: {e}")))?;
        if raw.len() as u64 > max_bytes {
            return Err(SnapshotError::bad(None, format!("larger than {max_bytes} bytes uncompressed")));
        }
        let m = Reader { buf: &raw, pos: 0 }.manifest()?;
        m.validate()?;
        Ok(m)
    }
}

/// Refuses uncompressed manifests beyond this (about ten million entries).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 30;
const BLOB_MAGIC: &[u8] = b"RBKSNAPZ";
const BODY_MAGIC: &[u8] = b"RBKSNAP\x01";

/// The rules for a relative path inside a snapshot.
pub fn validate_path(path: &[u8]) -> SnapshotResult<()> {
    if path.is_empty() {
        return Err(SnapshotError::bad(Some(path), "empty path"));
    }
    if path[0] == b'/' {
        return Err(SnapshotError::bad(Some(path), "absolute path"));
    }
    if path.contains(&0) {
        return Err(SnapshotError::bad(Some(path), "path holds a NUL byte"));
    }
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" => return Err(SnapshotError::bad(Some(path), "empty path component (// or trailing /)")),
            b"." => return Err(SnapshotError::bad(Some(path), "`.` component")),
            b".." => return Err(SnapshotError::bad(Some(path), "`..` component")),
            _ => {}
        }
    }
    Ok(())
}

fn validate_content(path: &[u8], c: &FileContent) -> SnapshotResult<()> {
    let mut total: u64 = 0;
    for ch in &c.chunks {
        total = total
            .checked_add(ch.digest.size())
            .ok_or_else(|| SnapshotError::bad(Some(path), "chunk sizes overflow"))?;
        let limit = match ch.codec {
            Codec::Raw => ch.digest.size(),
            // zstd never expands beyond its worst-case bound.
            Codec::Zstd => zstd::zstd_safe::compress_bound(ch.digest.size() as usize) as u64,
        };
        if ch.digest.size() == 0 || ch.stored_len == 0 || ch.stored_len > limit || (ch.codec == Codec::Raw && ch.stored_len != ch.digest.size()) {
            return Err(SnapshotError::bad(
                Some(path),
                format!("chunk {} has stored length {} that cannot hold its {} bytes", ch.digest, ch.stored_len, ch.digest.size()),
            ));
        }
        if ch.offset.checked_add(ch.stored_len).is_none_or(|end| end > ch.pack.size()) {
            return Err(SnapshotError::bad(Some(path), format!("chunk {} lies outside pack {}", ch.digest, ch.pack)));
        }
    }
    if total != c.digest.size() {
        return Err(SnapshotError::bad(
            Some(path),
            format!("size {} disagrees with its chunks, which hold {total} bytes", c.digest.size()),
        ));
    }
    if c.chunks.len() == 1 && c.chunks[0].digest != c.digest {
        return Err(SnapshotError::bad(Some(path), "a single-chunk file's digest differs from its chunk's"));
    }
    Ok(())
}

pub(crate) fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_varint(w, b.len() as u64);
    w.extend_from_slice(b);
}

fn put_digest(w: &mut Vec<u8>, d: &Digest) {
    w.extend_from_slice(d.hash());
    put_varint(w, d.size());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> SnapshotError {
        SnapshotError::bad(None, format!("{what} at byte {}", self.pos))
    }

    fn take(&mut self, n: u64, what: &str) -> SnapshotResult<&'a [u8]> {
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.err(&format!("truncated {what}")));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> SnapshotResult<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &str) -> SnapshotResult<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(&format!("{what}: varint too long")))
    }

    fn u32(&mut self, what: &str) -> SnapshotResult<u32> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| self.err(&format!("{what} {v} does not fit 32 bits")))
    }

    /// A count of items each at least `min_item` bytes long: refused when
    /// the remaining bytes could not hold that many.
    fn count(&mut self, what: &str, min_item: u64) -> SnapshotResult<usize> {
        let n = self.varint(what)?;
        if n.saturating_mul(min_item) > (self.buf.len() - self.pos) as u64 {
            return Err(self.err(&format!("{what} {n} exceeds the manifest's size")));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, what: &str) -> SnapshotResult<Vec<u8>> {
        let n = self.varint(what)?;
        Ok(self.take(n, what)?.to_vec())
    }

    fn digest(&mut self, what: &str) -> SnapshotResult<Digest> {
        let hash: [u8; 32] = self.take(32, what)?.try_into().expect("32 bytes");
        let size = self.varint(what)?;
        Ok(Digest::new(hash, size))
    }

    fn manifest(mut self) -> SnapshotResult<Manifest> {
        if self.take(BODY_MAGIC.len() as u64, "header")? != BODY_MAGIC {
            return Err(SnapshotError::bad(None, "unsupported manifest version"));
        }
        let namespace = String::from_utf8(self.bytes("namespace")?).map_err(|_| self.err("namespace is not UTF-8"))?;
        let created_unix_ns = unzigzag(self.varint("created time")?);
        let npacks = self.count("pack count", 33)?;
        let packs = (0..npacks).map(|_| self.digest("pack digest")).collect::<SnapshotResult<Vec<_>>>()?;
        let nentries = self.count("entry count", 8)?;
        let mut entries = Vec::with_capacity(nentries);
        for _ in 0..nentries {
            let path = self.bytes("path")?;
            let at = |w: &Self, what: String| SnapshotError::bad(Some(&path), format!("{what} at byte {}", w.pos));
            let kind = self.u8("entry kind")?;
            let mode = self.u32("mode")?;
            let uid = self.u32("uid")?;
            let gid = self.u32("gid")?;
            let secs = unzigzag(self.varint("mtime")?);
            let nanos = self.u32("mtime nanos")?;
            let kind = match kind {
                0 => EntryKind::Dir,
                1 => {
                    let digest = self.digest("file digest")?;
                    let n = self.count("chunk count", 4)?;
                    let mut chunks = Vec::with_capacity(n);
                    for _ in 0..n {
                        let cd = if n == 1 { None } else { Some(self.digest("chunk digest")?) };
                        let pi = self.varint("pack index")?;
                        let pack = *packs.get(pi as usize).ok_or_else(|| at(&self, format!("pack index {pi} out of range")))?;
                        let offset = self.varint("chunk offset")?;
                        let stored_len = self.varint("chunk stored length")?;
                        let codec = match self.u8("codec")? {
                            0 => Codec::Raw,
                            1 => Codec::Zstd,
                            c => return Err(at(&self, format!("unknown codec {c}"))),
                        };
                        chunks.push(ChunkRef { digest: cd.unwrap_or(digest), pack, offset, stored_len, codec });
                    }
                    EntryKind::File(FileContent { digest, chunks })
                }
                2 => EntryKind::Symlink(self.bytes("symlink target")?),
                3 => EntryKind::Hardlink(self.bytes("hard link target")?),
                4 | 5 => return Err(at(&self, "device nodes are not allowed in a snapshot".into())),
                6 | 7 => return Err(at(&self, "FIFOs and sockets are not allowed in a snapshot".into())),
                k => return Err(at(&self, format!("unknown entry kind {k}"))),
            };
            entries.push(Entry { path, kind, mode, uid, gid, mtime: Timestamp { secs, nanos } });
        }
        if self.pos != self.buf.len() {
            return Err(self.err("trailing bytes"));
        }
        Ok(Manifest { namespace, created_unix_ns, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let pack = Digest::of(b"pack bytes, pretend");
        let d = Digest::of(b"abc");
        let big = Digest::new([7; 32], 6);
        let e = |p: &str, kind| Entry { path: p.as_bytes().to_vec(), kind, mode: 0o755, uid: 1, gid: 2, mtime: Timestamp { secs: -5, nanos: 9 } };
        let chunk = |digest, offset| ChunkRef { digest, pack, offset, stored_len: 3, codec: Codec::Raw };
        Manifest {
            namespace: "tenant/project".into(),
            created_unix_ns: 42,
            entries: vec![
                e("a", EntryKind::Dir),
                e("a/f", EntryKind::File(FileContent { digest: d, chunks: vec![chunk(d, 0)] })),
                e("a/g", EntryKind::File(FileContent { digest: big, chunks: vec![chunk(d, 0), chunk(d, 3)] })),
                e("a/h", EntryKind::Hardlink(b"a/f".to_vec())),
                e("a/s", EntryKind::Symlink(b"../x".to_vec())),
                e("empty", EntryKind::File(FileContent { digest: Digest::of(b""), chunks: vec![] })),
            ],
        }
    }

    #[test]
    fn manifests_round_trip_through_the_binary_format() {
        let m = sample();
        m.validate().unwrap();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn unknown_and_device_entry_kinds_are_refused() {
        let m = Manifest { entries: vec![sample().entries[0].clone()], ..sample() };
        let blob = m.encode();
        let mut raw = zstd::decode_all(&blob[BLOB_MAGIC.len()..]).unwrap();
        let kind_at = raw.len() - 7; // then mode (2 bytes), uid, gid, mtime secs, mtime nanos
        assert_eq!(raw[kind_at - 1..kind_at], *b"a");
        for (kind, says) in [(4u8, "device nodes"), (6, "FIFOs"), (9, "unknown entry kind 9")] {
            raw[kind_at] = kind;
            let mut hostile = BLOB_MAGIC.to_vec();
            hostile.extend(zstd::encode_all(&raw[..], 3).unwrap());
            let err = Manifest::decode(&hostile).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn truncated_or_inflated_counts_are_refused_without_allocating() {
        let mut raw = BODY_MAGIC.to_vec();
        put_bytes(&mut raw, b"ns");
        put_varint(&mut raw, 0);
        put_varint(&mut raw, u64::MAX); // pack count
        let mut hostile = BLOB_MAGIC.to_vec();
        hostile.extend(zstd::encode_all(&raw[..], 3).unwrap());
        assert!(Manifest::decode(&hostile).unwrap_err().to_string().contains("pack count"));
        let blob = sample().encode();
        assert!(Manifest::decode(&blob[..blob.len() - 3]).is_err());
    }

    #[test]
    fn a_manifest_past_the_reader_s_limit_is_refused_naming_it() {
        let blob = sample().encode();
        let raw = zstd::decode_all(&blob[BLOB_MAGIC.len()..]).unwrap().len() as u64;
        assert_eq!(Manifest::decode_within(&blob, raw).unwrap(), sample());
        let err = Manifest::decode_within(&blob, raw - 1).unwrap_err().to_string();
        assert!(err.contains(&format!("larger than {} bytes uncompressed", raw - 1)), "{err}");
    }
}
