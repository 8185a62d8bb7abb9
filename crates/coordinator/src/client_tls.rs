//! How every client (`rbk submit`, `rbk worker`, `rbk cache`, the remote
//! store, leader following) turns a coordinator URL into a connection.
//!
//! One place, so `https://` means the same thing everywhere: TLS, trusting
//! the system's roots plus an optional extra CA (`--tls-ca FILE` or
//! `RBK_TLS_CA`, for a private or self-signed coordinator certificate).
//! `http://` stays plain HTTP/2.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The extra CA the process trusts (set once by the command line).
static EXTRA_CA: OnceLock<Option<Certificate>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("coordinator url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("reading the TLS CA certificate {path}: {source}")]
    Ca { path: PathBuf, source: std::io::Error },
    #[error("TLS CA certificate {path}: no PEM certificate in it")]
    NotPem { path: PathBuf },
}

/// Trusts the PEM certificates in `path` (besides the system roots) for
/// every `https://` coordinator this process connects to; `None` falls back
/// to `RBK_TLS_CA`. Call once, before connecting; later calls are ignored.
pub fn trust_ca(path: Option<&Path>) -> Result<(), ClientTlsError> {
    let from_env = std::env::var_os("RBK_TLS_CA").filter(|v| !v.is_empty()).map(PathBuf::from);
    let cert = match path.map(Path::to_path_buf).or(from_env) {
        Some(p) => Some(load_ca(&p)?),
        None => None,
    };
    let _ = EXTRA_CA.set(cert);
    Ok(())
}

fn load_ca(path: &Path) -> Result<Certificate, ClientTlsError> {
    let pem = std::fs::read(path).map_err(|source| ClientTlsError::Ca { path: path.into(), source })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ClientTlsError::NotPem { path: path.into() });
    }
    Ok(Certificate::from_pem(pem))
}

/// The endpoint for `url`, with TLS when it is `https://`, and the
/// connect timeout and HTTP/2 keepalives every long-lived rbk stream wants
/// (a stopped coordinator breaks the stream within seconds instead of
/// leaving it hanging).
pub fn endpoint(url: &str) -> Result<Endpoint, ClientTlsError> {
    let bad = |message: String| ClientTlsError::Url { url: url.into(), message };
    let mut e = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        e = e.tls_config(tls_config()).map_err(|e| bad(format!("TLS: {e}")))?;
    } else if !url.starts_with("http://") {
        return Err(bad("expected an http:// or https:// URL".into()));
    }
    Ok(e)
}

/// `e` with its sources: tonic's connect error alone says only "transport
/// error"; the reason (`invalid peer certificate: UnknownIssuer`,
/// `Connection refused`) is in the chain.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Whether connecting failed because the TLS handshake was refused (rustls
/// reports an untrusted or malformed peer as `InvalidData`): retrying
/// cannot help, unlike a refused or reset connection.
pub fn is_refused_handshake(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData) {
            return true;
        }
        source = s.source();
    }
    false
}

fn tls_config() -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new();
    // A minimal container may have no system roots; then only the extra CA.
    static SYSTEM_ROOTS: OnceLock<bool> = OnceLock::new();
    if *SYSTEM_ROOTS.get_or_init(|| !rustls_native_certs::load_native_certs().certs.is_empty()) {
        c = c.with_native_roots();
    }
    if let Some(Some(ca)) = EXTRA_CA.get() {
        c = c.ca_certificate(ca.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_both_make_endpoints() {
        assert!(endpoint("http://127.0.0.1:7070").is_ok());
        assert!(endpoint("https://rbk.example.com").is_ok());
    }

    #[test]
    fn a_url_without_a_scheme_is_refused_naming_it() {
        let e = endpoint("127.0.0.1:7070").unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:7070") && e.contains("https://"), "{e}");
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("rbk-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = load_ca(&p).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("PEM"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
