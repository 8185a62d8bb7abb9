//! What changed between two snapshots.

use crate::manifest::{Entry, Manifest};

/// One path that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Added(&'a Entry),
    Removed(&'a Entry),
    /// Content, type, target or metadata differ.
    Modified { from: &'a Entry, to: &'a Entry },
}

impl Change<'_> {
    pub fn path(&self) -> &[u8] {
        match self {
            Change::Added(e) | Change::Removed(e) => &e.path,
            Change::Modified { to, .. } => &to.path,
        }
    }
}

/// The changes that turn `a` into `b`, in path order. Both manifests are
/// sorted, so this is one merge-walk.
pub fn diff<'a>(a: &'a Manifest, b: &'a Manifest) -> Vec<Change<'a>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.entries.len() || j < b.entries.len() {
        match (a.entries.get(i), b.entries.get(j)) {
            (Some(x), Some(y)) if x.path == y.path => {
                if !same_entry(x, y) {
                    out.push(Change::Modified { from: x, to: y });
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.path < y.path => {
                out.push(Change::Removed(x));
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push(Change::Added(y));
                j += 1;
            }
            (Some(x), None) => {
                out.push(Change::Removed(x));
                i += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    out
}

/// Equal as a user sees it: same type, content (by digest, wherever it is
/// stored), link target and metadata. Two captures of one file into
/// different packs are the same entry.
pub fn same_entry(x: &Entry, y: &Entry) -> bool {
    use crate::manifest::EntryKind::*;
    let kind_eq = match (&x.kind, &y.kind) {
        (Dir, Dir) => true,
        (File(a), File(b)) => a.digest == b.digest,
        (Symlink(a), Symlink(b)) | (Hardlink(a), Hardlink(b)) => a == b,
        _ => false,
    };
    kind_eq && x.mode == y.mode && x.uid == y.uid && x.gid == y.gid && x.mtime == y.mtime
}
