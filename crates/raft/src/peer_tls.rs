//! Mutual TLS on the raft port (`[raft.tls]`): the server side requires a
//! client certificate signed by the cluster's CA, and each node dials its
//! peers with its own certificate. Loaded once at start; a missing or
//! unreadable file is a start-up error naming it.

use std::path::Path;

use rbk_coordinator::raft_config::RaftTls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::RaftError;

/// Both ends of the raft port's TLS.
#[derive(Clone)]
pub struct PeerTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

impl PeerTls {
    pub fn load(config: &RaftTls) -> Result<Self, RaftError> {
        let (cert, key, ca) = (read(&config.cert)?, read(&config.key)?, read(&config.ca)?);
        let identity = Identity::from_pem(cert, key);
        let ca = Certificate::from_pem(ca);
        Ok(PeerTls {
            server: ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone()),
            client: ClientTlsConfig::new().identity(identity).ca_certificate(ca),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RaftError> {
    let bytes = std::fs::read(path).map_err(|e| RaftError::Tls { path: path.display().to_string(), message: e.to_string() })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(RaftError::Tls { path: path.display().to_string(), message: "not a PEM file".into() });
    }
    Ok(bytes)
}
