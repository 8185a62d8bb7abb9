//! A farm worker's step execution (`rbk_agent::exec`) with runc and a
//! filesystem store: what an `Assign` turns into, and what comes back.

use std::sync::{Arc, Mutex};

use rbk_worker::payload::{FARM_STEP_VERSION, FarmResult, FarmStep, ImageSource, LayerDesc, Work};
use rbk_agent::exec::FarmExecutor;
use rbk_image::OciLayout;
use rbk_proto::worker::{Assign, Input, MountGrant, StepResult};
use rbk_store::{FilesystemStore, Store, StoreExt};
use rbk_worker::{Command, LogLine, LogSink, Mount, MountKind, RunStep, RuntimeKind, StepKind};

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    base: LayerDesc,
}

impl Fixture {
    /// A store holding the busybox test image's layer, as `rbk submit` puts it.
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FilesystemStore::open(dir.path().join("store")).await.unwrap());
        let layout = OciLayout::create(dir.path().join("base")).unwrap();
        let image = rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "busybox").unwrap();
        let l = &image.layers()[0];
        let blob = std::fs::read(layout.blob_path(&l.digest)).unwrap();
        let blake3 = store.put_bytes(blob.into()).await.unwrap();
        let base = LayerDesc {
            digest: l.digest.to_string(),
            diff_id: image.diff_ids()[0].to_string(),
            blake3: blake3.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        };
        Fixture { dir, store, base }
    }

    fn worker(&self, name: &str) -> FarmExecutor {
        FarmExecutor::open(&self.dir.path().join(name), None, RuntimeKind::Runc, &rbk_testsupport::program("runc"), self.store.clone(), None, &Default::default())
            .unwrap()
    }
}

fn run_step(script: &str, mounts: Vec<Mount>) -> Work {
    Work::Step {
        step: StepKind::Run(RunStep { mounts, ..RunStep::new(Command::Shell(script.into())) }),
    }
}

fn cache_mount(id: &str) -> Mount {
    Mount { target: "/cache".into(), kind: MountKind::Cache { id: id.into(), subdir: String::new(), readonly: false, mode: 0o755, uid: 0, gid: 0, seed: None } }
}

fn step(parent: ImageSource, work: Work, cache_ids: &[&str]) -> FarmStep {
    FarmStep {
        version: FARM_STEP_VERSION,
        label: "[1/1] RUN test".into(),
        file: "Dockerfile".into(),
        line: 2,
        parent,
        work,
        cache_ids: cache_ids.iter().map(|s| s.to_string()).collect(),
        context: None,
        stages: Default::default(),
        allow: Vec::new(),
    }
}

fn assign(s: &FarmStep, mounts: Vec<MountGrant>) -> Assign {
    Assign {
        assignment_id: "a1".into(),
        build_id: "b1".into(),
        step_id: "s1".into(),
        key: "k".into(),
        namespace: "team-a".into(),
        attempt: 1,
        payload: serde_json::to_vec(s).unwrap(),
        mounts,
        ..Default::default()
    }
}

fn grant(id: &str, prev: Option<&StepResult>) -> MountGrant {
    let c = prev.map(|r| r.commits[0].clone());
    MountGrant {
        cache_id: id.into(),
        sharing: "shared".into(),
        slot: 0,
        snapshot: c.as_ref().map(|c| c.snapshot.clone()).unwrap_or_default(),
        generation: c.map_or(0, |_| 1),
    }
}

fn capture_log() -> (LogSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (Arc::new(move |line: &LogLine| l.lock().unwrap().push(line.line.clone())), lines)
}

const APPEND: &str = "echo line >> /cache/log; wc -l < /cache/log | tr -d ' '";

#[tokio::test]
async fn a_run_step_reports_its_cumulative_layers_and_cache_commit() {
    let f = Fixture::new().await;
    let s = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step(APPEND, vec![cache_mount("c")]), &["c"]);
    let (sink, log) = capture_log();
    let r = f.worker("a").run(&assign(&s, vec![grant("c", None)]), sink).await;
    assert!(r.ok, "{}", r.message);
    assert_eq!(log.lock().unwrap().as_slice(), ["1"]);
    let result: FarmResult = serde_json::from_slice(&r.config).unwrap();
    assert_eq!(result.layers.len(), 2);
    assert_eq!(result.layers[0], f.base);
    assert_eq!(r.layers, result.layers.iter().map(|l| l.blake3.clone()).collect::<Vec<_>>());
    // The new layer is in the store, for other workers and the client.
    assert!(f.store.find_missing(&[result.layers[1].blake3.parse().unwrap()]).await.unwrap().is_empty());
    assert_eq!(r.commits.len(), 1);
    assert_eq!((r.commits[0].cache_id.as_str(), r.commits[0].base_generation), ("c", 0));
}

