//! `rbk cache ls|du`: the caller's cache-mount heads, as the coordinator
//! keeps them (namespaced by the token's tenant).

use anyhow::Context;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{CacheHead, ListCachesRequest};

#[derive(clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
    /// The coordinator, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "RBK_COORDINATOR", global = true, default_value = "http://127.0.0.1:7070")]
    coordinator: String,
    /// The tenant token.
    #[arg(long, env = "RBK_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
enum CacheCommand {
    /// One line per cache head: id, slot, generation, size, snapshot.
    Ls,
    /// Bytes held per cache id, and the total.
    Du,
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

async fn heads(args: &CacheArgs) -> anyhow::Result<Vec<CacheHead>> {
    let token = args.token.as_deref().context("no token: pass --token or set RBK_TOKEN")?;
    let mut client = BuildClient::connect(args.coordinator.clone())
        .await
        .with_context(|| format!("connecting to the coordinator at {}", args.coordinator))?;
    let mut req = tonic::Request::new(ListCachesRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().context("token is not a valid header value")?);
    let resp = client.list_caches(req).await.map_err(|s| anyhow::anyhow!("{}: {}", args.coordinator, s.message()))?;
    Ok(resp.into_inner().heads)
}

pub async fn run(args: CacheArgs) -> anyhow::Result<()> {
    let heads = heads(&args).await?;
    match args.command {
        CacheCommand::Ls => {
            println!("{:<32} {:>4} {:>10} {:>12}  SNAPSHOT", "ID", "SLOT", "GENERATION", "SIZE");
            for h in &heads {
                println!("{:<32} {:>4} {:>10} {:>12}  {}", h.id, h.slot, h.generation, human(h.total_bytes), h.snapshot);
            }
        }
        CacheCommand::Du => {
            let mut per_id = std::collections::BTreeMap::<&str, u64>::new();
            for h in &heads {
                *per_id.entry(&h.id).or_default() += h.total_bytes;
            }
            for (id, bytes) in &per_id {
                println!("{:>12}  {id}", human(*bytes));
            }
            println!("{:>12}  total", human(per_id.values().sum()));
        }
    }
    Ok(())
}
