//! The bytes of a Raft snapshot: the state machine and where the members
//! listen, bincode behind a magic that tells today's layout from the one
//! before the store collector. Shared by the node (taking and installing
//! snapshots), start-up and backups (`backup.rs`).

use std::collections::BTreeMap;

use rbk_coordinator::raft_config::PeerAddress;
use rbk_coordinator::state::{LegacyStateMachine, StateMachine};
use serde::{Deserialize, Serialize};

/// What a snapshot holds: the state machine and where the members listen.
/// bincode, not JSON: the machine has maps keyed by tuples and structs.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    machine: StateMachine,
    peers: BTreeMap<u64, PeerAddress>,
}

/// Leads every snapshot written since the state machine gained the store
/// collector's fences and the last-use times. Snapshots without it are the
/// earlier layout ([`LegacySnapshotData`]): bincode has no field names, so
/// the two must be told apart before decoding (a legacy snapshot starts
/// with the token map's 8-byte length, never these bytes).
const SNAPSHOT_MAGIC: &[u8; 8] = b"rbksnap2";

#[derive(Serialize, Deserialize)]
struct LegacySnapshotData {
    machine: LegacyStateMachine,
    peers: BTreeMap<u64, PeerAddress>,
}

/// Encodes what a snapshot holds.
pub(crate) fn encode_snapshot(machine: &StateMachine, peers: &BTreeMap<u64, PeerAddress>) -> Result<Vec<u8>, String> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    bincode::serialize_into(&mut out, &SnapshotData { machine: machine.clone(), peers: peers.clone() }).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Restores what a snapshot on disk held (used at startup).
pub(crate) fn restore(data: &[u8]) -> Result<(StateMachine, BTreeMap<u64, PeerAddress>), String> {
    match data.strip_prefix(SNAPSHOT_MAGIC) {
        Some(current) => {
            let d: SnapshotData = bincode::deserialize(current).map_err(|e| e.to_string())?;
            Ok((d.machine, d.peers))
        }
        None => {
            let d: LegacySnapshotData = bincode::deserialize(data).map_err(|e| format!("a snapshot of the earlier layout: {e}"))?;
            Ok((d.machine.into(), d.peers))
        }
    }
}

#[cfg(test)]
mod snapshot_tests {
    use rbk_coordinator::state::{CacheHead, Command, HeadKey, Principal};

    use super::*;

    fn peers() -> BTreeMap<u64, PeerAddress> {
        [(1, PeerAddress { raft: "10.0.0.1:7071".into(), api: "http://10.0.0.1:7070".into() })].into()
    }

    #[test]
    fn a_snapshot_taken_before_the_collector_existed_restores_its_tokens_heads_and_peers() {
        let key = HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 };
        // blake3 of nothing, as a store digest.
        let text = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262-0";
        let snapshot = text.parse().unwrap();
        let mut legacy = LegacyStateMachine::default();
        legacy.tokens.insert("hash".into(), Principal::Tenant("team".into()));
        legacy.heads.insert(key.clone(), CacheHead { snapshot, generation: 3, total_bytes: 5, updated_ms: 9, history: vec![(3, snapshot)] });
        let data = bincode::serialize(&LegacySnapshotData { machine: legacy, peers: peers() }).unwrap();

        let (machine, restored_peers) = restore(&data).unwrap();

        assert_eq!(machine.principal("hash"), Some(&Principal::Tenant("team".into())));
        assert_eq!(machine.head(&key).map(|h| (h.snapshot.to_string(), h.generation)), Some((text.to_string(), 3)));
        assert_eq!(machine.gc().fenced(), 0);
        assert_eq!(restored_peers, peers());
    }

    #[test]
    fn a_snapshot_restores_what_was_encoded() {
        let mut machine = StateMachine::default();
        machine.apply(Command::PutToken { token_hash: "h".into(), principal: Principal::Tenant("t".into()) }).unwrap();
        let (back, p) = restore(&encode_snapshot(&machine, &peers()).unwrap()).unwrap();
        assert_eq!((back, p), (machine, peers()));
    }
}
