//! `rbk snapshot capture|restore|show`: debug a directory snapshot by hand.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use rbk_snapshot::{CaptureOptions, EntryKind, RestoreOptions, Snapshot, capture, restore};
use rbk_store::{Digest, FilesystemStore, Store};

#[derive(Args)]
pub struct SnapshotArgs {
    /// Directory of a filesystem content store.
    #[arg(long, default_value = "/var/lib/rbk/snapshots")]
    store_dir: PathBuf,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Captures DIR and prints the snapshot digest.
    Capture {
        dir: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// An earlier snapshot of DIR: unchanged content is not uploaded again.
        #[arg(long)]
        base: Option<Digest>,
        /// Stat cache file (outside DIR) so unchanged files are not re-read.
        #[arg(long)]
        stat_cache: Option<PathBuf>,
    },
    /// Makes DIR hold exactly the snapshot (incrementally if it holds an older one).
    Restore {
        digest: Digest,
        dir: PathBuf,
        #[arg(long)]
        stat_cache: Option<PathBuf>,
    },
    /// Lists a snapshot's entries.
    Show { digest: Digest },
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(
        FilesystemStore::open(&args.store_dir).await.with_context(|| format!("opening store at {}", args.store_dir.display()))?,
    );
    match args.command {
        SnapshotCommand::Capture { dir, namespace, base, stat_cache } => {
            let mut opts = CaptureOptions::new(namespace);
            opts.stat_cache = stat_cache;
            if let Some(b) = base {
                opts.base = Some(Snapshot::load(&*store, b).await.with_context(|| format!("loading base snapshot {b}"))?);
            }
            let (snap, s) = capture(store, &dir, &opts).await.with_context(|| format!("capturing {}", dir.display()))?;
            eprintln!(
                "{} entries, {} files ({} read), {} new bytes, {} packs, {} bytes uploaded",
                s.entries, s.files, s.files_read, s.bytes_new, s.packs_uploaded, s.bytes_uploaded
            );
            println!("{}", snap.digest);
        }
        SnapshotCommand::Restore { digest, dir, stat_cache } => {
            let snap = Snapshot::load(&*store, digest).await.with_context(|| format!("loading snapshot {digest}"))?;
            let opts = RestoreOptions { stat_cache, ..Default::default() };
            let s = restore(store, &snap, &dir, &opts).await.with_context(|| format!("restoring into {}", dir.display()))?;
            eprintln!(
                "{} files written ({} bytes), {} unchanged, {} removed, {} bytes fetched in {} GETs",
                s.files_written, s.bytes_written, s.unchanged, s.removed, s.bytes_fetched, s.gets
            );
        }
        SnapshotCommand::Show { digest } => {
            let snap = Snapshot::load(&*store, digest).await?;
            for e in &snap.manifest.entries {
                let what = match &e.kind {
                    EntryKind::Dir => "dir".to_owned(),
                    EntryKind::File(c) => format!("file {} ({} chunks)", c.digest, c.chunks.len()),
                    EntryKind::Symlink(t) => format!("symlink -> {}", String::from_utf8_lossy(t)),
                    EntryKind::Hardlink(t) => format!("hardlink = {}", String::from_utf8_lossy(t)),
                };
                println!("{:o} {}:{} {:?} {}", e.mode, e.uid, e.gid, String::from_utf8_lossy(&e.path), what);
            }
        }
    }
    Ok(())
}
