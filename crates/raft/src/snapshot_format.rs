//! The bytes of a Raft snapshot: the state machine and where the members
//! listen, bincode behind a magic that tells today's layout from the ones
//! before blob ownership (`rbksnap2`) and before the store collector (no
//! magic). Shared by the node (taking and installing
//! snapshots), start-up and backups (`backup.rs`).

use std::collections::BTreeMap;

use rbk_coordinator::raft_config::PeerAddress;
use rbk_coordinator::state::{LegacyStateMachine, StateMachine, StateMachineV2, StateMachineV3};
use serde::{Deserialize, Serialize};

/// What a snapshot holds: the state machine and where the members listen.
/// bincode, not JSON: the machine has maps keyed by tuples and structs.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    machine: StateMachine,
    peers: BTreeMap<u64, PeerAddress>,
}

/// Leads every snapshot written since the state machine gained token
/// names, build submitters and generation sizes. bincode has no field
/// names, so each layout is told apart before decoding by its magic.
const SNAPSHOT_MAGIC: &[u8; 8] = b"rbksnap4";

/// Led snapshots written since blob ownership (`blob_owners.rs`), until
/// token names ([`Snapshot3Data`]).
const SNAPSHOT3_MAGIC: &[u8; 8] = b"rbksnap3";

#[derive(Serialize, Deserialize)]
struct Snapshot3Data {
    machine: StateMachineV3,
    peers: BTreeMap<u64, PeerAddress>,
}

/// Led snapshots written since the state machine gained the store
/// collector's fences and the last-use times, until blob ownership
/// ([`Snapshot2Data`]). Snapshots with no magic are the layout before
/// ([`LegacySnapshotData`]; they start with the token map's 8-byte length,
/// never these bytes).
const SNAPSHOT2_MAGIC: &[u8; 8] = b"rbksnap2";

#[derive(Serialize, Deserialize)]
struct Snapshot2Data {
    machine: StateMachineV2,
    peers: BTreeMap<u64, PeerAddress>,
}

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
    if let Some(v3) = data.strip_prefix(SNAPSHOT3_MAGIC) {
        let d: Snapshot3Data = bincode::deserialize(v3).map_err(|e| format!("a snapshot of the layout before token names: {e}"))?;
        return Ok((d.machine.into(), d.peers));
    }
    if let Some(v2) = data.strip_prefix(SNAPSHOT2_MAGIC) {
        let d: Snapshot2Data = bincode::deserialize(v2).map_err(|e| format!("a snapshot of the layout before blob ownership: {e}"))?;
        return Ok((d.machine.into(), d.peers));
    }
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
    use rbk_coordinator::state::{CacheHeadV3, Command, HeadKey, Principal};

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
        legacy.heads.insert(key.clone(), CacheHeadV3 { snapshot, generation: 3, total_bytes: 5, updated_ms: 9, history: vec![(3, snapshot)] });
        let data = bincode::serialize(&LegacySnapshotData { machine: legacy, peers: peers() }).unwrap();

        let (machine, restored_peers) = restore(&data).unwrap();

        assert_eq!(machine.principal("hash"), Some(&Principal::Tenant("team".into())));
        assert_eq!(machine.head(&key).map(|h| (h.snapshot.to_string(), h.generation)), Some((text.to_string(), 3)));
        assert_eq!(machine.gc().fenced(), 0);
        assert_eq!(restored_peers, peers());
    }

    #[test]
    fn a_snapshot_taken_before_blob_ownership_restores_with_each_tenant_owning_what_its_results_and_heads_name() {
        use rbk_coordinator::state::ActionResult;
        let mut v2 = StateMachineV2::default();
        let layer = format!("{}-3", "1".repeat(64)).parse().unwrap();
        let result = ActionResult { layers: vec![layer], config: vec![], duration_ms: 1, worker_id: "w".into(), created_ms: 0 };
        v2.actions.insert(("team".into(), "k".into()), result);
        let manifest = format!("{}-5", "2".repeat(64)).parse().unwrap();
        let key = HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 };
        v2.heads.insert(key, CacheHeadV3 { snapshot: manifest, generation: 1, total_bytes: 5, updated_ms: 9, history: vec![(1, manifest)] });
        let mut data = SNAPSHOT2_MAGIC.to_vec();
        bincode::serialize_into(&mut data, &Snapshot2Data { machine: v2, peers: peers() }).unwrap();

        let (machine, restored_peers) = restore(&data).unwrap();

        assert!(machine.tenant_has_blob("team", &layer) && machine.tenant_has_blob("team", &manifest));
        assert!(!machine.tenant_has_blob("other", &layer));
        assert_eq!(restored_peers, peers());
    }

    #[test]
    fn a_snapshot_taken_before_token_names_restores_its_builds_and_heads_with_neither_names_nor_sizes() {
        use rbk_coordinator::state::{BuildRecordV3, BuildState};
        let mut v3 = StateMachineV3::default();
        let manifest = format!("{}-5", "2".repeat(64)).parse().unwrap();
        let key = HeadKey { namespace: "team".into(), cache_id: "pip".into(), slot: 0 };
        v3.heads.insert(key.clone(), CacheHeadV3 { snapshot: manifest, generation: 2, total_bytes: 5, updated_ms: 9, history: vec![(2, manifest)] });
        let build = BuildRecordV3 {
            id: "b1".into(),
            namespace: "team".into(),
            state: BuildState::Succeeded,
            steps: vec![],
            created_ms: 1,
            finished_ms: 2,
            message: String::new(),
            graph: vec![],
        };
        v3.builds.insert("b1".into(), build);
        let mut data = SNAPSHOT3_MAGIC.to_vec();
        bincode::serialize_into(&mut data, &Snapshot3Data { machine: v3, peers: peers() }).unwrap();

        let (machine, _) = restore(&data).unwrap();

        assert_eq!(machine.build("b1").map(|b| (b.namespace.as_str(), b.submitter.as_str())), Some(("team", "")));
        let head = machine.head(&key).unwrap();
        assert_eq!((head.generation, head.sizes.len()), (2, 0));
    }

    #[test]
    fn a_snapshot_restores_what_was_encoded() {
        let mut machine = StateMachine::default();
        machine.apply(Command::PutToken { token_hash: "h".into(), principal: Principal::Tenant("t".into()) }).unwrap();
        let (back, p) = restore(&encode_snapshot(&machine, &peers()).unwrap()).unwrap();
        assert_eq!((back, p), (machine, peers()));
    }
}
