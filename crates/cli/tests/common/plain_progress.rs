#![allow(dead_code)]
//! Reading a build's plain progress the way a test checks it: the steps
//! that ran and those that were cached. (The image itself: oci_archive.rs.)

/// Steps that ran and steps that were CACHED, from plain progress: blocks
/// headed `#N [k/n] INSTRUCTION` (not FROM, which runs nothing, and not
/// the internal blocks such as an ADD URL's re-validation) ending
/// `#N DONE 0.1s` or `#N CACHED`.
pub fn counts(progress: &str) -> (usize, usize) {
    let mut headers: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for l in progress.lines().filter(|l| l.starts_with('#')) {
        if let Some((id, rest)) = l.split_once(' ') {
            headers.entry(id).or_insert(rest);
        }
    }
    let step = |id: &str| headers.get(id).is_some_and(|h| h.starts_with('[') && !h.contains("] FROM ") && !h.contains("] ONBUILD FROM "));
    let ending = |w: &str| progress.lines().filter(|l| l.split_once(' ').is_some_and(|(id, rest)| step(id) && rest.split(' ').next() == Some(w))).count();
    (ending("DONE"), ending("CACHED"))
}

/// Whether plain progress shows the step `label` as a `#N CACHED` block.
#[allow(dead_code)]
pub fn is_cached(progress: &str, label: &str) -> bool {
    progress
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(label))
        .filter_map(|l| l.split(' ').next())
        .any(|n| progress.lines().any(|l| l == format!("{n} CACHED")))
}
