//! `rbk store selftest|gc`: check that the configured content store works;
//! collect its garbage through the coordinator's Admin service.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use rbk_store::{ByteRange, Store, StoreConfig, StoreExt, build_store};

use crate::cache_cmd::human;

#[derive(Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Writes, reads back, range-reads and deletes test blobs, then reports.
    Selftest {
        /// Directory of the embedded default store (verified, compressed
        /// blobs on local disk); ignored with --config.
        #[arg(long, default_value = rbk_store::DEFAULT_DIR)]
        dir: PathBuf,
        /// A TOML file whose `[store]` table composes the store to test
        /// (see docs/configuration.md); environment overrides apply.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs the coordinator's store collector now and prints what it freed
    /// (or, with --dry-run, what it would free). Needs the admin token.
    Gc(GcArgs),
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Gc(gc) => collect(gc).await,
        StoreCommand::Selftest { dir, config } => {
            let config = match &config {
                // Read as the coordinator reads its `[store]` (the chart
                // renders `dir = ...` there), then the environment.
                Some(path) => {
                    let mut c = rbk_coordinator::config::StoreSection::load(path)?;
                    c.apply_env(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
                    c
                }
                None => StoreConfig::local(&dir),
            };
            let store = build_store(&config).await.with_context(|| format!("opening store {}", config.describe()))?;
            selftest(store.as_ref()).await?;
            println!("store selftest passed ({})", config.describe());
            Ok(())
        }
    }
}

#[derive(Args)]
struct GcArgs {
    /// The coordinator (any node: followers name their leader).
    #[arg(long, env = "RBK_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    coordinator: String,
    /// The admin token (the coordinator's `[admin] token_file`).
    #[arg(long, env = "RBK_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Decide what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then check that the store holds every live blob (each cache head's
    /// snapshot and packs, each action-cache entry's layers); exits
    /// non-zero naming the missing ones. Run it on a quiet farm.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    tls: crate::flags::TlsCaFlag,
}

/// Redirects followed before giving up (an election in progress).
const MAX_REDIRECTS: usize = 10;

async fn collect(args: GcArgs) -> anyhow::Result<()> {
    use rbk_proto::admin::CollectGarbageRequest;
    use rbk_proto::admin::admin_client::AdminClient;
    let token = args.admin_token.as_deref().context("no admin token: pass --admin-token or set RBK_ADMIN_TOKEN")?;
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().context("the admin token is not a valid header value")?;
    let tls = args.tls.load()?;
    let mut target = args.coordinator.clone();
    let mut last = String::new();
    for _ in 0..MAX_REDIRECTS {
        let channel = tls.endpoint(&target)?.connect().await.with_context(|| format!("connecting to the coordinator at {target}"))?;
        let mut req = tonic::Request::new(CollectGarbageRequest { dry_run: args.dry_run, verify: args.verify });
        req.metadata_mut().insert("authorization", auth.clone());
        match AdminClient::new(channel).collect_garbage(req).await {
            Ok(r) => {
                let r = r.into_inner();
                print_report(&r);
                if !r.missing_live.is_empty() {
                    bail!("{} live blobs are missing from the store", r.missing_live.len());
                }
                return Ok(());
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = s.message().to_owned();
                match rbk_proto::leader::leader_hint(&s).filter(|l| *l != target) {
                    Some(leader) => target = leader,
                    None => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                }
            }
            Err(s) => bail!("{target}: {}", s.message()),
        }
    }
    bail!("{}: no leader collected: {last}", args.coordinator)
}

fn print_report(r: &rbk_proto::admin::CollectGarbageReport) {
    println!("scanned   {} blobs, {}", r.objects_scanned, human(r.bytes_scanned));
    println!("live      {} blobs", r.live_objects);
    println!("young     {} blobs (written within the grace period)", r.young_objects);
    if r.rescued_objects + r.contended_objects > 0 {
        println!("rescued   {} blobs (referenced during the run)", r.rescued_objects);
        println!("left      {} blobs (references kept changing; next run)", r.contended_objects);
    }
    if r.evicted_heads + r.evicted_actions > 0 {
        let verb = if r.dry_run { "would evict" } else { "evicted" };
        println!("{verb} {} cache heads and {} action-cache entries ({}) over budget or unused", r.evicted_heads, r.evicted_actions, human(r.evicted_bytes));
    }
    if r.verified_objects > 0 {
        println!("verified  {} live blobs, {} missing", r.verified_objects, r.missing_live.len());
    }
    for blob in &r.missing_live {
        println!("error: a live blob is missing from the store: {blob}");
    }
    for root in &r.missing_roots {
        println!("warning: a live snapshot's manifest is missing: {root}");
    }
    if r.dry_run {
        println!("would delete {} blobs, freeing {} (dry run: nothing deleted) in {} ms", r.deleted_objects, human(r.freed_bytes), r.duration_ms);
    } else {
        println!("deleted {} blobs, freed {} in {} ms", r.deleted_objects, human(r.freed_bytes), r.duration_ms);
    }
}

async fn selftest(store: &dyn Store) -> anyhow::Result<()> {
    for size in [0usize, 1, 4096, 5 * 1024 * 1024 + 1] {
        let data: Bytes = (0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        let digest = store.put_bytes(data.clone()).await?;
        let back = store.get_bytes(digest).await?;
        if back != data {
            bail!("blob {digest} read back different bytes");
        }
        if size > 2 {
            let mid = store.get_range_bytes(digest, ByteRange::new(1, size as u64 - 2)).await?;
            if mid != data.slice(1..size - 1) {
                bail!("blob {digest}: ranged read returned the wrong bytes");
            }
        }
        store.delete(digest).await?;
        if !store.find_missing(&[digest]).await?.contains(&digest) {
            bail!("blob {digest} still present after delete");
        }
        println!("  {size:>8} bytes  ok  {digest}");
    }
    Ok(())
}
