//! A coordinator node's raft port as the admin commands reach it
//! (`rbk coordinator members`, `rbk coordinator snapshot`): the flags that
//! name it and carry the cluster secret, and the client.

use std::time::Duration;

use anyhow::Context;
use rbk_proto::raft::raft_client::RaftClient;
use tonic::transport::Endpoint;

#[derive(clap::Args)]
pub struct Target {
    /// Any node's raft port, e.g. http://10.0.0.1:7071.
    #[arg(long)]
    pub(crate) coordinator: String,
    /// The cluster secret (the contents of `[raft] secret_file`).
    #[arg(long, env = "RBK_RAFT_SECRET", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

pub(crate) fn request<T>(msg: T, token: &Option<String>) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().context("the token has characters a header cannot carry")?);
    }
    Ok(r)
}

pub(crate) async fn client(url: &str) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("--coordinator {url:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(RaftClient::new(channel))
}
