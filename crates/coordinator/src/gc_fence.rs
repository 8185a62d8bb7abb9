//! The replicated half of the store collector's safety scheme: the
//! reference epoch and the fences, applied by the state machine like every
//! other command, so every Raft node (and so every future leader) refuses
//! the same commits.
//!
//! - Every command that may add a reference (a build's graph, an
//!   action-cache entry, a head commit) bumps [`GcFences::epoch`]. The
//!   collector reads the roots at some epoch and asks to fence a batch at
//!   that epoch; [`GcCommand::Fence`] is refused (`held: false`) if the
//!   epoch moved since, so a reference committed between the read and the
//!   fence is always seen by a re-read.
//! - A held fence makes every later `Command::Guarded` commit that names
//!   a fenced blob fail with `Outcome::Refused` (the leader's scheduler
//!   sends its reference commits guarded).
//! - [`GcCommand::Release`] ends a batch's deletes. Writers whose work
//!   started before `release + hold` (the existence cache's TTL) are still
//!   refused: their "present" answer may predate the delete. A released
//!   fence is forgotten once no running build started before that.
//! - [`GcCommand::Begin`] starts a run and releases every fence of earlier
//!   runs: a leader that lost leadership mid-run never releases its own,
//!   and it stops deleting when it stops leading (`collector.rs`).

use std::collections::BTreeMap;

use rbk_store::Digest;
use serde::{Deserialize, Serialize};


/// At most this many blobs are fenced (held or released, not yet
/// forgotten) at once; a fence beyond it is refused and the collector
/// leaves the batch for a later run.
pub const MAX_FENCED: usize = 200_000;

/// The collector's commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GcCommand {
    /// A run starts; fences of other runs are released at `now_ms`.
    Begin { run: String, now_ms: u64, hold_ms: u64 },
    /// Fences `blobs` for `run` unless the epoch moved past `generation`.
    Fence { run: String, generation: u64, blobs: Vec<Digest> },
    /// The deletes of `blobs` are over.
    Release { run: String, blobs: Vec<Digest>, now_ms: u64, hold_ms: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FenceEntry {
    run: String,
    /// `None` while the run may still delete the blob; then the release
    /// time plus the existence cache's TTL.
    hold_until_ms: Option<u64>,
}

/// The collector's part of the state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcFences {
    epoch: u64,
    fences: BTreeMap<Digest, FenceEntry>,
}

impl GcFences {
    /// Bumped by every command that may add a reference.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn note_reference(&mut self) {
        self.epoch += 1;
    }

    /// Blobs fenced or held, for the tests and `rbk store gc` output.
    pub fn fenced(&self) -> usize {
        self.fences.len()
    }

    /// Applies a collector command; `oldest_running_ms` is the creation
    /// time of the oldest running build (`None`: none runs).
    pub fn apply(&mut self, cmd: GcCommand, oldest_running_ms: Option<u64>) -> bool {
        match cmd {
            GcCommand::Begin { run, now_ms, hold_ms } => {
                for e in self.fences.values_mut() {
                    if e.run != run && e.hold_until_ms.is_none() {
                        e.hold_until_ms = Some(now_ms.saturating_add(hold_ms));
                    }
                }
                self.forget(now_ms, oldest_running_ms);
                true
            }
            GcCommand::Fence { run, generation, blobs } => {
                if self.epoch != generation || self.fences.len().saturating_add(blobs.len()) > MAX_FENCED {
                    return false;
                }
                for b in blobs {
                    self.fences.insert(b, FenceEntry { run: run.clone(), hold_until_ms: None });
                }
                true
            }
            GcCommand::Release { run, blobs, now_ms, hold_ms } => {
                for b in blobs {
                    if let Some(e) = self.fences.get_mut(&b)
                        && e.run == run
                    {
                        e.hold_until_ms = Some(now_ms.saturating_add(hold_ms));
                    }
                }
                self.forget(now_ms, oldest_running_ms);
                true
            }
        }
    }

    /// Released fences no writer can still need: every writer that started
    /// before the hold ended has finished (no running build is older).
    fn forget(&mut self, now_ms: u64, oldest_running_ms: Option<u64>) {
        let horizon = oldest_running_ms.unwrap_or(now_ms).min(now_ms);
        self.fences.retain(|_, e| e.hold_until_ms.is_none_or(|h| h > horizon));
    }

    /// The blobs of `refs` a writer whose work started at `started_ms` may
    /// not commit a reference to.
    pub fn refused<'a>(&self, refs: impl Iterator<Item = &'a Digest>, started_ms: u64) -> Vec<Digest> {
        if self.fences.is_empty() {
            return Vec::new();
        }
        refs.filter(|d| self.fences.get(d).is_some_and(|e| e.hold_until_ms.is_none_or(|h| started_ms < h))).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn a_fence_at_a_stale_epoch_is_refused() {
        let mut g = GcFences::default();
        let at = g.epoch();
        g.note_reference();
        assert!(!g.apply(GcCommand::Fence { run: "r".into(), generation: at, blobs: vec![d(1)] }, None));
        assert!(g.apply(GcCommand::Fence { run: "r".into(), generation: g.epoch(), blobs: vec![d(1)] }, None));
    }

    #[test]
    fn a_held_fence_refuses_every_writer_and_a_released_one_only_earlier_writers() {
        let mut g = GcFences::default();
        g.apply(GcCommand::Fence { run: "r".into(), generation: 0, blobs: vec![d(1)] }, None);
        assert_eq!(g.refused([d(1), d(2)].iter(), u64::MAX), vec![d(1)]);
        g.apply(GcCommand::Release { run: "r".into(), blobs: vec![d(1)], now_ms: 1000, hold_ms: 500 }, Some(900));
        assert_eq!(g.refused([d(1)].iter(), 1499), vec![d(1)], "started before release + hold");
        assert!(g.refused([d(1)].iter(), 1500).is_empty(), "started after: it found the blob gone and uploaded it");
    }

    #[test]
    fn a_released_fence_is_forgotten_once_no_running_build_started_before_its_hold_ended() {
        let mut g = GcFences::default();
        g.apply(GcCommand::Fence { run: "r".into(), generation: 0, blobs: vec![d(1)] }, None);
        g.apply(GcCommand::Release { run: "r".into(), blobs: vec![d(1)], now_ms: 1000, hold_ms: 500 }, Some(10));
        g.apply(GcCommand::Begin { run: "s".into(), now_ms: 2000, hold_ms: 500 }, Some(1400));
        assert_eq!(g.fenced(), 1, "a build created at 1400 may still commit");
        g.apply(GcCommand::Begin { run: "t".into(), now_ms: 3000, hold_ms: 500 }, None);
        assert_eq!(g.fenced(), 0);
    }

    #[test]
    fn a_new_run_releases_the_fences_of_a_run_that_never_released_them() {
        let mut g = GcFences::default();
        g.apply(GcCommand::Fence { run: "old-leader".into(), generation: 0, blobs: vec![d(1)] }, None);
        g.apply(GcCommand::Begin { run: "new".into(), now_ms: 1000, hold_ms: 100 }, Some(0));
        assert!(g.refused([d(1)].iter(), 1100).is_empty());
        assert_eq!(g.refused([d(1)].iter(), 1099), vec![d(1)]);
    }

    #[test]
    fn fences_are_bounded() {
        let mut g = GcFences::default();
        let many: Vec<Digest> = (0..=MAX_FENCED as u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
        assert!(!g.apply(GcCommand::Fence { run: "r".into(), generation: 0, blobs: many }, None));
        assert_eq!(g.fenced(), 0);
    }
}
