//! `Build`: what clients call. Every call is scoped to the caller's tenant
//! (the namespace of its token); another tenant's build is "not found".

use std::collections::BTreeMap;
use std::sync::Arc;

use rbk_proto::build::build_server::Build;
use rbk_proto::build::{self as pb};
use tonic::{Request, Response, Status};

use super::{EventStream, scheduler_status};
use crate::auth::tenant_of;
use rbk_proto::leader::LeaderGate;
use crate::model::{BuildRequest, Secrets};
use crate::scheduler::Scheduler;
use crate::state::{CoordinatorState, now_ms, query};
use crate::wire::{build_to_wire, head_to_wire, step_from_wire};

/// `Build` over the state (status, lists, heads), the scheduler (submit,
/// cancel) and, replicated, the leader gate (which `Watch` consults).
pub(crate) struct BuildService {
    pub(crate) state: Arc<dyn CoordinatorState>,
    pub(crate) scheduler: Scheduler,
    pub(crate) gate: Option<Arc<dyn LeaderGate>>,
    /// The per-tenant budgets, reported with the heads.
    pub(crate) eviction: Arc<crate::eviction::EvictionPolicy>,
}

#[async_trait::async_trait]
impl Build for BuildService {
    type SubmitStream = EventStream<pb::BuildEvent>;

    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<Response<Self::SubmitStream>, Status> {
        let namespace = tenant_of(&req)?;
        // Who submitted, by the name the token file gives the token (the
        // tenant's name when it gives none).
        let hash = req.extensions().get::<crate::auth::Credential>().map(|c| c.0.clone()).unwrap_or_default();
        let submitter = query(&*self.state, |m| m.token_name(&hash).map(str::to_owned)).unwrap_or_else(|| namespace.clone());
        let req = req.into_inner();
        let options = req.options.unwrap_or_default();
        // Kept in the scheduler's memory for this build only (see Secrets).
        let secrets: BTreeMap<String, Vec<u8>> = req.secrets.into_iter().collect();
        // Clients plan: the coordinator never reads a Dockerfile.
        if req.steps.is_empty() {
            return Err(Status::failed_precondition(
                "this coordinator has no Dockerfile planner configured; submit a planned graph (steps)",
            ));
        }
        let steps = req.steps.into_iter().map(step_from_wire).collect::<Result<_, _>>()?;
        let (build_id, events) = self
            .scheduler
            .submit_with_secrets(BuildRequest { namespace, steps, no_cache: options.no_cache, submitter }, Secrets(secrets))
            .await
            .map_err(scheduler_status)?;
        Ok(Response::new(super::submit_stream::bounded(build_id, events, super::submit_stream::SUBMIT_BACKLOG)))
    }

    type WatchStream = EventStream<pb::BuildEvent>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let namespace = tenant_of(&req)?;
        let (state, gate) = (self.state.clone(), self.gate.as_deref());
        super::watch::serve_watch(state, &self.scheduler, gate, &namespace, req.into_inner()).await.map(Response::new)
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::BuildStatus>, Status> {
        let namespace = tenant_of(&req)?;
        let id = req.into_inner().build_id;
        let build = query(&*self.state, |m| m.build(&id).filter(|b| b.namespace == namespace).cloned());
        build.map(|b| Response::new(build_to_wire(b))).ok_or_else(|| Status::not_found(format!("build {id} not found")))
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let id = req.into_inner().build_id;
        self.scheduler.cancel(&namespace, &id).await.map_err(scheduler_status)?;
        Ok(Response::new(pb::CancelResponse {}))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let limit = match req.into_inner().limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let builds = query(&*self.state, |m| m.builds_of(&namespace, limit));
        Ok(Response::new(pb::ListResponse { builds: builds.into_iter().map(build_to_wire).collect() }))
    }

    async fn list_caches(&self, req: Request<pb::ListCachesRequest>) -> Result<Response<pb::ListCachesResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let listing = crate::cache_prune::list(&*self.state, &self.eviction, &namespace);
        let heads = listing.heads.into_iter().map(|(k, h)| head_to_wire(k, h)).collect();
        Ok(Response::new(pb::ListCachesResponse {
            heads,
            heads_budget_bytes: listing.budget.heads_bytes.unwrap_or(0),
            action_entries: listing.usage.actions,
            action_bytes: listing.usage.actions_bytes,
            actions_budget_bytes: listing.budget.actions_bytes.unwrap_or(0),
            keep_duration_ms: self.eviction.keep_duration.map_or(0, |d| d.as_millis() as u64),
        }))
    }

    async fn prune_caches(&self, req: Request<pb::PruneCachesRequest>) -> Result<Response<pb::PruneCachesResponse>, Status> {
        let namespace = tenant_of(&req)?;
        let r = req.into_inner();
        let filter = crate::cache_prune::PruneFilter { ids: r.ids, unused_for_ms: r.unused_for_ms };
        let dropped = crate::cache_prune::prune(&*self.state, &namespace, &filter, now_ms()).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::PruneCachesResponse { dropped: dropped.into_iter().map(|(k, h)| head_to_wire(k, h)).collect() }))
    }
}
