//! `rbk store ...`: check that the configured content store works.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use rbk_store::{ByteRange, Store, StoreConfig, StoreExt, build_store};

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
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
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
