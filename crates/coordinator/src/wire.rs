//! Conversions between the protobuf messages (`rbk_proto`) and the
//! coordinator's own types (`model.rs`, `state.rs`), in both directions.
//! Bad input from the wire is an `invalid_argument` naming the field.

use std::collections::{BTreeMap, HashSet};

use rbk_proto::build::{self as pb};
use rbk_proto::worker::{self as pw};
use rbk_store::Digest;
use tonic::Status;

use crate::model::{
    BuildEvent, CacheCommit, CacheMountSpec, HeldAssignment, StepNode, StepOutcome, ToWorker, WorkerInfo,
};
use crate::state::{BuildRecord, CacheHead, HeadKey};

pub(crate) fn parse_digest(what: &str, s: &str) -> Result<Digest, Status> {
    s.parse().map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

pub(crate) fn step_from_wire(s: pb::StepNode) -> Result<StepNode, Status> {
    let cache_mounts = s
        .cache_mounts
        .into_iter()
        .map(|m| {
            let sharing = m.sharing.parse().map_err(|e| Status::invalid_argument(format!("step {}: cache {}: {e}", s.id, m.id)))?;
            if m.id.is_empty() {
                return Err(Status::invalid_argument(format!("step {}: a cache mount has an empty id", s.id)));
            }
            Ok(CacheMountSpec { id: m.id, sharing })
        })
        .collect::<Result<_, Status>>()?;
    if s.secret_ids.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(format!("step {}: a secret id is empty", s.id)));
    }
    Ok(StepNode {
        id: s.id,
        key: s.key,
        deps: s.deps,
        platform: s.platform,
        labels: s.labels.into_iter().collect(),
        cache_mounts,
        payload: s.payload,
        name: s.name,
        secret_ids: s.secret_ids.into_iter().collect(),
    })
}

pub(crate) fn event_to_wire(e: BuildEvent) -> pb::BuildEvent {
    use pb::build_event::Event;
    let event = match e {
        BuildEvent::Accepted { build_id, total_steps } => Event::Accepted(pb::Accepted { build_id, total_steps }),
        BuildEvent::Started { step_id, worker_id, attempt, name } => {
            Event::Started(pb::StepStarted { step_id, worker_id, attempt, name })
        }
        BuildEvent::Cached { step_id, name, layers, config } => Event::Cached(pb::StepCached {
            step_id,
            name,
            layers: layers.iter().map(ToString::to_string).collect(),
            config,
        }),
        BuildEvent::Log { step_id, worker_id, stream, line } => Event::Log(pb::StepLog { step_id, worker_id, stream, line }),
        BuildEvent::Finished { step_id, worker_id, duration_ms, bytes_restored, layers, config } => {
            Event::Finished(pb::StepFinished {
                step_id,
                worker_id,
                duration_ms,
                bytes_restored,
                layers: layers.iter().map(ToString::to_string).collect(),
                config,
            })
        }
        BuildEvent::Failed { step_id, worker_id, message, exit_code } => {
            Event::Failed(pb::StepFailed { step_id, worker_id, message, exit_code })
        }
        BuildEvent::BuildFinished { state, duration_ms, message } => {
            Event::BuildFinished(pb::BuildFinished { state: state.as_str().into(), duration_ms, message })
        }
    };
    pb::BuildEvent { event: Some(event) }
}

pub(crate) fn build_to_wire(b: BuildRecord) -> pb::BuildStatus {
    pb::BuildStatus {
        build_id: b.id,
        state: b.state.as_str().into(),
        steps: b
            .steps
            .into_iter()
            .map(|s| pb::StepStatus {
                step_id: s.id,
                key: s.key,
                state: s.state.as_str().into(),
                worker_id: s.worker_id,
                attempts: s.attempts,
                message: s.message,
            })
            .collect(),
        created_ms: b.created_ms,
        finished_ms: b.finished_ms,
    }
}

pub(crate) fn head_to_wire(k: HeadKey, h: CacheHead) -> pb::CacheHead {
    pb::CacheHead {
        id: k.cache_id,
        slot: k.slot,
        snapshot: h.snapshot.to_string(),
        generation: h.generation,
        total_bytes: h.total_bytes,
        updated_ms: h.updated_ms,
    }
}

