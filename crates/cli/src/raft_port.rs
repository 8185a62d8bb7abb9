//! A coordinator node's raft port as the admin commands reach it
//! (`rbk coordinator members`, `rbk coordinator snapshot`): the flags that
//! name it and carry the cluster secret, and the client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rbk_proto::raft::raft_client::RaftClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[derive(clap::Args)]
pub struct Target {
    /// Any node's raft port, e.g. http://10.0.0.1:7071.
    #[arg(long)]
    pub(crate) coordinator: String,
    /// The cluster secret (the contents of `[raft] secret_file`).
    #[arg(long, env = "RBK_RAFT_SECRET", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// With `[raft.tls]` (an https:// --coordinator): the CA that signed
    /// the nodes' certificates.
    #[arg(long, env = "RBK_RAFT_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// With `[raft.tls]`: the client certificate to present (signed by the
    /// same CA; the nodes require one).
    #[arg(long, env = "RBK_RAFT_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// With `[raft.tls]`: the key of --tls-cert.
    #[arg(long, env = "RBK_RAFT_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

impl Target {
    /// The raft port at `url` (this target's or a leader it was sent to),
    /// over mutual TLS when `url` is https://.
    pub(crate) async fn client(&self, url: &str) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
        let mut endpoint = Endpoint::from_shared(url.to_owned()).with_context(|| format!("--coordinator {url:?}"))?.connect_timeout(Duration::from_secs(3));
        if url.starts_with("https://") {
            let read = |p: &PathBuf, flag: &str| std::fs::read(p).with_context(|| format!("{flag} {}", p.display()));
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        let channel = endpoint.connect().await.with_context(|| format!("connecting to {url}"))?;
        Ok(RaftClient::new(channel))
    }

    /// The URL of the raft port at `host_port` (a leader's, from a
    /// redirect), in this target's scheme.
    pub(crate) fn url_of(&self, host_port: &str) -> String {
        let scheme = if self.coordinator.starts_with("https://") { "https" } else { "http" };
        format!("{scheme}://{host_port}")
    }
}

pub(crate) fn request<T>(msg: T, token: &Option<String>) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().context("the token has characters a header cannot carry")?);
    }
    Ok(r)
}
