//! Property (issue #16): ENV, LABEL and ARG word splitting round-trips. For
//! random key/value maps, rendering them as one instruction with every
//! value double-quoted (`"`, `$` and the escape character escaped, as the
//! Dockerfile reference's quoting rules allow) and building the graph gives
//! back the same map, with either escape character.

use std::collections::BTreeMap;

use proptest::prelude::*;
mod support;

use rbk_dockerfile::{Graph, StepKind};

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", "[ -~\té€]{0,16}", 1..6)
}

/// A value as one double-quoted word.
fn quote(v: &str, escape: char) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if c == '"' || c == '$' || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn render(kw: &str, m: &BTreeMap<String, String>, escape: char) -> String {
    let pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v, escape)))
        .collect();
    let directive = if escape == '`' { "# escape=`\n" } else { "" };
    let run = if kw == "ARG" { "RUN true\n" } else { "" };
    format!("{directive}FROM alpine\n{kw} {}\n{run}", pairs.join(" "))
}

fn build(text: &str) -> Result<Graph, TestCaseError> {
    support::graph(text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))
}

fn check(kw: &str, m: &BTreeMap<String, String>, escape: char) -> Result<(), TestCaseError> {
    let text = render(kw, m, escape);
    let g = build(&text)?;
    let cfg = &g.stages[g.target].config;
    let got: BTreeMap<String, String> = match kw {
        "ENV" => cfg.env.iter().cloned().collect(),
        "LABEL" => cfg.labels.clone(),
        _ => g
            .steps
            .iter()
            .find_map(|s| match &s.kind {
                StepKind::Run(r) => Some(r.env.iter().cloned().collect()),
                _ => None,
            })
            .unwrap_or_default(),
    };
    prop_assert_eq!(&got, m, "{}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn env_pairs_round_trip(m in map(), backtick in any::<bool>()) {
        check("ENV", &m, if backtick { '`' } else { '\\' })?;
    }

    #[test]
    fn label_pairs_round_trip(m in map(), backtick in any::<bool>()) {
        check("LABEL", &m, if backtick { '`' } else { '\\' })?;
    }

    #[test]
    fn arg_defaults_round_trip(m in map(), backtick in any::<bool>()) {
        check("ARG", &m, if backtick { '`' } else { '\\' })?;
    }
}
