//! A running coordinator: its parts ([`Coordinator`]) and the gRPC server
//! that serves the services (`service/`, `ssh_relay.rs`) over them, behind
//! the token check of `auth.rs` and, replicated, the leader gate.

use std::sync::Arc;

use rbk_proto::build::build_server::BuildServer;
use rbk_proto::content::content_server::ContentServer;
use rbk_proto::worker::worker_server::WorkerServer;
use rbk_store::Store;
use tonic::{Request, Status};

use crate::auth::{Auth, AuthError, TokenFile};
use crate::cache_heads::{CacheHeads, Merger};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::build::BuildService;
use crate::service::content::ContentService;
use crate::service::history::HistoryService;
use crate::service::worker::WorkerService;
use crate::state::CoordinatorState;

/// Everything a running coordinator is made of.
#[derive(Clone)]
pub struct Coordinator {
    pub state: Arc<dyn CoordinatorState>,
    pub scheduler: Scheduler,
    pub auth: Auth,
    store: Arc<dyn Store>,
    heartbeat_ms: u64,
    /// Replicated coordinators: refuses Build/Worker calls on followers.
    gate: Option<Arc<dyn rbk_proto::leader::LeaderGate>>,
    /// Clients serving SSH agents to their builds' steps.
    pub ssh: crate::ssh_relay::AgentRelay,
    /// Streams per connection, keepalives, handshake timeout.
    limits: crate::server_limits::ServerLimits,
    /// The store collector and the admin token's hash (see
    /// [`Self::with_collector`]).
    collector: Option<(crate::collector::Collector, Option<[u8; 32]>)>,
    /// The per-tenant budgets (`rbk cache du` shows them).
    eviction: Arc<crate::eviction::EvictionPolicy>,
    /// Registries the farm pulls from and pushes to (config `[registries]`).
    registries: Arc<crate::registries::RegistryAccess>,
    /// Which store blob holds which pulled layer.
    layer_memo: Arc<crate::farm_images::memo::LayerMemo>,
}

impl Coordinator {
    /// Starts the scheduler and installs the token file into `state`.
    pub async fn start(
        state: Arc<dyn CoordinatorState>,
        store: Arc<dyn Store>,
        merger: Arc<dyn Merger>,
        tokens: &TokenFile,
        config: SchedulerConfig,
    ) -> Result<Self, AuthError> {
        let coordinator = Self::new(state, store, merger, config);
        coordinator.auth.install(tokens).await?;
        Ok(coordinator)
    }

    /// Starts the scheduler without touching the token table: for a
    /// replicated coordinator, whose leader installs the token file (see
    /// `rbk_raft::leadership`); installing an empty file would revoke
    /// every token.
    pub fn new(state: Arc<dyn CoordinatorState>, store: Arc<dyn Store>, merger: Arc<dyn Merger>, config: SchedulerConfig) -> Self {
        let auth = Auth::new(state.clone());
        let heads = CacheHeads::new(state.clone(), merger);
        let heartbeat_ms = config.heartbeat_interval.as_millis() as u64;
        let scheduler = Scheduler::start(state.clone(), heads, config).with_contexts(store.clone());
        Self {
            state,
            scheduler,
            auth,
            store,
            heartbeat_ms,
            gate: None,
            ssh: Default::default(),
            limits: Default::default(),
            collector: None,
            eviction: Arc::default(),
            registries: Arc::default(),
            layer_memo: Arc::default(),
        }
    }

    /// The registries the farm pulls from and pushes to, and the
    /// tenants' credentials for them (config `[registries]`).
    pub fn with_registries(mut self, config: crate::registries::RegistriesSection) -> Self {
        self.registries = Arc::new(crate::registries::RegistryAccess::new(config));
        self
    }

