//! The part of a snapshot one reader needs: the entries at some paths and
//! the directories above them.
//!
//! The client captures its build context once and gives each COPY step a
//! snapshot of only the context paths that step reads (a manifest naming
//! packs already stored, so nothing but the small manifest is uploaded). A
//! step's action key holds the tree digest of its snapshot
//! (`tree_digest.rs`), so editing a file another COPY reads leaves its key
//! alone, and the worker restoring the step's snapshot cannot read beyond
//! what the key covers.

use std::collections::BTreeSet;

use crate::manifest::{EntryKind, Manifest};

/// The entries of `manifest` at `paths`, every directory above them, and the
/// file each included hard link names (with its directories). Paths are the
/// manifest's form (relative, `/`-separated); one `manifest` lacks is
/// skipped. Keeps `manifest`'s namespace and capture time, so the subset of
/// every path is `manifest` itself, under the same digest.
pub fn subset<'a>(manifest: &Manifest, paths: impl IntoIterator<Item = &'a [u8]>) -> Manifest {
    fn add(wanted: &mut BTreeSet<Vec<u8>>, p: &[u8]) {
        for (i, &b) in p.iter().enumerate() {
            if b == b'/' {
                wanted.insert(p[..i].to_vec());
            }
        }
        wanted.insert(p.to_vec());
    }
    let mut wanted = BTreeSet::new();
    for p in paths {
        add(&mut wanted, p);
    }
    let links: Vec<Vec<u8>> = wanted
        .iter()
        .filter_map(|p| match manifest.get(p).map(|e| &e.kind) {
            Some(EntryKind::Hardlink(target)) => Some(target.clone()),
            _ => None,
        })
        .collect();
    for t in links {
        add(&mut wanted, &t);
    }
    Manifest {
        namespace: manifest.namespace.clone(),
        created_unix_ns: manifest.created_unix_ns,
        entries: manifest.entries.iter().filter(|e| wanted.contains(&e.path)).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use rbk_store::Digest;

    use super::*;
    use crate::manifest::{Entry, FileContent, Timestamp};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry { path: path.as_bytes().to_vec(), kind, mode: 0o755, uid: 0, gid: 0, mtime: Timestamp::default() }
    }

    fn file(path: &str) -> Entry {
        entry(path, EntryKind::File(FileContent { digest: Digest::of(b""), chunks: vec![] }))
    }

    fn context() -> Manifest {
        let mut m = Manifest::new("context");
        m.entries = vec![
            entry("src", EntryKind::Dir),
            entry("src/lib", EntryKind::Dir),
            file("src/lib/a.rs"),
            file("src/lib/b.rs"),
            file("package.json"),
            entry("link", EntryKind::Hardlink(b"src/lib/b.rs".to_vec())),
        ];
        m.sort();
        m.validate().unwrap();
        m
    }

    fn paths(m: &Manifest) -> Vec<String> {
        m.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect()
    }

    #[test]
    fn a_subset_holds_its_paths_and_the_directories_above_them_and_validates() {
        let s = subset(&context(), [&b"src/lib/a.rs"[..], b"package.json"]);
        assert_eq!(paths(&s), ["package.json", "src", "src/lib", "src/lib/a.rs"]);
        s.validate().unwrap();
    }

    #[test]
    fn a_hard_link_brings_the_file_it_names() {
        let s = subset(&context(), [&b"link"[..]]);
        assert_eq!(paths(&s), ["link", "src", "src/lib", "src/lib/b.rs"]);
        s.validate().unwrap();
    }

    #[test]
    fn the_subset_of_every_path_is_the_manifest_itself() {
        let m = context();
        let all: Vec<Vec<u8>> = m.entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(subset(&m, all.iter().map(Vec::as_slice)).encode(), m.encode());
    }

    #[test]
    fn a_path_the_manifest_lacks_adds_nothing() {
        assert!(subset(&context(), [&b"missing/x"[..]]).entries.is_empty());
    }
}
