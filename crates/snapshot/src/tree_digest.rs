//! The content-only digest of a snapshot's tree: what the coordinator keys
//! a build-context step by (`rbk_coordinator::action_key`).
//!
//! A snapshot is *named* by the digest of its manifest blob, and that blob
//! records more than the tree: when it was captured (`created_unix_ns`),
//! each entry's mtime, and how the contents happen to be chunked and packed
//! (which depends on the base snapshot the capture deduplicated against).
//! The client stages its build context into a fresh directory on every
//! submit, so the same files give a new manifest digest each time, and a
//! key holding that digest would never hit. BuildKit's cache key for
//! context content ignores mtimes for the same reason.
//!
//! The tree digest is blake3 over a versioned, length-prefixed encoding of,
//! for each entry in path order (a decoded manifest's entries are sorted and
//! unique): its path, its kind, its permission bits, its uid and gid, and by
//! kind the file's content digest (hash and size), the symlink's target or
//! the hard link's target path. It leaves out the mtimes, the capture time,
//! the namespace and the chunk and pack layout. So two manifests with the
//! same tree digest restore to trees that differ only in mtimes, which is
//! the one thing a cached result may then carry from an earlier capture.

use std::fmt;

use crate::manifest::{EntryKind, Manifest};

/// Part of every tree digest: a change of the encoding never matches old
/// digests.
const VERSION: &str = "rbk tree digest v1";

/// blake3 of a tree's content (see the module docs). Not a store digest:
/// nothing is stored under it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeDigest([u8; 32]);

impl TreeDigest {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for TreeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TreeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeDigest({self})")
    }
}

/// The content-only digest of `manifest`'s tree. Meant for a decoded (so
/// validated) manifest, whose entry order is the canonical one.
pub fn tree_digest(manifest: &Manifest) -> TreeDigest {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(VERSION.as_bytes());
    field(&(manifest.entries.len() as u64).to_le_bytes());
    for e in &manifest.entries {
        field(&e.path);
        let kind: u8 = match e.kind {
            EntryKind::Dir => 0,
            EntryKind::File(_) => 1,
            EntryKind::Symlink(_) => 2,
            EntryKind::Hardlink(_) => 3,
        };
        field(&[kind]);
        field(&e.mode.to_le_bytes());
        field(&e.uid.to_le_bytes());
        field(&e.gid.to_le_bytes());
        match &e.kind {
            EntryKind::Dir => {}
            EntryKind::File(c) => {
                field(c.digest.hash());
                field(&c.digest.size().to_le_bytes());
            }
            EntryKind::Symlink(target) | EntryKind::Hardlink(target) => field(target),
        }
    }
    TreeDigest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use rbk_store::Digest;

    use super::*;
    use crate::manifest::{ChunkRef, Codec, Entry, FileContent, Timestamp};

    fn file(path: &str, content: &[u8], pack: &[u8], mtime: i64) -> Entry {
        let digest = Digest::of(content);
        let chunk = ChunkRef { digest, pack: Digest::of(pack), offset: 0, stored_len: digest.size(), codec: Codec::Raw };
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File(FileContent { digest, chunks: vec![chunk] }),
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp { secs: mtime, nanos: 0 },
        }
    }

    fn dir(path: &str, mtime: i64) -> Entry {
        Entry { path: path.as_bytes().to_vec(), kind: EntryKind::Dir, mode: 0o755, uid: 1000, gid: 1000, mtime: Timestamp { secs: mtime, nanos: 0 } }
    }

    fn manifest(entries: Vec<Entry>, created: i64) -> Manifest {
        let mut m = Manifest { namespace: "context".into(), created_unix_ns: created, entries };
        m.sort();
        m.validate().unwrap();
        m
    }

    fn base() -> Manifest {
        manifest(vec![dir("src", 1), file("src/a.txt", b"hello", b"pack-1", 1), file("b.txt", b"world", b"pack-1", 1)], 10)
    }

    #[test]
    fn new_mtimes_a_new_capture_time_and_another_pack_layout_keep_the_digest() {
        let touched = manifest(
            vec![dir("src", 7), file("src/a.txt", b"hello", b"pack-2", 8), file("b.txt", b"world", b"pack-3", 9)],
            99,
        );
        assert_ne!(touched.encode(), base().encode(), "the manifests differ (so would their digests)");
        assert_eq!(tree_digest(&touched), tree_digest(&base()));
    }

    #[test]
    fn a_file_s_content_changes_the_digest() {
        let edited = manifest(vec![dir("src", 1), file("src/a.txt", b"hellO", b"pack-1", 1), file("b.txt", b"world", b"pack-1", 1)], 10);
        assert_ne!(tree_digest(&edited), tree_digest(&base()));
    }

    #[test]
    fn a_mode_an_owner_a_path_or_a_kind_changes_the_digest() {
        let d = tree_digest(&base());
        let mut m = base();
        m.entries[0].mode = 0o755;
        assert_ne!(tree_digest(&m), d, "mode");
        let mut m = base();
        m.entries[0].uid = 0;
        assert_ne!(tree_digest(&m), d, "uid");
        let mut m = base();
        m.entries[0].gid = 0;
        assert_ne!(tree_digest(&m), d, "gid");
        let renamed = manifest(vec![dir("src", 1), file("src/a.txt", b"hello", b"pack-1", 1), file("c.txt", b"world", b"pack-1", 1)], 10);
        assert_ne!(tree_digest(&renamed), d, "path");
        let mut m = base();
        m.entries[0].kind = EntryKind::Symlink(b"src/a.txt".to_vec());
        assert_ne!(tree_digest(&m), d, "kind");
    }

    #[test]
    fn a_symlink_s_target_changes_the_digest() {
        let link = |target: &str| {
            let mut l = dir("link", 1);
            l.kind = EntryKind::Symlink(target.as_bytes().to_vec());
            manifest(vec![l], 1)
        };
        assert_ne!(tree_digest(&link("a")), tree_digest(&link("b")));
    }

    #[test]
    fn an_empty_directory_is_part_of_the_tree() {
        let mut with_dir = base().entries;
        with_dir.push(dir("empty", 1));
        assert_ne!(tree_digest(&manifest(with_dir, 10)), tree_digest(&base()));
    }
}
