//! Steps no connected worker can run.
//!
//! A step waits in the queue while workers are busy; that is normal. But a
//! step whose tenant no pool serves, or whose platform or labels no worker
//! has, would wait forever, and its build with it (issue #15: builds that
//! no worker could take piled up without bound). Once no connected,
//! non-draining worker could run a step (capacity aside) for
//! [`SchedulerConfig::unschedulable_timeout`](super::SchedulerConfig), it
//! fails with a message naming what is missing. The clock restarts
//! whenever a worker that could run it is connected.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Core, Exec, ExecKey, WorkerSlot};

impl Core {
    /// For an execution no worker took just now: `true` when it was failed
    /// because no worker could run it for longer than the timeout, `false`
    /// to keep it queued.
    pub(super) async fn expire_if_unschedulable(&mut self, key: &ExecKey) -> bool {
        let Some(exec) = self.execs.get_mut(key) else { return true };
        let Some(missing) = missing(&self.workers, exec) else {
            exec.unschedulable_since = None;
            return false;
        };
        let since = *exec.unschedulable_since.get_or_insert_with(Instant::now);
        let timeout = self.config.unschedulable_timeout;
        if since.elapsed() < timeout {
            return false;
        }
        let exec = self.execs.remove(key).expect("looked up above");
        let message = format!(
            "step {} cannot be scheduled: {missing} (waited {timeout:?}, [scheduler] unschedulable_timeout_ms)",
            exec.node.name
        );
        tracing::warn!(tenant = %exec.namespace, "{message}");
        self.fail_exec(exec, "", message, -1).await;
        true
    }
}

/// What no connected worker offers `exec`, or `None` when one could run
/// it once it has a free slot.
fn missing(workers: &BTreeMap<String, WorkerSlot>, exec: &Exec) -> Option<String> {
    let node = &exec.node;
    let tenant = &exec.namespace;
    let serving: Vec<&WorkerSlot> = workers.values().filter(|w| !w.draining && w.info.tenants.contains(tenant)).collect();
    if serving.is_empty() {
        return Some(format!("no connected worker serves tenant {tenant:?} (a pool lists its tenants in the token file)"));
    }
    let on_platform: Vec<&WorkerSlot> = serving.into_iter().filter(|w| super::platform::fit(&node.platform, &w.info).is_some()).collect();
    if on_platform.is_empty() {
        return Some(format!("no connected worker serving tenant {tenant:?} has platform {} or emulates it (rbk worker --emulation with a QEMU binfmt_misc handler)", node.platform));
    }
    let has = |w: &WorkerSlot, k: &String, v: &String| w.info.labels.get(k) == Some(v);
    if on_platform.iter().any(|w| node.labels.iter().all(|(k, v)| has(w, k, v))) {
        return None;
    }
    let where_ = if node.platform.is_empty() { String::new() } else { format!(" on {}", node.platform) };
    let lacking: Vec<String> =
        node.labels.iter().filter(|(k, v)| !on_platform.iter().any(|w| has(w, k, v))).map(|(k, v)| format!("{k}={v}")).collect();
    if lacking.is_empty() {
        let all: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(format!("no connected worker serving tenant {tenant:?}{where_} has all of the labels {}", all.join(", ")))
    } else {
        Some(format!("no connected worker serving tenant {tenant:?}{where_} has label {}", lacking.join(", ")))
    }
}
