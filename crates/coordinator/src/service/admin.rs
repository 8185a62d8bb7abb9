//! The Admin service: operator calls that act on the whole farm (today:
//! a store collection on demand). Authenticated by the admin token of
//! `[admin] token_file`, compared by blake3 hash, never by tenant tokens:
//! a tenant must not be able to make the farm delete anything.

use std::sync::Arc;

use rbk_proto::admin::admin_server::Admin;
use rbk_proto::admin::{CollectGarbageReport, CollectGarbageRequest};
use tonic::{Request, Response, Status};

use crate::collector::{Collector, CollectorError};

pub(crate) struct AdminService {
    pub collector: Collector,
}

/// Refuses every call without the admin token (or every call at all when
/// no admin token is configured), then asks `gate` whether this node leads.
pub(crate) fn admin_interceptor(
    token_hash: Option<[u8; 32]>,
    gate: Option<Arc<dyn rbk_proto::leader::LeaderGate>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let Some(expected) = token_hash else {
            return Err(Status::permission_denied("the Admin service is disabled: the coordinator config has no [admin] token_file"));
        };
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing admin token (authorization: Bearer ...)"))?;
        // Hashes compared, so the time taken says nothing about the token.
        if blake3::hash(presented.trim().as_bytes()) != blake3::Hash::from(expected) {
            return Err(Status::permission_denied("not the admin token"));
        }
        if let Some(refused) = gate.as_ref().and_then(|g| g.check().err()) {
            return Err(refused);
        }
        Ok(req)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn collect_garbage(&self, req: Request<CollectGarbageRequest>) -> Result<Response<CollectGarbageReport>, Status> {
        let req = req.into_inner();
        let dry_run = req.dry_run;
        let r = self.collector.run_verified(dry_run, req.verify).await.map_err(|e| match e {
            CollectorError::NotLeader => Status::unavailable(e.to_string()),
            CollectorError::State(_) => Status::unavailable(e.to_string()),
            CollectorError::Collect(_) => Status::internal(e.to_string()),
        })?;
        Ok(Response::new(CollectGarbageReport {
            dry_run,
            objects_scanned: r.objects_scanned,
            bytes_scanned: r.bytes_scanned,
            live_objects: r.live_objects,
            young_objects: r.young_objects,
            rescued_objects: r.rescued_objects,
            contended_objects: r.contended_objects,
            deleted_objects: r.deleted_objects,
            freed_bytes: r.freed_bytes,
            missing_roots: r.missing_roots.iter().map(|d| d.to_string()).collect(),
            duration_ms: r.duration.as_millis() as u64,
            evicted_heads: r.evicted.heads.len() as u64,
            evicted_actions: r.evicted.actions.len() as u64,
            evicted_bytes: r.evicted.heads_bytes + r.evicted.actions_bytes,
            verified_objects: r.verified_objects,
            missing_live: r.missing_live.iter().map(|d| d.to_string()).collect(),
        }))
    }
}