#[tokio::test]
async fn a_fresh_worker_starts_from_the_granted_head() {
    let f = Fixture::new().await;
    let s = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step(APPEND, vec![cache_mount("c")]), &["c"]);
    let first = f.worker("a").run(&assign(&s, vec![grant("c", None)]), capture_log().0).await;
    assert!(first.ok, "{}", first.message);
    let (sink, log) = capture_log();
    let second = f.worker("b").run(&assign(&s, vec![grant("c", Some(&first))]), sink).await;
    assert!(second.ok, "{}", second.message);
    assert_eq!(log.lock().unwrap().as_slice(), ["2"]);
    assert!(second.bytes_restored > 0);
    assert_eq!(second.commits[0].base_generation, 1);
}

#[tokio::test]
async fn a_step_builds_on_the_result_of_the_step_it_depends_on() {
    let f = Fixture::new().await;
    let w = f.worker("a");
    let first = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step("echo one > /one", vec![]), &[]);
    let r1 = w.run(&assign(&first, vec![]), capture_log().0).await;
    assert!(r1.ok, "{}", r1.message);
    let second = step(ImageSource::Step { step_id: "s0".into() }, run_step("cat /one", vec![]), &[]);
    let mut a = assign(&second, vec![]);
    a.inputs = vec![Input { step_id: "s0".into(), key: "k0".into(), layers: r1.layers.clone(), config: r1.config.clone() }];
    let (sink, log) = capture_log();
    let r2 = f.worker("b").run(&a, sink).await;
    assert!(r2.ok, "{}", r2.message);
    assert_eq!(log.lock().unwrap().as_slice(), ["one"]);
    assert_eq!(r2.layers.len(), 3);
}

#[tokio::test]
async fn a_failing_step_still_commits_its_cache_and_names_the_step() {
    let f = Fixture::new().await;
    let s = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step("echo kept > /cache/f; exit 3", vec![cache_mount("c")]), &["c"]);
    let r = f.worker("a").run(&assign(&s, vec![grant("c", None)]), capture_log().0).await;
    assert!(!r.ok);
    assert_eq!(r.exit_code, 3);
    assert!(r.message.contains("[1/1] RUN test (Dockerfile:2)") && r.message.contains("exit code 3"), "{}", r.message);
    assert_eq!(r.commits.len(), 1, "the cache is committed even when the step fails");
    assert!(r.layers.is_empty() && r.config.is_empty());
}

#[tokio::test]
async fn secrets_reach_the_step_but_not_its_log() {
    let f = Fixture::new().await;
    let secret = Mount { target: String::new(), kind: MountKind::Secret { id: "tok".into(), env: None, required: true, mode: 0o400, uid: 0, gid: 0 } };
    let s = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step("cat /run/secrets/tok", vec![secret]), &[]);
    let mut a = assign(&s, vec![]);
    a.secrets.insert("tok".into(), b"hunter2-very-secret".to_vec());
    let (sink, log) = capture_log();
    let r = f.worker("a").run(&a, sink).await;
    assert!(r.ok, "{}", r.message);
    let log = log.lock().unwrap().join("\n");
    assert!(!log.contains("hunter2") && log.contains("****"), "{log}");
}

#[tokio::test]
async fn an_unknown_payload_version_is_refused_naming_both_versions() {
    let f = Fixture::new().await;
    let mut s = step(ImageSource::Scratch, Work::Mkdir { path: "/app".into() }, &[]);
    s.version = FARM_STEP_VERSION + 1;
    let r = f.worker("a").run(&assign(&s, vec![]), capture_log().0).await;
    assert!(!r.ok);
    assert!(r.message.contains(&format!("payload version {}", FARM_STEP_VERSION + 1)), "{}", r.message);
}

#[tokio::test]
async fn a_worker_reports_the_layers_and_caches_it_holds() {
    let f = Fixture::new().await;
    let w = f.worker("a");
    let s = step(ImageSource::Layers { layers: vec![f.base.clone()] }, run_step(APPEND, vec![cache_mount("c")]), &["c"]);
    let r = w.run(&assign(&s, vec![grant("c", None)]), capture_log().0).await;
    assert!(r.ok, "{}", r.message);
    let held = w.held_layers();
    assert!(r.layers.iter().all(|l| held.contains(l)), "{held:?} vs {:?}", r.layers);
    let caches = w.held_caches();
    assert_eq!(caches.len(), 1);
    assert_eq!((caches[0].namespace.as_str(), caches[0].cache_id.as_str()), ("team-a", "c"));
    assert_eq!(caches[0].snapshot.to_string(), r.commits[0].snapshot);
}

