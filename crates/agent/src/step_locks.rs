//! What a running step holds on a worker, and what work done beside the
//! steps (the disk-limit sweep, background cache commits) respects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The locks of one worker's local state, shared by its steps and its
/// background work.
#[derive(Debug, Default)]
pub struct StepLocks {
    /// One user at a time per local cache directory (by cache key): a step
    /// from restore to capture, a sweep evicting it.
    caches: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Context restores exclude sweeps (which may remove contexts).
    pub context: tokio::sync::Mutex<()>,
    /// Restored contexts in use by running steps (digest → users): never
    /// evicted under a step.
    pub contexts_in_use: Arc<Mutex<HashMap<String, usize>>>,
    /// Steps hold it shared while they run (a blob is fetched, then
    /// unpacked or read); eviction of blobs takes it exclusively, so it
    /// happens only between steps.
    pub blobs: tokio::sync::RwLock<()>,
}

impl StepLocks {
    /// The lock of the local cache directory `key`.
    pub fn cache(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.caches.lock().expect("cache lock map").entry(key.to_owned()).or_default().clone()
    }

    /// Names of the contexts running steps use now.
    pub fn contexts_in_use(&self) -> std::collections::HashSet<String> {
        self.contexts_in_use.lock().expect("context use map").keys().cloned().collect()
    }
}
