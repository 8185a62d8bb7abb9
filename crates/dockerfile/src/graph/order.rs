//! The stages a target needs, in dependency order.

use super::StageState;
use crate::error::{Pos, RawError};

/// Stages the target needs, dependencies first; a cycle is an error that
/// names the stages in it.
pub(super) fn topo_order(stages: &[StageState], target: usize) -> Result<Vec<usize>, RawError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    let label = |i: usize| {
        stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage {i}"))
    };
    // Iterative DFS: deep dependency chains must not overflow the stack.
    let mut stack: Vec<(usize, Vec<(usize, Pos)>)> = Vec::new();
    mark[target] = Mark::Active;
    stack.push((
        target,
        stages[target]
            .deps
            .iter()
            .map(|(d, p)| (*d, *p))
            .rev()
            .collect(),
    ));
    while let Some((node, todo)) = stack.last_mut() {
        let node = *node;
        match todo.pop() {
            Some((dep, pos)) => match mark[dep] {
                Mark::Done => {}
                Mark::Active => {
                    let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|(n, _)| label(*n)).collect();
                    cycle.push(label(dep));
                    return Err(RawError::new(
                        pos,
                        None,
                        format!("circular dependency between stages: {}", cycle.join(" -> ")),
                    ));
                }
                Mark::New => {
                    mark[dep] = Mark::Active;
                    stack.push((
                        dep,
                        stages[dep]
                            .deps
                            .iter()
                            .map(|(d, p)| (*d, *p))
                            .rev()
                            .collect(),
                    ));
                }
            },
            None => {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}
