//! The local stat cache: for each file of a directory, the `lstat` fields
//! seen when its content was last hashed (by capture) or written (by
//! restore), tied to the snapshot that holds that content.
//!
//! A file whose size, mtime, ctime and inode still match is taken to hold
//! the same bytes as in that snapshot, so an unchanged tree is captured
//! without reading a byte, and an incremental restore knows which files it
//! need not touch. The cache is local machine state (inode numbers mean
//! nothing elsewhere) and is never uploaded.
//!
//! "Racily clean" files (git's term) are left out: a file whose ctime is
//! within [`RACY_MARGIN_NS`] of the moment capture started could be modified
//! again within the same timestamp tick without its stat changing, so it is
//! re-read next time rather than trusted.

use std::collections::HashMap;
use std::path::Path;

use rbk_store::Digest;

use crate::fsutil::Meta;
use crate::manifest::Timestamp;

/// Kernel file timestamps come from a coarse clock (one tick, at most
/// 10 ms); twice that is safe.
pub const RACY_MARGIN_NS: i64 = 50_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub ino: u64,
    pub dev: u64,
}

impl From<&Meta> for StatKey {
    fn from(m: &Meta) -> Self {
        StatKey { size: m.size, mtime: m.mtime, ctime: m.ctime, ino: m.ino, dev: m.dev }
    }
}

#[derive(Debug, Default)]
pub struct StatCache {
    /// The snapshot whose content the recorded files hold.
    pub snapshot: Option<Digest>,
    pub files: HashMap<Vec<u8>, StatKey>,
}

const MAGIC: &[u8] = b"RBKSTAT1";

impl StatCache {
    /// Loads a cache; a missing or unreadable one is simply empty (it only
    /// ever saves work, so losing it costs speed, not correctness).
    pub fn load(path: &Path) -> StatCache {
        match std::fs::read(path) {
            Ok(b) => Self::decode(&b).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "ignoring unreadable stat cache");
                StatCache::default()
            }),
            Err(_) => StatCache::default(),
        }
    }

    /// Whether `meta` still matches what was recorded for `path` under
    /// snapshot `snapshot`.
    pub fn unchanged(&self, snapshot: &Digest, path: &[u8], meta: &Meta) -> bool {
        self.snapshot.as_ref() == Some(snapshot) && self.files.get(path) == Some(&StatKey::from(meta))
    }

    /// Writes the cache atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut w = Vec::with_capacity(MAGIC.len() + 40 + self.files.len() * 80);
        w.extend_from_slice(MAGIC);
        match &self.snapshot {
            Some(d) => {
                w.push(1);
                w.extend_from_slice(d.hash());
                w.extend_from_slice(&d.size().to_le_bytes());
            }
            None => w.push(0),
        }
        w.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for (p, k) in &self.files {
            w.extend_from_slice(&(p.len() as u32).to_le_bytes());
            w.extend_from_slice(p);
            for v in [k.size, k.mtime.secs as u64, k.mtime.nanos as u64, k.ctime.secs as u64, k.ctime.nanos as u64, k.ino, k.dev] {
                w.extend_from_slice(&v.to_le_bytes());
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&tmp, &w)?;
        std::fs::rename(&tmp, path)
    }

    fn decode(b: &[u8]) -> Option<StatCache> {
        let mut pos: usize = 0;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(pos..pos.checked_add(n)?)?;
            pos += n;
            Some(s)
        };
        let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap());
        if take(MAGIC.len())? != MAGIC {
            return None;
        }
        let snapshot = match take(1)?[0] {
            1 => {
                let hash: [u8; 32] = take(32)?.try_into().ok()?;
                Some(Digest::new(hash, u64_(take(8)?)))
            }
            _ => None,
        };
        let n = u64_(take(8)?);
        let mut files = HashMap::with_capacity((n as usize).min(1 << 20));
        for _ in 0..n {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let p = take(len)?.to_vec();
            let mut v = [0u64; 7];
            for x in &mut v {
                *x = u64_(take(8)?);
            }
            let key = StatKey {
                size: v[0],
                mtime: Timestamp { secs: v[1] as i64, nanos: v[2] as u32 },
                ctime: Timestamp { secs: v[3] as i64, nanos: v[4] as u32 },
                ino: v[5],
                dev: v[6],
            };
            files.insert(p, key);
        }
        Some(StatCache { snapshot, files })
    }
}

/// Whether a file changed so recently that its stat cannot be trusted later.
pub fn is_racy(meta: &Meta, started_unix_ns: i64) -> bool {
    let ns = |t: Timestamp| t.secs.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64);
    ns(meta.ctime) >= started_unix_ns - RACY_MARGIN_NS || ns(meta.mtime) >= started_unix_ns - RACY_MARGIN_NS
}
