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

#[cfg(test)]
mod tests {
    use crate::{BaseResolver, BuildOptions, FsContext, StepKind, build_graph};

    /// A base image whose config carries `triggers`.
    struct WithTriggers(Vec<String>);

    impl BaseResolver for WithTriggers {
        fn resolve(&self, _: &str, _: Option<&str>) -> Option<String> {
            Some("sha256:0000000000000000000000000000000000000000000000000000000000000000".into())
        }
        fn onbuild(&self, _: &str, _: Option<&str>) -> Option<Vec<String>> {
            Some(self.0.clone())
        }
    }

    fn graph(triggers: &[&str], df: &str) -> Result<crate::Graph, crate::Error> {
        let dir = tempfile::tempdir().unwrap();
        let r = WithTriggers(triggers.iter().map(|t| t.to_string()).collect());
        build_graph(df, &BuildOptions::default(), &FsContext::new(dir.path()), &r)
    }

    #[test]
    fn triggers_become_the_first_steps_of_the_stage_in_order() {
        let g = graph(&["RUN echo one", "ENV X=2", "RUN echo $X"], "FROM base\nRUN echo child\n").unwrap();
        let texts: Vec<&str> = g.steps.iter().map(|s| s.instruction.as_str()).collect();
        assert_eq!(texts, ["FROM base", "ONBUILD RUN echo one", "ONBUILD RUN echo $X", "RUN echo child"]);
        let StepKind::Run(r) = &g.steps[2].kind else { panic!("{:?}", g.steps[2].kind) };
        assert!(r.env.contains(&("X".into(), "2".into())), "a trigger's ENV applies to what follows");
    }

    #[test]
    fn a_forbidden_trigger_is_an_error_naming_the_image() {
        let e = graph(&["FROM other"], "FROM base\n").unwrap_err().to_string();
        assert!(e.contains("ONBUILD trigger \"FROM other\" of base image base") && e.contains("not allowed"), "{e}");
    }
}
