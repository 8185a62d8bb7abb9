#![allow(dead_code)]
//! Reading a build's result the way a test checks it: the steps that ran
//! or were cached (plain progress), a file's content in an OCI archive.

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

/// The content of `path` in the image of an OCI archive (topmost layer wins).
pub fn file_in_image(archive: &std::path::Path, path: &str) -> Option<String> {
    use std::io::Read;
    let mut blobs = std::collections::HashMap::new();
    let mut index = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if name == "index.json" {
            index = data;
        } else if let Some(h) = name.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{h}"), data);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blobs[index["manifests"][0]["digest"].as_str().unwrap()]).unwrap();
    for layer in manifest["layers"].as_array().unwrap().iter().rev() {
        let blob = &blobs[layer["digest"].as_str().unwrap()];
        let mut t = tar::Archive::new(rbk_image::decompress(&blob[..]).unwrap());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                return Some(s);
            }
        }
    }
    None
}
