//! A worker's disk limit on a farm of real processes (`rbk coordinator`,
//! `rbk worker --disk-limit`, `rbk submit`): a stream of builds with
//! distinct contexts and cache mounts, each leaving a restored context,
//! layer blobs, unpacked layers and a cache directory on the worker, keeps
//! the worker's state dir under the limit once each build is done, and
//! builds after eviction still succeed (a cache directory evicted locally
//! is restored from its head). The worker sweeps its disk in the
//! background after each step; the test waits for its
//! `rbk_worker_disk_sweeps_pending` gauge to read 0 (requested before the
//! step's result is sent) before it measures.
//!
//! The 200-build run is `bench/worker-disk.sh` (ignored here: minutes).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use rbk_testsupport::program;

use crate::harness::{Farm, TENANT};
use crate::submit::{submit, succeeded};

/// Small enough that 20 builds overflow it several times (each leaves
/// about 3 MiB of its own), large enough for one build's working set
/// (busybox, 2 MiB, in the context, its blob and its unpacked layer).
const LIMIT: u64 = 12 << 20;

/// Bytes under `dir` (files, directories, symlinks; apparent sizes), not
/// crossing into other filesystems: what the worker keeps on its volume.
fn disk_use(dir: &Path) -> u64 {
    let dev = std::fs::metadata(dir).unwrap().dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(md) = std::fs::symlink_metadata(e.path()) else { continue };
            if md.dev() != dev {
                continue;
            }
            total += md.len();
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Waits until the worker whose metrics listen on `addr` has run every
/// disk sweep requested so far.
fn disk_settled(addr: &str) {
    for _ in 0..600 {
        let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics of the worker at {addr}: {e}"));
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        if rbk_metrics::exposition::sample(&text, "rbk_worker_disk_sweeps_pending", &[]) == Some(0.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the worker's disk sweeps never settled");
}

/// Build `n`'s context: busybox, 256 KiB of its own data, and a Dockerfile
/// that copies both and keeps the data in cache mount `cache`.
fn context(n: u64, cache: &str, run: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(program("busybox"), dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("data"), rbk_testsupport::incompressible(256 << 10, n)).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             COPY data /data\n\
             RUN --mount=type=cache,target=/cache,id={cache} [\"/bin/busybox\", \"sh\", \"-c\", \"{run}\"]\n"
        ),
    )
    .unwrap();
    dir
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| rd.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
}

/// Runs `builds` distinct builds on one worker with [`LIMIT`]; returns the
/// peak disk use seen after a build, having checked each against the limit.
fn distinct_builds_stay_under_the_limit(farm: &Farm, metrics: &str, builds: u64) -> u64 {
    let state = farm.dir.path().join("workers/a");
    let mut peak = 0;
    for n in 1..=builds {
        let ctx = context(n, &format!("c{n}"), "/bin/busybox cp /data /cache/copy && /bin/busybox md5sum /data > /sum");
        succeeded(&submit(farm, Some(TENANT), ctx.path(), &["--progress", "plain"]));
        disk_settled(metrics);
        let used = disk_use(&state);
        peak = peak.max(used);
        assert!(used <= LIMIT, "after build {n} the worker keeps {used} bytes, over its limit of {LIMIT}");
    }
    eprintln!("worker disk: {builds} distinct builds, limit {LIMIT} bytes, peak after a build {peak} bytes");
    peak
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_distinct_builds_keeps_the_worker_under_its_disk_limit_and_evicted_caches_come_back_from_the_store() {
    let farm = Farm::start().await;
    let metrics = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let _a = farm.worker("a", &["--disk-limit", &LIMIT.to_string(), "--metrics-listen", &metrics]);
    distinct_builds_stay_under_the_limit(&farm, &metrics, 20);
    let caches = farm.dir.path().join("workers/a/caches");
    assert!(count(&caches) < 20, "no cache directory was evicted: {} of 20 kept", count(&caches));

    // Build 1's cache directory is long gone from the worker; a new build
    // mounting the same id sees what build 1 left in it (restored from the
    // head in the store), and it runs on the worker after all that eviction.
    let again = context(1, "c1", "/bin/busybox cmp /cache/copy /data && echo restored > /r");
    std::fs::write(again.path().join("extra"), "a new context").unwrap();
    let (_, stderr) = succeeded(&submit(&farm, Some(TENANT), again.path(), &["--progress", "plain"]));
    assert!(stderr.contains(" on a"), "the RUN step ran on worker a:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes: run by bench/worker-disk.sh"]
async fn two_hundred_distinct_builds_keep_the_worker_under_its_disk_limit() {
    let farm = Farm::start().await;
    let metrics = format!("127.0.0.1:{}", rbk_testsupport::free_port());
    let _a = farm.worker("a", &["--disk-limit", &LIMIT.to_string(), "--metrics-listen", &metrics]);
    distinct_builds_stay_under_the_limit(&farm, &metrics, 200);
}
