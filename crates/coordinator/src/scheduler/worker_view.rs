//! What the scheduler can say about its connected workers, for the web
//! dashboard's Workers page (`Scheduler::workers`): a copy taken inside
//! the actor, so a reader never holds scheduling data.

use std::collections::{BTreeMap, BTreeSet};

use super::Core;

/// One connected worker as the scheduler sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: String,
    pub platform: String,
    pub labels: BTreeMap<String, String>,
    pub max_parallel: u32,
    /// Tenants whose steps it may run (its pool's).
    pub tenants: BTreeSet<String>,
    pub draining: bool,
    /// Milliseconds since its last heartbeat or message.
    pub last_seen_ago_ms: u64,
    /// Layers and cache-mount snapshots it said it holds at registration.
    pub layers_held: usize,
    pub snapshots_held: usize,
    /// The steps it runs now.
    pub running: Vec<RunningStep>,
    /// Its disk against its limits, from its heartbeats (`None`: it has
    /// not said; an operator's figure, not a tenant's).
    pub disk: Option<crate::model::DiskUse>,
}

/// A step running on a worker: whose it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningStep {
    pub namespace: String,
    pub name: String,
    pub build_ids: Vec<String>,
}

impl Core {
    pub(super) fn worker_views(&self) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|w| WorkerView {
                id: w.info.id.clone(),
                platform: w.info.platform.clone(),
                labels: w.info.labels.clone(),
                max_parallel: w.info.max_parallel,
                tenants: w.info.tenants.clone(),
                draining: w.draining,
                last_seen_ago_ms: w.last_seen.elapsed().as_millis() as u64,
                layers_held: w.info.layers.len(),
                snapshots_held: w.info.snapshots.len(),
                disk: w.disk,
                running: w
                    .running
                    .iter()
                    .filter_map(|a| self.assignments.get(a).and_then(|k| self.execs.get(k)))
                    .map(|e| RunningStep {
                        namespace: e.namespace.clone(),
                        name: e.node.name.clone(),
                        build_ids: e.waiters.iter().map(|(b, _)| b.clone()).collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}
