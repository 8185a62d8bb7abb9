//! `rbk store ...`: check that the configured content store works.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use rbk_store::{ByteRange, FilesystemStore, Store, StoreExt};

#[derive(Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Writes, reads back, range-reads and deletes test blobs, then reports.
    Selftest {
        /// Directory of the filesystem store (the embedded default).
        #[arg(long, default_value = default_dir())]
        dir: PathBuf,
    },
}

fn default_dir() -> &'static str {
    "/var/lib/rbk/store"
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Selftest { dir } => {
            let store = FilesystemStore::open(&dir).await.with_context(|| format!("opening store at {}", dir.display()))?;
            selftest(&store).await?;
            println!("store selftest passed ({})", dir.display());
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
