//! The submit driver: sends a planned build to a coordinator and follows
//! its event stream to the end, printing BuildKit-style progress, serving
//! `--ssh` agents, cancelling on Ctrl-C and following the build to a new
//! leader when the stream breaks ([`crate::reattach`]). `rbk submit` and
//! `rbk build` (an in-process coordinator) both drive builds with it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rbk_proto::build::build_client::BuildClient;
use rbk_proto::build::build_event::Event;
use rbk_proto::build::{CancelRequest, StepNode, SubmitRequest};
use rbk_proto::replay::Replayer;
use rbk_worker::payload::{FarmResult, FarmStep};
use tonic::transport::Channel;

use crate::bearer::authorized;
use crate::error::SubmitError;
use crate::progress::Progress;
use crate::ssh_agents::SshAgents;
use crate::tls::ClientTls;

/// Log lines kept per step for the failure report.
const TAIL_LINES: usize = 20;

/// What a step did, as the event stream told it.
#[derive(Default)]
struct StepState {
    started: Option<Instant>,
    worker: String,
    tail: Vec<String>,
}

/// A byte count for people (`12.3 MiB`).
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let (mut v, mut u) = (bytes as f64, 0);
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", units[u]) }
}

/// Where to send a build: the coordinator URL(s), the tenant token and
/// what to trust for `https://`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub tls: &'a ClientTls,
    /// One URL or several, comma-separated ([`crate::reattach`]).
    pub url: &'a str,
    pub token: &'a str,
}

/// Submits `submit` (whose graph is `submit.steps`) and follows the build;
/// returns the results of `target_steps` (the steps the final images are
/// built from, one per platform; none when the image is a base image), by
/// step id. `name_workers`: say which worker
/// ran or failed a step (`rbk build` has only one). `ssh`: agents served
/// to the build's steps while it runs.
pub async fn run_build(
    channel: Channel,
    to: Target<'_>,
    submit: SubmitRequest,
    target_steps: &[String],
    progress: &Progress,
    name_workers: bool,
    ssh: &SshAgents,
) -> Result<HashMap<String, FarmResult>, SubmitError> {
    let Target { tls, url, token } = to;
    let graph: Vec<StepNode> = submit.steps.clone();
    let mut client = BuildClient::new(channel.clone());
    let mut _agents = None;
    // Re-supplied to a new leader if this one dies mid-build.
    let secrets: BTreeMap<String, Vec<u8>> = submit.secrets.clone().into_iter().collect();
    let mut seen = Replayer::default();
    let mut stream = client
        .submit(authorized(submit, token)?)
        .await
        .map_err(|s| SubmitError::Refused { url: url.to_owned(), message: s.message().to_owned() })?
        .into_inner();
    let index: HashMap<&str, (usize, &str)> =
        graph.iter().enumerate().map(|(i, s)| (s.id.as_str(), (i + 1, s.name.as_str()))).collect();
    let lookup = |id: &str| index.get(id).copied().unwrap_or((0, "?"));
    let mut steps: BTreeMap<String, StepState> = BTreeMap::new();
    let mut results: HashMap<String, FarmResult> = HashMap::new();
    let mut build_id = String::new();
    let mut done = 0;
    let mut failure: Option<SubmitError> = None;
    let mut cancelled = false;
    let parse_result = |id: &str, config: &[u8]| -> Result<FarmResult, SubmitError> {
        serde_json::from_slice(config).map_err(|source| SubmitError::BadResult { step_id: id.to_owned(), source })
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let ev = tokio::select! {
            ev = stream.message() => match ev {
                Ok(ev) => ev,
                // The leader died (or stepped down): follow the build to
                // the new one.
                Err(s) if !build_id.is_empty() && s.code() != tonic::Code::Unauthenticated => {
                    progress.note(&format!(" => the coordinator's event stream broke ({}); following build {build_id} to the new leader", s.message()));
                    let channel;
                    (channel, client, stream) = tokio::select! {
                        found = crate::reattach::watch_again(tls, url, token, &build_id, &secrets, s.message()) => found?,
                        // No leader to ask for a cancel: say so and leave.
                        _ = &mut ctrl_c => return Err(SubmitError::InterruptedWhileFollowing { build_id: build_id.clone() }),
                    };
                    // The agents are relayed through the leader: serve
                    // them to the new one (the old relay died with its
                    // leader).
                    if !ssh.is_empty() {
                        _agents = Some(ssh.serve(channel, token, &build_id)?);
                    }
                    continue;
                }
                Err(s) => return Err(SubmitError::StreamBroke { url: url.to_owned(), message: s.message().to_owned() }),
            },
            _ = &mut ctrl_c, if !build_id.is_empty() => {
                if cancelled {
                    // A second Ctrl-C: stop waiting for the coordinator.
                    return Err(SubmitError::Interrupted { build_id: build_id.clone() });
                }
                cancelled = true;
                ctrl_c.set(tokio::signal::ctrl_c());
                progress.note(&format!(" => cancelling build {build_id}"));
                client
                    .cancel(authorized(CancelRequest { build_id: build_id.clone() }, token)?)
                    .await
                    .map_err(|s| SubmitError::Cancel { url: url.to_owned(), message: s.message().to_owned() })?;
                continue;
            }
        };
        let Some(ev) = ev.and_then(|e| e.event) else {
            return Err(SubmitError::StreamEnded { url: url.to_owned() });
        };
        // Events a re-attached stream replays were printed already.
        if !seen.admit(&rbk_proto::build::BuildEvent { event: Some(ev.clone()) }) {
            continue;
        }
        match ev {
            Event::Accepted(a) => {
                build_id = a.build_id;
                if !ssh.is_empty() {
                    _agents = Some(ssh.serve(channel.clone(), token, &build_id)?);
                }
            }
            Event::Started(s) => {
                let (n, label) = lookup(&s.step_id);
                let st = steps.entry(s.step_id.clone()).or_default();
                st.started = Some(Instant::now());
                st.worker = s.worker_id.clone();
                let retry = if s.attempt > 1 { format!(" (attempt {})", s.attempt) } else { String::new() };
                let on = if name_workers { format!(" on {}", s.worker_id) } else { String::new() };
                progress.started(n, &format!("{label}{on}{retry}"));
            }
            // A cache commit that landed after its step was done (the
            // worker captures cache mounts behind the next steps).
            Event::Log(l) if l.stream == rbk_proto::replay::COMMIT_STREAM => {
                let (n, label) = lookup(&l.step_id);
                progress.commit(n, label, &l.line);
            }
            Event::Log(l) => {
                let (n, _) = lookup(&l.step_id);
                progress.log(n, &l.line);
                let st = steps.entry(l.step_id).or_default();
                st.tail.push(l.line);
                if st.tail.len() > TAIL_LINES {
                    st.tail.remove(0);
                }
            }
            Event::Cached(c) => {
                let (n, label) = lookup(&c.step_id);
                progress.cached(n, label);
                done += 1;
                results.insert(c.step_id.clone(), parse_result(&c.step_id, &c.config)?);
            }
            Event::Finished(f) => {
                let (n, label) = lookup(&f.step_id);
                let mut note = if name_workers { format!(" on {}", f.worker_id) } else { String::new() };
                if f.bytes_restored > 0 {
                    note.push_str(&format!(" (cache: {} restored)", human(f.bytes_restored)));
                }
                progress.done(n, label, Duration::from_millis(f.duration_ms), &note);
                done += 1;
                results.insert(f.step_id.clone(), parse_result(&f.step_id, &f.config)?);
            }
            Event::Failed(f) => {
                let (n, label) = lookup(&f.step_id);
                let tail = steps.get(&f.step_id).map(|s| s.tail.clone()).unwrap_or_default();
                let node = graph.iter().find(|s| s.id == f.step_id);
                let place = node
                    .and_then(|n| serde_json::from_slice::<FarmStep>(&n.payload).ok())
                    .map(|p| format!(" ({}:{})", p.file, p.line))
                    .unwrap_or_default();
                let worker = if f.worker_id.is_empty() || !name_workers { String::new() } else { format!(" on {}", f.worker_id) };
                let why = failure_reason(&f.message, label, &place, f.exit_code);
                progress.failed(n, label, &why, &tail);
                failure.get_or_insert(SubmitError::StepFailed { label: label.to_owned(), place, worker, why });
            }
            Event::BuildFinished(b) => {
                if b.state == "succeeded" {
                    break;
                }
                progress.summary(done, false);
                return Err(failure.unwrap_or(SubmitError::BuildEnded { state: b.state, message: b.message }));
            }
        }
    }
    let mut targets = HashMap::new();
    for step_id in target_steps {
        let r = results.get(step_id).cloned().ok_or_else(|| SubmitError::NoTargetResult { step_id: step_id.to_owned() })?;
        targets.insert(step_id.clone(), r);
    }
    Ok(targets)
}