    /// Only the leader of a replicated coordinator schedules: with a gate,
    /// Build and Worker calls are checked (after the token) and followers
    /// answer with [`rbk_proto::leader::redirect`].
    pub fn with_gate(mut self, gate: Arc<dyn rbk_proto::leader::LeaderGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The gRPC server's connection limits (config `[server]`).
    pub fn with_limits(mut self, limits: crate::server_limits::ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs the store collector on the leader (on `config.interval`, and
    /// on demand through the Admin service for callers presenting
    /// `admin_token`). Call after [`Self::with_gate`]: only the node the
    /// gate lets through collects.
    pub fn with_collector(mut self, config: crate::collector::GcConfig, eviction: crate::eviction::EvictionPolicy, admin_token: Option<&str>) -> Self {
        let gate = self.gate.clone();
        let leader: crate::collector::IsLeader = Arc::new(move || gate.as_ref().is_none_or(|g| g.check().is_ok()));
        self.eviction = Arc::new(eviction.clone());
        let collector = crate::collector::Collector::new(self.state.clone(), self.store.clone(), config, leader).with_eviction(eviction);
        collector.clone().spawn_schedule();
        self.collector = Some((collector, admin_token.map(|t| *blake3::hash(t.trim().as_bytes()).as_bytes())));
        self
    }

    /// The per-tenant budgets (`rbk cache du` and the dashboard show them).
    pub fn eviction(&self) -> &crate::eviction::EvictionPolicy {
        &self.eviction
    }

    /// The store collector, when [`Self::with_collector`] set one up.
    pub fn collector(&self) -> Option<&crate::collector::Collector> {
        self.collector.as_ref().map(|(c, _)| c)
    }

    fn build_service(&self) -> BuildService {
        BuildService { state: self.state.clone(), scheduler: self.scheduler.clone(), gate: self.gate.clone(), eviction: self.eviction.clone() }
    }

    /// Serves all three services on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// [`Self::serve`], over TLS when `tls` is given (config `[tls]`).
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let i = self.auth.interceptor();
        let (gate, auth) = (self.gate.clone(), i.clone());
        // The token first: a follower names its leader only to callers
        // that may talk to the cluster at all. A token the follower does
        // not know may be one its replicated state has not caught up with
        // (just after an election), so it answers "unavailable, retry"
        // without the leader's address rather than a final refusal. A
        // revoked token is refused as such by every node that knows it.
        let gated = move |req: Request<()>| {
            let follower = gate.as_ref().and_then(|g| g.check().err());
            match (auth(req), follower) {
                (Ok(req), None) => Ok(req),
                (Ok(_), Some(redirect)) => Err(redirect),
                (Err(refused), None) => Err(refused),
                (Err(refused), Some(_)) if crate::auth::is_final_refusal(&refused) => Err(refused),
                (Err(refused), Some(_)) => Err(Status::unavailable(format!("this coordinator is not the leader ({})", refused.message()))),
            }
        };
        let mut server = self.limits.apply(tonic::transport::Server::builder());
        if let Some(tls) = tls {
            server = server.tls_config(tls)?;
        }
        server
            .add_service(crate::watch_route::WatchBypass {
                gated: BuildServer::with_interceptor(self.build_service(), gated.clone()),
                // Watch decides itself whether a follower redirects.
                ungated: BuildServer::with_interceptor(self.build_service(), i.clone()),
            })
            .add_service(WorkerServer::with_interceptor(
                WorkerService { scheduler: self.scheduler.clone(), state: self.state.clone(), heartbeat_ms: self.heartbeat_ms },
                gated.clone(),
            ))
            // Pulls grant blobs (a replicated command): the leader's.
            .add_service(tonic::service::interceptor::InterceptedService::new(
                rbk_proto::images::images_server::ImagesServer::new(crate::service::images::ImagesService {
                    store: self.store.clone(),
                    state: self.state.clone(),
                    access: self.registries.clone(),
                    memo: self.layer_memo.clone(),
                })
                // Manifests and configs (registries cap manifests at 4 MiB).
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
                gated.clone(),
            ))
            // The logs are kept by the node that ran the build: the leader.
            .add_service(rbk_proto::history::history_server::HistoryServer::with_interceptor(
                HistoryService { state: self.state.clone(), history: self.scheduler.events().history().clone() },
                gated.clone(),
            ))
            .add_service(rbk_proto::ssh::ssh_relay_server::SshRelayServer::with_interceptor(
                crate::ssh_relay::SshRelayService::new(self.state.clone(), self.scheduler.clone(), self.ssh.clone()),
                gated,
            ))
            .add_optional_service(self.collector.clone().map(|(collector, token)| {
                rbk_proto::admin::admin_server::AdminServer::with_interceptor(
                    crate::service::admin::AdminService { collector },
                    crate::service::admin::admin_interceptor(token, self.gate.clone()),
                )
            }))
            .add_service(ContentServer::with_interceptor(ContentService { store: self.store.clone(), state: self.state.clone(), worker_uploads: Default::default() }, i))
            // TCP_NODELAY, as tonic's own `serve` sets it: with Nagle on, a
            // small reply waits for the peer's delayed ACK (~40 ms), which
            // request/response traffic (the relayed SSH agent protocol)
            // pays on every exchange.
            .serve_with_incoming_shutdown(self.limits.incoming(listener), shutdown)
            .await
    }
}

