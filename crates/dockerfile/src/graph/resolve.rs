//! Pass 2, one step: resolving its sources against earlier steps, the
//! resolver and the context, and what of the instruction goes into its key.

use super::{BaseResolver, ContextIndex};
use crate::canonical;
use crate::dockerignore::Dockerignore;
use crate::error::{Pos, RawError};
use crate::instruction::*;
use crate::key::KeyHasher;
use crate::step::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn resolve_kind(
    kind: &mut StepKind,
    stage_steps: &[Vec<StepId>],
    steps: &[Step],
    resolver: &dyn BaseResolver,
    ctx: &mut ContextIndex<'_>,
    h: &mut KeyHasher,
    pos: Pos,
    _namespace: &str,
) -> Result<(), RawError> {
    let fix_from = |f: &mut FromRef, h: &mut KeyHasher| match f {
        FromRef::Stage { stage, step } => {
            // Stages are processed dependencies first; a stage with no steps
            // cannot exist (every stage has its base step).
            *step = stage_steps[*stage].last().copied().unwrap_or_default();
            h.key("from-stage", &steps[*step].key);
        }
        FromRef::Image { reference, digest } => {
            *digest = resolver.resolve(reference, None);
            h.opt("from-image-digest", digest.as_deref());
        }
        FromRef::Context => {}
    };
    match kind {
        StepKind::Image {
            reference,
            platform,
            digest,
        } => {
            *digest = resolver.resolve(reference, platform.as_deref());
            h.opt("image-digest", digest.as_deref());
        }
        StepKind::Run(r) => {
            for m in &mut r.mounts {
                match m {
                    Mount::Bind { from, source, paths, .. } => {
                        if let FromRef::Context = from {
                            *paths = ctx.select(source, &Dockerignore::default(), pos, "RUN")?;
                            let k = ctx.content_key(paths, pos, "RUN")?;
                            h.key("bind-content", &k);
                        }
                        fix_from(from, h);
                    }
                    Mount::Cache {
                        from: Some((f, _)), ..
                    } => fix_from(f, h),
                    _ => {}
                }
            }
        }
        StepKind::Copy(c) => {
            let kw = if c.unpack { "ADD" } else { "COPY" };
            fix_from(&mut c.from, h);
            let exclude = Dockerignore::from_patterns(&c.exclude)
                .map_err(|m| RawError::new(pos, Some(kw), m))?;
            for s in &mut c.sources {
                match s {
                    CopySource::Context { pattern, paths, .. } => {
                        *paths = ctx.select(pattern, &exclude, pos, kw)?;
                        let k = ctx.content_key(paths, pos, kw)?;
                        h.key("copy-content", &k);
                    }
                    // A pin is the content: nothing to ask (BuildKit keys a
                    // `--checksum` source by it without a request).
                    CopySource::Url {
                        url,
                        checksum: None,
                        resolved,
                    } => *resolved = resolver.url(url),
                    CopySource::Git { url, commit, .. } => *commit = resolver.git(url),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The instruction as hashed into keys: canonical, but without stage names
/// and `--from` values (the source stage's key or image digest is hashed
/// instead), so renaming or reordering stages keeps the cache.
pub(super) fn key_text(inst: &Instruction, base_is_stage: bool) -> String {
    let mut i = inst.clone();
    match &mut i {
        Instruction::From(f) => {
            f.alias = None;
            if base_is_stage {
                f.image = "<stage>".into();
            }
        }
        Instruction::Copy(c) if c.from.is_some() => c.from = Some("<source>".into()),
        Instruction::Run(r) => {
            for m in &mut r.mounts {
                if let Some(f) = m.opts.get_mut("from") {
                    *f = "<source>".into();
                }
            }
        }
        _ => {}
    }
    canonical::instruction(&i).trim_end().to_string()
}
