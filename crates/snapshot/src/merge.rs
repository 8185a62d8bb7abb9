//! Three-way merge of concurrent commits to one cache.
//!
//! Rules, per path, comparing each side with the common base:
//! - changed on one side only → that side's version (additions from both
//!   sides are kept, a deletion on one side of an untouched path deletes);
//! - changed on both → the same version, or else the later commit's
//!   (`created_unix_ns`; ties go to `theirs`), except that a deletion never
//!   beats a change (a path deleted on one side and changed on the other is
//!   kept with the change) and a directory never loses to a file or
//!   symlink (the non-directory is kept beside it, see below);
//! - the result must still be a tree: when a kept entry needs a directory
//!   where the merge chose a file or symlink (one side wrote `a`, the other
//!   `a/x`), the directory wins and the displaced entry is kept beside it as
//!   `a.rbk-conflict` (or `a.rbk-conflict-2`, …), so no file written by
//!   either side is lost;
//! - a hard link stays a link only if its target merged to the same
//!   content; otherwise it becomes a copy of the content it had.

use std::collections::BTreeMap;

use crate::diff::same_entry;
use crate::manifest::{Entry, EntryKind, Manifest, now_unix_ns};

/// An entry with hard links replaced by their content, remembering the
/// link so it can be restored when still valid.
#[derive(Clone)]
struct Resolved {
    entry: Entry,
    link: Option<Vec<u8>>,
}

fn resolve(m: &Manifest) -> BTreeMap<Vec<u8>, Resolved> {
    m.entries
        .iter()
        .map(|e| {
            let r = match &e.kind {
                EntryKind::Hardlink(t) => match m.get(t).map(|x| &x.kind) {
                    Some(EntryKind::File(c)) => {
                        Resolved { entry: Entry { kind: EntryKind::File(c.clone()), ..e.clone() }, link: Some(t.clone()) }
                    }
                    _ => Resolved { entry: e.clone(), link: None },
                },
                _ => Resolved { entry: e.clone(), link: None },
            };
            (e.path.clone(), r)
        })
        .collect()
}

fn same(a: Option<&Resolved>, b: Option<&Resolved>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => same_entry(&x.entry, &y.entry),
        _ => false,
    }
}

/// Merges `ours` and `theirs`, both descended from `base`. The result names
/// content from either side's packs; commit it with
/// [`crate::Snapshot::commit`].
pub fn merge(base: &Manifest, ours: &Manifest, theirs: &Manifest) -> Manifest {
    let (b, o, t) = (resolve(base), resolve(ours), resolve(theirs));
    let theirs_later = theirs.created_unix_ns >= ours.created_unix_ns;
    let mut paths: Vec<&Vec<u8>> = b.keys().chain(o.keys()).chain(t.keys()).collect();
    paths.sort();
    paths.dedup();

    let mut out: BTreeMap<Vec<u8>, Resolved> = BTreeMap::new();
    let mut displaced: Vec<Resolved> = Vec::new();
    for p in paths {
        let (eb, eo, et) = (b.get(p), o.get(p), t.get(p));
        let (co, ct) = (!same(eb, eo), !same(eb, et));
        let pick = match (co, ct) {
            (false, false) => eb,
            (true, false) => eo,
            (false, true) => et,
            (true, true) => match (eo, et) {
                (None, x) | (x, None) => x,
                // A directory and a file or symlink: the directory stays
                // (the other side's files may live in it), the other entry
                // is kept beside it.
                (Some(x), Some(y)) if x.entry.is_dir() != y.entry.is_dir() => {
                    let (dir, other) = if x.entry.is_dir() { (x, y) } else { (y, x) };
                    displaced.push(other.clone());
                    Some(dir)
                }
                (Some(_), Some(_)) if theirs_later => et,
                _ => eo,
            },
        };
        if let Some(r) = pick {
            out.insert(p.clone(), r.clone());
        }
    }
    let taken = |out: &BTreeMap<Vec<u8>, Resolved>, cand: &Vec<u8>| out.contains_key(cand) || o.contains_key(cand) || t.contains_key(cand);
    let displace = |out: &mut BTreeMap<Vec<u8>, Resolved>, r: Resolved| {
        let mut n = 1;
        let name = loop {
            let mut cand = r.entry.path.clone();
            cand.extend_from_slice(b".rbk-conflict");
            if n > 1 {
                cand.extend_from_slice(format!("-{n}").as_bytes());
            }
            if !taken(out, &cand) {
                break cand;
            }
            n += 1;
        };
        out.insert(name.clone(), Resolved { entry: Entry { path: name, ..r.entry }, link: r.link });
    };
    for r in displaced {
        displace(&mut out, r);
    }

    // Make it a tree again: every ancestor of a kept entry is a directory.
    let keys: Vec<Vec<u8>> = out.keys().cloned().collect();
    for p in keys {
        if !out.contains_key(&p) {
            continue;
        }
        let mut end = 0;
        while let Some(pos) = p[end..].iter().position(|&c| c == b'/') {
            let anc = p[..end + pos].to_vec();
            end += pos + 1;
            if out.get(&anc).is_some_and(|r| r.entry.is_dir()) {
                continue;
            }
            if let Some(r) = out.remove(&anc) {
                displace(&mut out, r);
            }
            let dir = [t.get(&anc), o.get(&anc), b.get(&anc)]
                .into_iter()
                .flatten()
                .find(|r| r.entry.is_dir())
                .map(|r| r.entry.clone())
                .unwrap_or(Entry { path: anc.clone(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: Default::default() });
            out.insert(anc, Resolved { entry: dir, link: None });
        }
    }

    // Hard links survive where their target still holds what they held.
    let mut entries = Vec::with_capacity(out.len());
    for r in out.values() {
        let mut e = r.entry.clone();
        if let (Some(target), EntryKind::File(c)) = (&r.link, &r.entry.kind) {
            let ok = out.get(target).is_some_and(|tr| tr.link.is_none() && matches!(&tr.entry.kind, EntryKind::File(tc) if tc.digest == c.digest));
            if ok {
                e.kind = EntryKind::Hardlink(target.clone());
            }
        }
        entries.push(e);
    }
    Manifest {
        namespace: ours.namespace.clone(),
        created_unix_ns: now_unix_ns().max(ours.created_unix_ns.max(theirs.created_unix_ns) + 1),
        entries,
    }
}
