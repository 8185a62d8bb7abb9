//! The build context as COPY and bind mounts see it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::context::{Context, EntryKind};
use crate::dockerignore::Dockerignore;
use crate::error::{Pos, RawError};
use crate::key::{Key, KeyHasher, context_file_mode};
use crate::pattern::{Glob, PathPattern};

/// The context, walked once, with `.dockerignore` applied; file digests are
/// computed on first use.
pub(super) struct ContextIndex<'a> {
    ctx: &'a dyn Context,
    ignore: &'a Dockerignore,
    entries: Option<BTreeMap<String, EntryKind>>,
    digests: HashMap<String, [u8; 32]>,
}

const MAX_CONTEXT_DEPTH: usize = 256;

impl<'a> ContextIndex<'a> {
    pub(super) fn new(ctx: &'a dyn Context, ignore: &'a Dockerignore) -> Self {
        ContextIndex {
            ctx,
            ignore,
            entries: None,
            digests: HashMap::new(),
        }
    }

    pub(super) fn entries(
        &mut self,
        pos: Pos,
        kw: &str,
    ) -> Result<&BTreeMap<String, EntryKind>, RawError> {
        if self.entries.is_none() {
            let mut out = BTreeMap::new();
            let mut todo = vec![(String::new(), 0usize)];
            while let Some((dir, depth)) = todo.pop() {
                if depth > MAX_CONTEXT_DEPTH {
                    return Err(RawError::new(
                        pos,
                        Some(kw),
                        format!(
                            "build context is nested deeper than {MAX_CONTEXT_DEPTH} directories at '{dir}'"
                        ),
                    ));
                }
                let list = self.ctx.list(&dir).map_err(|e| {
                    RawError::new(pos, Some(kw), format!("cannot read the build context: {e}"))
                })?;
                for e in list {
                    let path = if dir.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{dir}/{}", e.name)
                    };
                    let excluded = self.ignore.excludes(&path);
                    if let EntryKind::Dir { .. } = e.kind
                        && (!excluded || self.ignore_has_exceptions())
                    {
                        todo.push((path.clone(), depth + 1));
                    }
                    if !excluded {
                        out.insert(path, e.kind);
                    }
                }
            }
            self.entries = Some(out);
        }
        Ok(self.entries.as_ref().expect("just filled"))
    }

    pub(super) fn ignore_has_exceptions(&self) -> bool {
        // Walk an excluded directory only if a `!` rule could re-include
        // something inside it (node_modules is never read otherwise).
        self.ignore.has_exceptions()
    }

    /// Paths matched by `pattern`, with directory contents, after `exclude`.
    pub(super) fn select(
        &mut self,
        pattern: &str,
        exclude: &Dockerignore,
        pos: Pos,
        kw: &str,
    ) -> Result<Vec<String>, RawError> {
        let entries = self.entries(pos, kw)?;
        let mut roots: Vec<String> = Vec::new();
        if pattern.is_empty() {
            roots.push(String::new());
        } else if Glob::has_magic(pattern) {
            let p = PathPattern::compile(pattern, false)
                .map_err(|m| RawError::new(pos, Some(kw), m))?;
            roots.extend(entries.keys().filter(|k| p.matches(k)).cloned());
        } else if entries.contains_key(pattern) {
            roots.push(pattern.to_string());
        }
        // BuildKit: a wildcard that matches nothing is no error (`COPY
        // package.json yarn.lock* ./`); a missing plain path is.
        if roots.is_empty() && !Glob::has_magic(pattern) {
            return Err(RawError::new(
                pos,
                Some(kw),
                format!(
                    "source '{pattern}' not found in the build context (or excluded by .dockerignore)"
                ),
            ));
        }
        let mut out = BTreeSet::new();
        for root in roots {
            let is_dir =
                root.is_empty() || matches!(entries.get(&root), Some(EntryKind::Dir { .. }));
            if !is_dir {
                let name = root.rsplit('/').next().unwrap_or(&root);
                if !exclude.excludes(name) {
                    out.insert(root);
                }
                continue;
            }
            if !root.is_empty() {
                out.insert(root.clone());
            }
            let prefix = if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            };
            for k in entries
                .range(prefix.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&prefix))
            {
                if !exclude.excludes(&k[prefix.len()..]) {
                    out.insert(k.clone());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Hashes names, kinds, normalised modes, contents and symlink targets.
    pub(super) fn content_key(
        &mut self,
        paths: &[String],
        pos: Pos,
        kw: &str,
    ) -> Result<Key, RawError> {
        let mut h = KeyHasher::new("context");
        for p in paths {
            let kind = self.entries(pos, kw)?.get(p).cloned();
            h.str("path", p);
            match kind {
                Some(EntryKind::File { mode, .. }) => {
                    let d = match self.digests.get(p) {
                        Some(d) => *d,
                        None => {
                            let bytes = self.ctx.read(p).map_err(|e| {
                                RawError::new(
                                    pos,
                                    Some(kw),
                                    format!("cannot read context file: {e}"),
                                )
                            })?;
                            let d = *blake3::hash(&bytes).as_bytes();
                            self.digests.insert(p.clone(), d);
                            d
                        }
                    };
                    h.field("file", &d);
                    h.field("mode", &context_file_mode(mode).to_le_bytes());
                }
                Some(EntryKind::Dir { .. }) => {
                    h.field("dir", &[]);
                }
                Some(EntryKind::Symlink { target }) => {
                    h.str("symlink", &target);
                }
                None => {
                    h.field("missing", &[]);
                }
            }
        }
        Ok(h.finish())
    }
}