/// Why a step failed, as the worker said it (a refused entitlement, a
/// limit the step ran into, ...) without the step's label and place,
/// which the error already names; the exit code when it said nothing more.
fn failure_reason(message: &str, label: &str, place: &str, exit_code: i32) -> String {
    let head = format!("{label}{place}");
    let said = message
        .strip_prefix(head.as_str())
        .map(|rest| rest.trim_start_matches(" failed").trim_start_matches(':').trim())
        .unwrap_or(message.trim());
    match (said.is_empty(), exit_code) {
        (true, 0) => "failed".to_owned(),
        (true, code) => format!("exit code {code}"),
        (false, _) => said.to_owned(),
    }
}

#[cfg(test)]
mod failure_reason_tests {
    use super::failure_reason;

    #[test]
    fn the_workers_reason_is_kept_without_the_label_and_place_it_repeats() {
        let label = "[4/4] RUN --network=host true";
        let m = "[4/4] RUN --network=host true (Dockerfile:4): RUN --network=host needs the entitlement network.host";
        assert_eq!(failure_reason(m, label, " (Dockerfile:4)", -1), "RUN --network=host needs the entitlement network.host");
        let m = "[2/2] RUN x (Dockerfile:2) failed: exit code 7";
        assert_eq!(failure_reason(m, "[2/2] RUN x", " (Dockerfile:2)", 7), "exit code 7");
        assert_eq!(failure_reason("", "[2/2] RUN x", " (Dockerfile:2)", 7), "exit code 7");
    }
}
