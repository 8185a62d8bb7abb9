//! `--from=` / `from=` values: a stage by name or index, or an image.

use super::{Builder, StageState};
use crate::error::{Pos, RawError, did_you_mean};
use crate::instruction::*;
use crate::step::*;

impl Builder<'_> {
    /// Resolves a `--from=` / `from=` value to a stage or an image.
    pub(super) fn resolve_from(
        &self,
        v: &str,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
        kw: &str,
    ) -> Result<FromRef, RawError> {
        let err = |m: String| RawError::new(pos, Some(kw), m);
        let current = earlier.len();
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
            let idx: usize = v
                .parse()
                .map_err(|_| err(format!("stage index {v} is too large")))?;
            if idx >= current {
                return Err(err(format!(
                    "stage index {idx} does not name an earlier stage (this is stage {current})"
                )));
            }
            st.deps.entry(idx).or_insert(pos);
            return Ok(FromRef::Stage {
                stage: idx,
                step: 0,
            });
        }
        let lower = v.to_ascii_lowercase();
        if st.name.as_deref() == Some(lower.as_str()) {
            return Err(err(format!("stage '{v}' cannot copy or mount from itself")));
        }
        if let Some(i) = earlier
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            st.deps.entry(i).or_insert(pos);
            return Ok(FromRef::Stage { stage: i, step: 0 });
        }
        // A later stage: Docker allows it; the order check finds cycles.
        if let Some(i) = self.later_stage_index(&lower, current) {
            st.deps.entry(i).or_insert(pos);
            return Ok(FromRef::Stage { stage: i, step: 0 });
        }
        if v.contains([':', '/', '@']) {
            return Ok(FromRef::Image {
                reference: v.to_string(),
                digest: None,
            });
        }
        let names: Vec<String> = self.all_stage_names();
        let mut msg = format!("unknown stage '{v}'");
        if let Some(s) = did_you_mean(v, names.iter().map(String::as_str)) {
            msg.push_str(&format!("; did you mean '{s}'?"));
        }
        msg.push_str(&format!(
            " (to use an image, name it with a tag: '{v}:latest')"
        ));
        Err(err(msg))
    }

    pub(super) fn all_stage_names(&self) -> Vec<String> {
        self.df
            .instructions
            .iter()
            .filter_map(|l| match &l.inst {
                Instruction::From(f) => f.alias.clone(),
                _ => None,
            })
            .collect()
    }

    pub(super) fn later_stage_index(&self, name: &str, current: usize) -> Option<usize> {
        let mut idx = 0usize;
        for l in &self.df.instructions {
            if let Instruction::From(f) = &l.inst {
                if idx > current && f.alias.as_deref() == Some(name) {
                    return Some(idx);
                }
                idx += 1;
            }
        }
        None
    }
}
