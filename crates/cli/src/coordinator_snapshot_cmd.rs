//! `rbk coordinator snapshot save|restore`: backups of a replicated
//! coordinator's state (builds, action cache, cache heads, leases) while
//! it runs, and a new group started from one (`rbk_raft::backup` says what
//! a backup holds and why it is not a copy of a data dir).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use rbk_coordinator::CoordinatorConfig;
use rbk_proto::raft::SaveSnapshotRequest;
use rbk_raft::backup::{Backup, restore_into};
use rbk_raft::transport::RAFT_LEADER_METADATA;

use crate::raft_port::{Target, request};

#[derive(clap::Subcommand)]
pub enum SnapshotOp {
    /// Saves the leader's state to FILE while the group runs (asks any
    /// node; a follower names the leader, which is then asked).
    Save {
        #[command(flatten)]
        target: Target,
        /// Where to write the backup (mode 0600: it holds token hashes).
        #[arg(long)]
        out: PathBuf,
    },
    /// Starts a stopped node's new, empty `[raft] data_dir` from a backup,
    /// with the group's members from its config. Do it for every initial
    /// member of the new group, then start them.
    Restore {
        /// The node's coordinator config (its `[raft]` section).
        #[arg(long)]
        config: PathBuf,
        /// The backup `save` wrote.
        #[arg(long)]
        from: PathBuf,
    },
}

pub async fn run(op: SnapshotOp) -> anyhow::Result<()> {
    match op {
        SnapshotOp::Save { target, out } => save(&target, &out).await,
        SnapshotOp::Restore { config, from } => restore(&config, &from),
    }
}

async fn save(target: &Target, out: &std::path::Path) -> anyhow::Result<()> {
    let mut url = target.coordinator.clone();
    for _ in 0..20 {
        let mut stream = match target.client(&url).await?.save_snapshot(request(SaveSnapshotRequest {}, &target.token)?).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                match s.metadata().get(RAFT_LEADER_METADATA).and_then(|v| v.to_str().ok()) {
                    Some(leader) => url = target.url_of(leader),
                    None => tokio::time::sleep(Duration::from_millis(300)).await,
                }
                continue;
            }
            Err(s) => bail!("snapshot save at {url}: {}", s.message()),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.with_context(|| format!("snapshot save: receiving from {url}"))? {
            bytes.extend_from_slice(&chunk.data);
        }
        // Checked before it replaces anything: a broken stream leaves no
        // file that looks like a backup.
        let backup = Backup::parse(out, &bytes)?;
        let partial = out.with_extension("partial");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, out).with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
        println!("saved the state at index {} from the leader {url} to {} ({} bytes)", backup.index, out.display(), bytes.len());
        return Ok(());
    }
    bail!("no raft leader answered from {} (election in progress?)", target.coordinator)
}

fn restore(config_path: &std::path::Path, from: &std::path::Path) -> anyhow::Result<()> {
    let config = CoordinatorConfig::load(config_path)?;
    let raft = config.raft.as_ref().with_context(|| format!("{}: no [raft] section (a coordinator without one keeps its state in memory)", config_path.display()))?;
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let backup = Backup::parse(from, &bytes)?;
    restore_into(raft, &backup).with_context(|| format!("restoring node {} (from {})", raft.node_id, config_path.display()))?;
    println!(
        "restored the state at index {} into {} for node {} of {} members; start the group's nodes",
        backup.index,
        raft.data_dir.display(),
        raft.node_id,
        raft.peers().len()
    );
    Ok(())
}