pub(crate) fn register_to_info(r: pw::Register) -> Result<WorkerInfo, Status> {
    if r.worker_id.is_empty() {
        return Err(Status::invalid_argument("register: worker_id is empty"));
    }
    let layers = r.layers.iter().map(|l| parse_digest("register: layer", l)).collect::<Result<HashSet<_>, _>>()?;
    let snapshots = r
        .snapshots
        .into_iter()
        .map(|s| {
            let d = parse_digest(&format!("register: snapshot of cache {}", s.cache_id), &s.snapshot)?;
            Ok((HeadKey { namespace: s.namespace, cache_id: s.cache_id, slot: s.slot }, d))
        })
        .collect::<Result<HashSet<_>, Status>>()?;
    Ok(WorkerInfo {
        id: r.worker_id,
        platform: r.platform,
        emulated_platforms: r.emulated_platforms,
        labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
        max_parallel: r.resources.map_or(1, |res| res.max_parallel.max(1)),
        // Filled by the worker service from the token that opened the stream.
        tenants: Default::default(),
        credential: String::new(),
        layers,
        snapshots,
        running: r
            .running
            .into_iter()
            .map(|h| HeldAssignment {
                assignment_id: h.assignment_id,
                build_id: h.build_id,
                step_id: h.step_id,
                attempt: h.attempt,
            })
            .collect(),
    })
}

/// Cache commits as a worker sent them.
pub(crate) fn commits_from_wire(commits: Vec<pw::CacheCommit>) -> Result<Vec<CacheCommit>, String> {
    commits
        .into_iter()
        .map(|c| {
            let snapshot = c.snapshot.parse().map_err(|e| format!("commit of cache {}: {e}", c.cache_id))?;
            Ok(CacheCommit {
                cache_id: c.cache_id,
                slot: c.slot,
                base_generation: c.base_generation,
                snapshot,
                total_bytes: c.total_bytes,
            })
        })
        .collect()
}

pub(crate) fn result_from_wire(r: pw::StepResult) -> Result<StepOutcome, String> {
    let commits = commits_from_wire(r.commits)?;
    if !r.ok {
        return Ok(StepOutcome::Failed { message: r.message, exit_code: r.exit_code, commits });
    }
    let layers = r.layers.iter().map(|l| l.parse().map_err(|e| format!("result layer: {e}"))).collect::<Result<_, String>>()?;
    Ok(StepOutcome::Succeeded {
        layers,
        config: r.config,
        commits,
        bytes_restored: r.bytes_restored,
        duration_ms: r.duration_ms,
        commits_follow: r.commits_follow,
    })
}

pub(crate) fn to_worker_wire(m: ToWorker) -> pw::CoordinatorMessage {
    use pw::coordinator_message::Msg;
    let msg = match m {
        ToWorker::Assign(a) => Msg::Assign(pw::Assign {
            assignment_id: a.assignment_id,
            build_id: a.build_id,
            step_id: a.step_id,
            key: a.key,
            namespace: a.namespace,
            attempt: a.attempt,
            payload: a.payload,
            secrets: a.secrets.0.into_iter().collect(),
            mounts: a
                .mounts
                .into_iter()
                .map(|g| pw::MountGrant {
                    cache_id: g.cache_id,
                    sharing: g.sharing.as_str().into(),
                    slot: g.slot,
                    snapshot: g.head.map(|(d, _)| d.to_string()).unwrap_or_default(),
                    generation: g.head.map_or(0, |(_, g)| g),
                })
                .collect(),
            inputs: a
                .inputs
                .into_iter()
                .map(|i| pw::Input {
                    step_id: i.step_id,
                    key: i.key,
                    layers: i.result.layers.iter().map(ToString::to_string).collect(),
                    config: i.result.config,
                })
                .collect(),
        }),
        ToWorker::Cancel { assignment_id } => Msg::Cancel(pw::CancelStep { assignment_id }),
        ToWorker::DrainAck => Msg::DrainAck(pw::DrainAck {}),
    };
    pw::CoordinatorMessage { msg: Some(msg) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_secret_ids_cross_the_wire_and_an_empty_one_is_refused_naming_the_step() {
        let wire = pb::StepNode { id: "s".into(), key: "k".into(), secret_ids: vec!["tok".into(), "npmrc".into()], ..Default::default() };
        let node = step_from_wire(wire.clone()).unwrap();
        assert_eq!(node.secret_ids.into_iter().collect::<Vec<_>>(), ["npmrc", "tok"]);
        let e = step_from_wire(pb::StepNode { secret_ids: vec![String::new()], ..wire }).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("step s"), "{}", e.message());
    }
}
