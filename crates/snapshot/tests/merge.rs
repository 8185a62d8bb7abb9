//! Three-way merge of concurrent commits never loses a file either side
//! wrote.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rbk_snapshot::{ChunkRef, Codec, Entry, EntryKind, FileContent, Manifest, Timestamp, merge};
use rbk_store::Digest;

const PATHS: &[&str] = &["a", "b", "a/x", "a/y", "a/x/deep", "b/z", "c", "c/d", "c/d/e", "a.rbk-conflict"];

fn content(c: u8) -> FileContent {
    let digest = Digest::of(&[c]);
    FileContent { digest, chunks: vec![ChunkRef { digest, pack: Digest::new([0; 32], 1 << 20), offset: c as u64, stored_len: 1, codec: Codec::Raw }] }
}

/// A valid manifest holding `files` (path → content byte) and the
/// directories they need.
fn manifest(files: &BTreeMap<String, u8>, created: i64) -> Manifest {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let e = |p: &str, kind| Entry { path: p.as_bytes().to_vec(), kind, mode: 0o644, uid: 0, gid: 0, mtime: Timestamp::default() };
    for (p, c) in files {
        let mut end = 0;
        while let Some(i) = p[end..].find('/') {
            let d = &p[..end + i];
            entries.insert(d.to_owned(), e(d, EntryKind::Dir));
            end += i + 1;
        }
        entries.insert(p.clone(), e(p, EntryKind::File(content(*c))));
    }
    let mut m = Manifest { namespace: "ns".into(), created_unix_ns: created, entries: entries.into_values().collect() };
    m.sort();
    m.validate().unwrap();
    m
}

/// Applies writes and deletes like a build step would: writing `a/x` turns
/// a file `a` into a directory; writing `a` removes what was under it.
fn apply(mut files: BTreeMap<String, u8>, ops: &[(usize, Option<u8>)]) -> BTreeMap<String, u8> {
    for &(i, op) in ops {
        let p = PATHS[i % PATHS.len()];
        match op {
            Some(c) => {
                files.retain(|q, _| !(p.starts_with(&format!("{q}/")) || q.starts_with(&format!("{p}/"))));
                files.insert(p.to_owned(), c);
            }
            None => {
                files.remove(p);
            }
        }
    }
    files
}

fn ops() -> impl Strategy<Value = Vec<(usize, Option<u8>)>> {
    proptest::collection::vec((any::<usize>(), proptest::option::weighted(0.7, any::<u8>())), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn merge_never_loses_a_file_written_by_either_side(base_ops in ops(), our_ops in ops(), their_ops in ops(), theirs_later in any::<bool>()) {
        let base = apply(BTreeMap::new(), &base_ops);
        let ours = apply(base.clone(), &our_ops);
        let theirs = apply(base.clone(), &their_ops);
        let (to, tt) = if theirs_later { (1, 2) } else { (2, 1) };
        let merged = merge(&manifest(&base, 0), &manifest(&ours, to), &manifest(&theirs, tt));
        prop_assert!(merged.validate().is_ok(), "{:?}", merged.validate());

        let written = |side: &BTreeMap<String, u8>| -> BTreeMap<String, u8> {
            side.iter().filter(|(p, c)| base.get(*p) != Some(c)).map(|(p, c)| (p.clone(), *c)).collect()
        };
        let (w_ours, w_theirs) = (written(&ours), written(&theirs));
        let found = |p: &str, c: u8| merged.entries.iter().any(|e| {
            let at = e.path == p.as_bytes() || e.path.starts_with(format!("{p}.rbk-conflict").as_bytes());
            at && matches!(&e.kind, EntryKind::File(fc) if fc.digest == Digest::of(&[c]))
        });
        for (mine, other, mine_later) in [(&w_ours, &w_theirs, !theirs_later), (&w_theirs, &w_ours, theirs_later)] {
            for (p, &c) in mine {
                match other.get(p) {
                    // Both wrote it: the later commit's version is there.
                    Some(&oc) if oc != c => {
                        let want = if mine_later { c } else { oc };
                        prop_assert!(found(p, want), "{p}: later version {want} lost in {:?}", merged.entries);
                    }
                    _ => prop_assert!(found(p, c), "{p}: written {c} lost in {:?}", merged.entries),
                }
            }
        }
    }
}

#[test]
fn a_path_deleted_on_one_side_and_changed_on_the_other_keeps_the_change() {
    let base = BTreeMap::from([("a".to_owned(), 1u8)]);
    let ours = BTreeMap::new();
    let theirs = BTreeMap::from([("a".to_owned(), 2u8)]);
    let merged = merge(&manifest(&base, 0), &manifest(&ours, 5), &manifest(&theirs, 1));
    assert!(matches!(&merged.get(b"a").unwrap().kind, EntryKind::File(c) if c.digest == Digest::of(&[2])));
}

#[test]
fn a_deletion_of_an_untouched_path_is_kept() {
    let base = BTreeMap::from([("a".to_owned(), 1u8), ("b".to_owned(), 1)]);
    let ours = BTreeMap::from([("b".to_owned(), 1u8)]);
    let merged = merge(&manifest(&base, 0), &manifest(&ours, 1), &manifest(&base, 2));
    assert!(merged.get(b"a").is_none());
    assert!(merged.get(b"b").is_some());
}
