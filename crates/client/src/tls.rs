//! How every client (`rbk submit`, `rbk worker`, `rbk cache`, the remote
//! store, leader following) turns a coordinator URL into a connection.
//!
//! One place, so `https://` means the same thing everywhere: TLS, trusting
//! the system's roots plus an optional extra CA (`--tls-ca FILE` or
//! `RBK_TLS_CA`, for a private or self-signed coordinator certificate).
//! `http://` stays plain HTTP/2.
//!
//! The extra CA is a value ([`ClientTls`]) the caller loads once and passes
//! to whatever connects, not a process-wide setting: two clients in one
//! process (a test, an embedded farm) may trust different CAs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// What a client trusts for `https://` coordinators: the system's roots
/// plus, optionally, one extra CA. `Default` trusts the system roots only.
#[derive(Clone, Default)]
pub struct ClientTls {
    extra_ca: Option<Certificate>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("extra_ca", &self.extra_ca.is_some()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("coordinator url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("reading the TLS CA certificate {path}: {source}")]
    Ca { path: PathBuf, source: std::io::Error },
    #[error("TLS CA certificate {path}: no PEM certificate in it")]
    NotPem { path: PathBuf },
}

impl ClientTls {
    /// Trusts the PEM certificates in `path` besides the system roots;
    /// `None` falls back to `RBK_TLS_CA`, and without either only the
    /// system roots are trusted.
    pub fn from_flag(path: Option<&Path>) -> Result<Self, ClientTlsError> {
        let from_env = std::env::var_os("RBK_TLS_CA").filter(|v| !v.is_empty()).map(PathBuf::from);
        let extra_ca = match path.map(Path::to_path_buf).or(from_env) {
            Some(p) => Some(load_ca(&p)?),
            None => None,
        };
        Ok(ClientTls { extra_ca })
    }

    /// The endpoint for `url`, with TLS when it is `https://`, and the
    /// connect timeout and HTTP/2 keepalives every long-lived rbk stream
    /// wants (a stopped coordinator breaks the stream within seconds
    /// instead of leaving it hanging).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientTlsError> {
        let bad = |message: String| ClientTlsError::Url { url: url.into(), message };
        let mut e = Endpoint::from_shared(url.to_owned())
            .map_err(|e| bad(e.to_string()))?
            .user_agent(rbk_proto::version::user_agent())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        if url.starts_with("https://") {
            e = e.tls_config(self.tls_config()).map_err(|e| bad(format!("TLS: {e}")))?;
        } else if !url.starts_with("http://") {
            return Err(bad("expected an http:// or https:// URL".into()));
        }
        Ok(e)
    }

    fn tls_config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new();
        // A minimal container may have no system roots; then only the extra CA.
        static SYSTEM_ROOTS: OnceLock<bool> = OnceLock::new();
        if *SYSTEM_ROOTS.get_or_init(|| !rustls_native_certs::load_native_certs().certs.is_empty()) {
            c = c.with_native_roots();
        }
        if let Some(ca) = &self.extra_ca {
            c = c.ca_certificate(ca.clone());
        }
        c
    }
}

fn load_ca(path: &Path) -> Result<Certificate, ClientTlsError> {
    let pem = std::fs::read(path).map_err(|source| ClientTlsError::Ca { path: path.into(), source })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ClientTlsError::NotPem { path: path.into() });
    }
    Ok(Certificate::from_pem(pem))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_both_make_endpoints() {
        assert!(ClientTls::default().endpoint("http://127.0.0.1:7070").is_ok());
        assert!(ClientTls::default().endpoint("https://rbk.example.com").is_ok());
    }

    #[test]
    fn a_url_without_a_scheme_is_refused_naming_it() {
        let e = ClientTls::default().endpoint("127.0.0.1:7070").unwrap_err().to_string();
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
