//! Per-tenant limits on what the scheduler holds (issue #15, item 7): one
//! tenant submitting without end would otherwise fill the coordinator's
//! memory and queue for everyone. A submit beyond a limit is refused
//! (`RESOURCE_EXHAUSTED`, naming the limit and its config key); builds
//! already accepted are not touched.

use super::{Core, SchedulerError};
use crate::model::BuildRequest;

impl Core {
    /// Whether `req`'s tenant may start one more build of `req.steps.len()`
    /// steps now.
    pub(super) fn check_quota(&self, req: &BuildRequest) -> Result<(), SchedulerError> {
        let (max_builds, max_steps) = (self.config.max_builds_per_tenant, self.config.max_steps_per_tenant);
        let (mut builds, mut steps) = (0usize, 0usize);
        for b in self.builds.values().filter(|b| b.namespace == req.namespace) {
            builds += 1;
            steps += b.remaining;
        }
        let tenant = &req.namespace;
        if max_builds > 0 && builds >= max_builds {
            return Err(SchedulerError::Quota(format!(
                "tenant {tenant:?} has {builds} builds running, the most it may ([scheduler] max_builds_per_tenant = {max_builds}); \
                 submit again when one has finished"
            )));
        }
        if max_steps > 0 && steps + req.steps.len() > max_steps {
            return Err(SchedulerError::Quota(format!(
                "tenant {tenant:?} has {steps} unfinished steps and this build adds {}, more than it may have \
                 ([scheduler] max_steps_per_tenant = {max_steps}); submit again when builds have finished",
                req.steps.len()
            )));
        }
        Ok(())
    }
}
