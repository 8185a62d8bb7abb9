//! The dashboard's router and its HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use rbk_coordinator::Coordinator;

use crate::app::{App, DashboardOptions};
use crate::cluster_view::ClusterView;
use crate::session::Sessions;

/// The dashboard of one coordinator.
pub struct Dashboard {
    app: App,
}

impl Dashboard {
    pub fn new(coordinator: Coordinator, options: DashboardOptions, cluster: Option<Arc<dyn ClusterView>>) -> Self {
        let sessions = Sessions::new(coordinator.state.clone(), options.operator_token.as_deref());
        Self { app: App { coordinator, sessions, options: Arc::new(options), cluster } }
    }

    /// Every page, fragment and asset.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(crate::pages::index))
            .route("/login", get(crate::pages::login_form).post(crate::pages::login))
            .route("/logout", post(crate::pages::logout))
            .route("/builds", get(crate::pages::builds))
            .route("/builds/rows", get(crate::pages::build_rows_fragment))
            .route("/builds/{id}", get(crate::pages::build))
            .route("/builds/{id}/events", get(crate::live::events))
            .route("/workers", get(crate::pages::workers))
            .route("/caches", get(crate::caches::caches))
            .route("/caches/prune", post(crate::caches::prune_cache))
            .route("/caches/{id}", get(crate::caches::cache))
            .route("/cluster", get(crate::cluster::cluster))
            .route("/static/app.js", get(crate::pages::app_js))
            .route("/static/app.css", get(crate::pages::app_css))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.app.clone())
    }

    /// Serves on `listener` (over TLS with `tls`, see [`crate::tls`])
    /// until the process ends; returns the address.
    pub fn spawn(self, listener: tokio::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let router = self.router();
        match tls {
            Some(config) => {
                tokio::spawn(crate::tls::serve(listener, config, router));
            }
            None => {
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!("dashboard stopped serving: {e}");
                    }
                });
            }
        }
        Ok(addr)
    }
}

/// No script, style or frame from anywhere else; nothing sniffed; no
/// referrer; pages never framed by another site.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
