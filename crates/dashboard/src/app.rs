//! What every handler shares: the coordinator, the sessions, the options.

use std::sync::Arc;

use rbk_coordinator::Coordinator;

use crate::cluster_view::ClusterView;
use crate::session::Sessions;

/// How the dashboard is served.
#[derive(Debug, Clone, Default)]
pub struct DashboardOptions {
    /// Mark the session cookie `Secure` (HTTPS only): with `[tls]`, or
    /// behind an ingress or proxy that ends TLS.
    pub secure_cookies: bool,
    /// The operator's token (the `[admin]` token): opens Workers (all of
    /// them) and Cluster.
    pub operator_token: Option<String>,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub coordinator: Coordinator,
    pub sessions: Sessions,
    pub options: Arc<DashboardOptions>,
    pub cluster: Option<Arc<dyn ClusterView>>,
}
