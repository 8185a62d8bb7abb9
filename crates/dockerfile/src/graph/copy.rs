//! COPY and ADD → a [`CopyStep`]: sources, destination, ownership.

use super::validate::valid_chmod;
use super::{Builder, Scope, StageState};
use crate::context::{clean_absolute, clean_relative};
use crate::dockerignore::Dockerignore;
use crate::error::{Pos, RawError};
use crate::expand;
use crate::instruction::*;
use crate::pattern::PathPattern;
use crate::step::*;

impl Builder<'_> {
    pub(super) fn copy(
        &self,
        c: &Copy,
        scope: &Scope,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
        workdir: &str,
    ) -> Result<CopyStep, RawError> {
        let kw = if c.add { "ADD" } else { "COPY" };
        let err = |m: String| RawError::new(pos, Some(kw), m);
        let x = |w: &str| expand::expand(w, self.escape, &|n| scope.get(n)).map_err(&err);
        let from = match &c.from {
            // BuildKit refuses variables in --from (the stage graph must be
            // known before any ARG is evaluated).
            Some(f) if crate::parser::has_variable(f) => {
                return Err(err(
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
                ));
            }
            Some(f) if f.is_empty() => {
                return Err(err(
                    "--from needs a stage name, a stage index or an image".into()
                ));
            }
            Some(f) => self.resolve_from(&x(f)?, st, earlier, pos, kw)?,
            None => FromRef::Context,
        };
        let chown = c.chown.as_deref().map(&x).transpose()?;
        let chmod = c.chmod.as_deref().map(&x).transpose()?;
        if let Some(m) = &chmod
            && !valid_chmod(m)
        {
            return Err(err(format!(
                "invalid --chmod={m}; expected an octal mode like 0755 or a symbolic one like u+x"
            )));
        }
        let exclude: Vec<String> = c.exclude.iter().map(|e| x(e)).collect::<Result<_, _>>()?;
        Dockerignore::from_patterns(&exclude)
            .map_err(|m| err(format!("invalid --exclude: {m}")))?;
        let mut sources = Vec::new();
        for s in &c.sources {
            if let Some((name, _, _)) = crate::lexer::heredoc_marker(s, self.escape)
                && let Some(h) = c.heredocs.iter().find(|h| h.name == name)
            {
                let content = if h.expand {
                    expand::expand_heredoc(&h.content, self.escape, &|n| scope.get(n))
                        .map_err(&err)?
                } else {
                    h.content.clone()
                };
                sources.push(CopySource::Inline { name, content });
                continue;
            }
            let s = x(s)?;
            let is_url = s.starts_with("http://") || s.starts_with("https://");
            let is_git = s.starts_with("git@")
                || s.starts_with("git://")
                || s.starts_with("ssh://")
                || (is_url && (s.ends_with(".git") || s.contains(".git#")));
            if is_url || is_git {
                if !c.add {
                    return Err(err(format!(
                        "COPY cannot fetch '{s}'; use ADD for URLs and git repositories"
                    )));
                }
                if !matches!(from, FromRef::Context) {
                    return Err(err(format!(
                        "a URL source '{s}' cannot be combined with --from"
                    )));
                }
                sources.push(if is_git {
                    crate::GitRef::parse(&s).map_err(|m| err(format!("git source '{s}': {m}")))?;
                    CopySource::Git {
                        url: s,
                        keep_git_dir: c.keep_git_dir,
                        checksum: None,
                        commit: None,
                    }
                } else {
                    CopySource::Url {
                        url: s,
                        checksum: None,
                        resolved: None,
                    }
                });
                continue;
            }
            // `--parents`: BuildKit's optional pivot, the first `/./`.
            let pivot = if c.parents { s.split_once("/./") } else { None };
            if let Some((above, _)) = pivot
                && above.contains(['*', '?', '['])
            {
                return Err(err(format!(
                    "--parents source '{s}': the part above the /./ pivot cannot hold wildcards in rbk; name the directory"
                )));
            }
            match from {
                FromRef::Context => {
                    let outside = || err(format!("source '{s}' is outside the build context"));
                    let cleaned = clean_relative(&s).ok_or_else(outside)?;
                    PathPattern::compile(&cleaned, false)
                        .map_err(|m| err(format!("invalid source pattern: {m}")))?;
                    let pivot = match pivot {
                        Some((above, _)) => Some(clean_relative(above).ok_or_else(outside)?).filter(|p| !p.is_empty()),
                        None => None,
                    };
                    sources.push(CopySource::Context {
                        pattern: cleaned,
                        paths: Vec::new(),
                        pivot,
                    });
                }
                _ => sources.push(CopySource::Path(match pivot {
                    Some((above, below)) => match clean_absolute(above).as_str() {
                        "/" => clean_absolute(below),
                        above => format!("{above}/.{}", clean_absolute(below)),
                    },
                    None => clean_absolute(&s),
                })),
            }
        }
        if let Some(ck) = &c.checksum {
            let ck = x(ck)?;
            let mut n = 0;
            for s in &mut sources {
                match s {
                    CopySource::Url { checksum, .. } => {
                        *checksum = Some(ck.clone());
                        n += 1;
                    }
                    CopySource::Git { checksum, .. } => {
                        *checksum = Some(ck.clone());
                        n += 1;
                    }
                    _ => {}
                }
            }
            if n == 0 {
                return Err(err(
                    "--checksum can only be used with HTTP(S) and git sources".into(),
                ));
            }
        }
        let dest_raw = x(&c.dest)?;
        let dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        if sources.len() > 1 && !dir {
            return Err(err(format!(
                "with more than one source the destination must be a directory ending in '/', not '{dest_raw}'"
            )));
        }
        let mut dest = if dest_raw.starts_with('/') {
            clean_absolute(&dest_raw)
        } else {
            clean_absolute(&format!("{workdir}/{dest_raw}"))
        };
        if dir && dest != "/" {
            dest.push('/');
        }
        // Docker extracts local archives, not downloaded ones, unless told.
        let remote = sources
            .iter()
            .any(|s| matches!(s, CopySource::Url { .. } | CopySource::Git { .. }));
        let unpack = c.add && c.unpack.unwrap_or(!remote);
        Ok(CopyStep {
            from,
            sources,
            dest,
            chown,
            chmod,
            link: c.link,
            parents: c.parents,
            exclude,
            unpack,
        })
    }
}
