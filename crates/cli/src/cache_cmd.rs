//! `rbk cache ls|du|prune`: the caller's cache-mount heads, as the coordinator
//! keeps them (namespaced by the token's tenant).

use anyhow::Context;
use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::{ListCachesRequest, ListCachesResponse, PruneCachesRequest};

#[derive(clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
    #[command(flatten)]
    conn: crate::flags::CoordinatorConn,
}

#[derive(clap::Subcommand)]
enum CacheCommand {
    /// One line per cache head: id, slot, generation, size, snapshot.
    Ls,
    /// Bytes held per cache id, the total against the tenant's budget,
    /// and what its action-cache entries are charged against theirs.
    Du,
    /// Forget cache heads (all, or those named) so their snapshots can be
    /// collected; heads in use by a running step are kept.
    Prune {
        /// A cache id to drop (repeatable); none means every id.
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Only heads not committed to for this long, e.g. 30m, 12h, 7d.
        #[arg(long, value_parser = parse_age)]
        unused_for: Option<u64>,
    },
}

/// Milliseconds as the largest whole unit, e.g. `14d`.
fn age(ms: u64) -> String {
    for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{}s", ms / 1000)
}

/// `<n>s|m|h|d` → milliseconds.
fn parse_age(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number followed by s, m, h or d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: expected a number followed by s, m, h or d")),
    };
    n.checked_mul(ms).ok_or_else(|| format!("{s:?} is too long"))
}

/// Bytes in binary units, e.g. `1.5 MiB` (also `rbk store gc`'s output).
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

async fn client(args: &CacheArgs) -> anyhow::Result<BuildClient<tonic::transport::Channel>> {
    let tls = args.conn.tls.load()?;
    let channel = tls.endpoint(&args.conn.coordinator)?
        .connect()
        .await
        .with_context(|| format!("connecting to the coordinator at {}", args.conn.coordinator))?;
    Ok(BuildClient::new(channel))
}

async fn list(args: &CacheArgs) -> anyhow::Result<ListCachesResponse> {
    let req = args.conn.request(ListCachesRequest {})?;
    let resp = client(args).await?.list_caches(req).await.map_err(|s| anyhow::anyhow!("{}: {}", args.conn.coordinator, s.message()))?;
    Ok(resp.into_inner())
}

/// `used` against `budget` (0: none), e.g. `1.5 GiB of 10.0 GiB (15%)`.
fn against(used: u64, budget: u64) -> String {
    if budget == 0 {
        format!("{} (no budget)", human(used))
    } else {
        format!("{} of {} ({}%)", human(used), human(budget), (used as u128 * 100 / budget as u128))
    }
}

pub async fn run(args: CacheArgs) -> anyhow::Result<()> {
    match &args.command {
        CacheCommand::Prune { ids, unused_for } => prune(&args, ids.clone(), unused_for.unwrap_or(0)).await,
        CacheCommand::Ls => {
            println!("{:<32} {:>4} {:>10} {:>12}  SNAPSHOT", "ID", "SLOT", "GENERATION", "SIZE");
            for h in &list(&args).await?.heads {
                println!("{:<32} {:>4} {:>10} {:>12}  {}", h.id, h.slot, h.generation, human(h.total_bytes), h.snapshot);
            }
            Ok(())
        }
        CacheCommand::Du => {
            let r = list(&args).await?;
            let mut per_id = std::collections::BTreeMap::<&str, u64>::new();
            for h in &r.heads {
                *per_id.entry(&h.id).or_default() += h.total_bytes;
            }
            for (id, bytes) in &per_id {
                println!("{:>12}  {id}", human(*bytes));
            }
            println!("{:>12}  total", human(per_id.values().sum()));
            println!();
            println!("cache heads:   {}", against(per_id.values().sum(), r.heads_budget_bytes));
            println!("action cache:  {} in {} entries", against(r.action_bytes, r.actions_budget_bytes), r.action_entries);
            if r.keep_duration_ms > 0 {
                println!("heads unused for {} are dropped", age(r.keep_duration_ms));
            }
            Ok(())
        }
    }
}

async fn prune(args: &CacheArgs, ids: Vec<String>, unused_for_ms: u64) -> anyhow::Result<()> {
    let req = args.conn.request(PruneCachesRequest { ids, unused_for_ms })?;
    let resp = client(args).await?.prune_caches(req).await.map_err(|s| anyhow::anyhow!("{}: {}", args.conn.coordinator, s.message()))?;
    let dropped = resp.into_inner().dropped;
    for h in &dropped {
        println!("dropped {} (slot {}, generation {}, {})", h.id, h.slot, h.generation, human(h.total_bytes));
    }
    println!("dropped {} heads, {} total", dropped.len(), human(dropped.iter().map(|h| h.total_bytes).sum()));
    Ok(())
}
