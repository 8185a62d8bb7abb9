//! The embedded coordinator's durable state: the action cache and the
//! cache-mount heads, in one JSON file written atomically (temp + rename).
//!
//! It holds the same facts as `rbk_coordinator::state` (whose state machine
//! is in-memory only for now); one process owns it for the length of a
//! build, so a plain file is enough for the embedded default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};

/// A step's result: the layer it produced (blobs live in the content store
/// under `blake3`, so any worker can fetch them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub digest: String,
    pub diff_id: String,
    pub blake3: String,
    pub size: u64,
    pub media_type: String,
}

/// The newest snapshot of a cache mount and how many commits led to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHead {
    pub snapshot: String,
    pub generation: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateData {
    /// Step key (hex) → result.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionResult>,
    /// Scoped cache id (`namespace/id`) → head.
    #[serde(default)]
    pub heads: BTreeMap<String, CacheHead>,
}

/// The state file and its contents.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    pub data: StateData,
    /// `lock`, held exclusively while this `State` lives: two builds on one
    /// state directory take turns instead of overwriting each other's
    /// action-cache entries and cache heads.
    _lock: std::fs::File,
}

impl State {
    /// Opens `dir/state.json`, or starts empty when there is none. Waits
    /// while another build holds the directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BuildError::io(dir, format!("creating the state directory: {e}")))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BuildError::io(&lock_path, e))?;
        lock.lock()
            .map_err(|e| BuildError::io(&lock_path, format!("locking: {e}")))?;
        let path = dir.join("state.json");
        let data = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                BuildError::io(&path, format!("not a valid rbk build state file: {e}"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateData::default(),
            Err(e) => return Err(BuildError::io(&path, e)),
        };
        Ok(State {
            path,
            data,
            _lock: lock,
        })
    }

    /// Writes the state; a crash leaves either the old or the new file.
    pub fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.data).expect("state serialises");
        std::fs::write(&tmp, bytes).map_err(|e| BuildError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| BuildError::io(&self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(dir.path()).unwrap();
        s.data.heads.insert(
            "local/x".into(),
            CacheHead {
                snapshot: "abc".into(),
                generation: 2,
            },
        );
        s.save().unwrap();
        drop(s);
        let again = State::open(dir.path()).unwrap();
        assert_eq!(again.data.heads["local/x"].generation, 2);
    }

    #[test]
    fn a_second_build_waits_for_the_state_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = State::open(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_owned();
        let t = std::thread::spawn(move || {
            let s = State::open(&d).unwrap();
            tx.send(s.data.heads.len()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "opened while locked"
        );
        let mut first = first;
        first.data.heads.insert(
            "local/x".into(),
            CacheHead {
                snapshot: "abc".into(),
                generation: 1,
            },
        );
        first.save().unwrap();
        drop(first);
        assert_eq!(
            rx.recv().unwrap(),
            1,
            "the waiter sees what the first build saved"
        );
        t.join().unwrap();
    }

    #[test]
    fn corrupt_state_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let e = State::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("not a valid"), "{e}");
    }
}