#[tokio::test]
async fn opening_after_a_crash_detaches_the_steps_left_mounted() {
    let f = Fixture::new().await;
    drop(f.worker("a"));
    // What a SIGKILLed worker leaves: a step's rootfs still mounted.
    let stale = f.dir.path().join("a/worker/steps/rbk-1-0/rootfs/merged");
    std::fs::create_dir_all(&stale).unwrap();
    let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&stale).status().unwrap().success();
    assert!(ok, "mounting a tmpfs (tests run as root)");
    let mounted = || std::fs::read_to_string("/proc/self/mounts").unwrap().contains(stale.to_str().unwrap());
    assert!(mounted());
    let _w = f.worker("a");
    assert!(!mounted(), "the stale mount is still there");
    assert!(!f.dir.path().join("a/worker/steps/rbk-1-0").exists());
}

/// A cache mount of `id` showing its `sub` subdirectory (`source=sub`).
fn cache_subdir_mount(id: &str, sub: &str) -> Mount {
    Mount { target: "/cache".into(), kind: MountKind::Cache { id: id.into(), subdir: sub.into(), readonly: false, mode: 0o755, uid: 0, gid: 0, seed: None } }
}

/// The grant of cache `id` at the snapshot `prev` committed, as generation `generation`.
fn grant_at(id: &str, prev: &StepResult, generation: u64) -> MountGrant {
    MountGrant { generation, ..grant(id, Some(prev)) }
}

#[tokio::test]
async fn cache_mounts_with_different_sources_see_separate_subdirectories_of_one_cache() {
    let f = Fixture::new().await;
    let base = ImageSource::Layers { layers: vec![f.base.clone()] };
    let a = step(base.clone(), run_step("echo A > /cache/f", vec![cache_subdir_mount("c", "a")]), &["c"]);
    let (sink, log) = capture_log();
    let ra = f.worker("a").run(&assign(&a, vec![grant("c", None)]), sink).await;
    assert!(ra.ok, "{}: {:?}", ra.message, log.lock().unwrap());

    let b = step(base.clone(), run_step("cat /cache/f 2>/dev/null || echo none; echo B > /cache/f", vec![cache_subdir_mount("c", "b")]), &["c"]);
    let (sink, log) = capture_log();
    let rb = f.worker("b").run(&assign(&b, vec![grant_at("c", &ra, 1)]), sink).await;
    assert!(rb.ok, "{}", rb.message);
    assert_eq!(log.lock().unwrap().as_slice(), ["none"], "source=b must not see source=a's file");

    // The whole cache holds both, each in its own directory.
    let whole = step(base, run_step("cat /cache/a/f /cache/b/f", vec![cache_mount("c")]), &["c"]);
    let (sink, log) = capture_log();
    let rw = f.worker("c").run(&assign(&whole, vec![grant_at("c", &rb, 2)]), sink).await;
    assert!(rw.ok, "{}", rw.message);
    assert_eq!(log.lock().unwrap().as_slice(), ["A", "B"]);
}

#[tokio::test]
async fn a_symlink_planted_in_the_cache_does_not_let_a_cache_source_reach_the_host() {
    let f = Fixture::new().await;
    let base = ImageSource::Layers { layers: vec![f.base.clone()] };
    // An earlier step plants sub -> / (and a marker to tell the host's root
    // from the cache's own directory).
    let plant = step(base.clone(), run_step("ln -s / /cache/sub", vec![cache_mount("c")]), &["c"]);
    let rp = f.worker("a").run(&assign(&plant, vec![grant("c", None)]), capture_log().0).await;
    assert!(rp.ok, "{}", rp.message);

    let host_marker = f.dir.path().join("host-marker");
    std::fs::write(&host_marker, "host").unwrap();
    let peek = format!("cat /cache{} && echo SAW-HOST; ls /cache/etc/hostname && echo SAW-HOST", host_marker.display());
    let s = step(base, run_step(&peek, vec![cache_subdir_mount("c", "sub")]), &["c"]);
    let (sink, log) = capture_log();
    let r = f.worker("b").run(&assign(&s, vec![grant_at("c", &rp, 1)]), sink).await;
    let log = log.lock().unwrap().join("\n");
    assert!(!log.contains("SAW-HOST"), "the step saw the host through the symlink: {log}");
    assert!(!r.ok, "the step must be refused, not run");
    assert!(r.message.contains("\"sub\" is a symlink"), "{}", r.message);
}
