//! HTTPS for the dashboard, with the certificate and key of the
//! coordinator's `[tls]` section (PEM files), so the dashboard is behind
//! the same TLS as the gRPC API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How long a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("dashboard tls: reading {path}: {message}")]
    Pem { path: String, message: String },
    #[error("dashboard tls: {cert} and {key}: {message}")]
    Config { cert: String, key: String, message: String },
}

fn pem_error(p: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem { path: p.display().to_string(), message: e.to_string() }
}

/// A TLS server config (HTTP/1.1) from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert).map_err(pem_error(cert))?.collect::<Result<Vec<_>, _>>().map_err(pem_error(cert))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: cert.display().to_string(), message: "no CERTIFICATE in it".into() });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
    let config_error = |e: rustls::Error| TlsError::Config { cert: cert.display().to_string(), key: key.display().to_string(), message: e.to_string() };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>, router: axum::Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!("dashboard: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
        });
    }
}
