//! An exclusive lock on a file (created if missing), held while the
//! returned handle lives: two builds on one state directory, or on one
//! git context checkout, take turns.

use std::path::Path;

use anyhow::Context as _;

/// Opens (creating) `path` and locks it exclusively, waiting for a holder.
pub fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.lock().with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}
