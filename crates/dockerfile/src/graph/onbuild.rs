//! `ONBUILD` triggers a base image carries (its config's `OnBuild` list):
//! they run first in a stage built `FROM` that image, in order, as if
//! written right after the `FROM` (Docker's and BuildKit's rule).

use crate::error::{Pos, RawError};
use crate::instruction::*;

use super::BaseResolver;

/// The base image's triggers as instructions placed at the `FROM` line.
/// A trigger that does not parse, or that Docker forbids as a trigger
/// (`FROM`, `ONBUILD`, `MAINTAINER`), is an error naming the image.
pub(super) fn image_triggers(
    resolver: &dyn BaseResolver,
    reference: &str,
    platform: Option<&str>,
    pos: Pos,
) -> Result<Vec<Located>, RawError> {
    let mut out = Vec::new();
    for trigger in resolver.onbuild(reference, platform).unwrap_or_default() {
        let err = |m: String| RawError::new(pos, Some("FROM"), format!("ONBUILD trigger {trigger:?} of base image {reference}: {m}"));
        let df = crate::parser::parse(&trigger, reference).map_err(|e| err(e.to_string()))?;
        for l in df.instructions {
            if matches!(l.inst, Instruction::From(_) | Instruction::Onbuild(_) | Instruction::Maintainer(_)) {
                return Err(err(format!("{} is not allowed as an ONBUILD trigger", l.inst.keyword())));
            }
            let keyword = l.inst.keyword().to_string();
            out.push(Located { pos, inst: l.inst, keyword });
        }
    }
    Ok(out)
}
