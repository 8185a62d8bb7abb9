//! `rbk-bench soak`: storage bounds under load and S3 faults (issue #18's
//! soak). On 127.0.0.1 only: the S3 server of the test services behind the
//! fault proxy of `rbk-testsupport` (a fraction of requests answered
//! 500/503, reset, delayed or cut short), one `rbk coordinator` (the `rbk`
//! binary next to this one, or `$RBK`) whose store is that proxy, with the
//! collector every `--gc-interval` and small per-tenant eviction budgets,
//! one `rbk worker` (runc), and `rbk submit` run `--builds` times over
//! `--dockerfiles` distinct Dockerfiles, each with a cache mount and a RUN
//! whose key changes every build (so every build runs, writes its cache
//! and leaves a new layer for the budgets and the collector to retire).
//!
//! A build that fails is submitted again, up to `--retries` times (an
//! injected fault may fail a build with a retryable error; it must never
//! fail it otherwise, nor corrupt anything). After each build the bucket
//! is listed directly (not through the proxy) for the store's bytes. At the
//! end the proxy stops injecting, one more collection runs with
//! `rbk store gc --verify` (every live cache head's snapshot and packs and
//! every action-cache entry's layers must be in the store), and the
//! result is printed. Bounded by `--timeout-secs`: past it no new build
//! starts. Exits non-zero if a build failed after its retries or a live
//! blob is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rbk_store::{S3Config, S3Store, Secret, Store};
use rbk_testsupport::{FaultPolicy, FaultProxy, program};

const TENANT: &str = "soak-tenant-token-0000000001";
const WORKER: &str = "soak-worker-token-0000000001";
const ADMIN: &str = "soak-admin-token-00000000001";

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Builds to run (the issue asks for 500).
    #[arg(long, default_value_t = 500)]
    builds: usize,
    /// Distinct Dockerfiles the builds cycle through.
    #[arg(long, default_value_t = 20)]
    dockerfiles: usize,
    /// The collector's interval (`[gc] interval`), seconds.
    #[arg(long, default_value_t = 30)]
    gc_interval_secs: u64,
    /// The collector's grace period, seconds.
    #[arg(long, default_value_t = 15)]
    grace_secs: u64,
    /// The tenant's budget for cache heads (`[eviction] heads_bytes`).
    #[arg(long, default_value = "256KiB")]
    heads_bytes: String,
    /// The tenant's budget for action-cache results (`[eviction] actions_bytes`).
    #[arg(long, default_value = "4MiB")]
    actions_bytes: String,
    /// Fraction of S3 requests faulted (split over 503, 500 after
    /// forwarding, reset, truncated body, slow answer).
    #[arg(long, default_value_t = 0.1)]
    faults: f64,
    /// Seeds the faults.
    #[arg(long, default_value_t = 18)]
    seed: u64,
    /// Submits of one build before it counts as failed.
    #[arg(long, default_value_t = 3)]
    retries: usize,
    /// No new build starts past this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dockerfile(d: usize) -> String {
    // The key of the RUN changes with N (a build arg, different every
    // build); the cache keeps the last 50 lines it was given.
    format!(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         ARG N\n\
         RUN --mount=type=cache,target=/cache,id=soak-{d} [\"/bin/busybox\", \"sh\", \"-c\", \
         \"/bin/busybox echo $N-{d} >> /cache/log && /bin/busybox tail -n 50 /cache/log > /cache/t && /bin/busybox mv /cache/t /cache/log && /bin/busybox head -c 65536 /dev/urandom > /out\"]\n"
    )
}

/// Bytes and objects in the store, listed straight from the bucket.
async fn store_bytes(store: &S3Store) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut objects, mut after) = (0, 0, None);
    loop {
        let page = store.list_page(after, 1000).await?;
        for b in &page.blobs {
            bytes += b.stored_bytes;
            objects += 1;
        }
        match page.next_after {
            Some(a) => after = Some(a),
            None => return Ok((bytes, objects)),
        }
    }
}

fn start_coordinator(dir: &Path, rbk: &Path, s3: &rbk_testsupport::S3Service) -> anyhow::Result<(Proc, String)> {
    let log = std::fs::File::create(dir.join("coordinator.log"))?;
    let mut child = s3.coordinator_command(rbk, &dir.join("coordinator.toml"), log).spawn().context("starting rbk coordinator")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let proc = Proc(child);
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line)? == 0 {
            bail!("rbk coordinator exited; see {}", dir.join("coordinator.log").display());
        }
        if let Some(addr) = line.trim().strip_prefix("rbk coordinator listening on ") {
            let url = format!("http://{addr}");
            // Keep reading its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return Ok((proc, url));
        }
    }
}

/// One `rbk submit`; `Err(last stderr lines)` when it failed.
fn submit(rbk: &Path, url: &str, dir: &Path, ctx: &Path, d: usize, n: usize) -> Result<(), String> {
    let out = Command::new(rbk)
        .args(["submit", "--coordinator", url, "--token", TENANT, "--progress", "plain", "--client-dir"])
        .arg(dir.join("client"))
        .arg("-f")
        .arg(ctx.join(format!("Dockerfile.{d}")))
        .args(["--build-arg", &format!("N={n}")])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running rbk submit: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(4).collect();
    Err(tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let rbk: PathBuf = crate::raft::soak::rbk_binary()?;
    let s3 = rbk_testsupport::s3();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let bucket = format!("rbk-soak-{:016x}", rand::random::<u64>());
    let mut config = S3Config::new(&bucket);
    config.endpoint = Some(s3.endpoint.clone());
    config.region = Some(s3.region.clone());
    config.access_key_id = Some(Secret(s3.access_key.clone()));
    config.secret_access_key = Some(Secret(s3.secret_key.clone()));
    config.prefix = "soak".into();
    let direct = S3Store::new(config.clone()).await?;
    direct.client().create_bucket().bucket(&bucket).send().await.with_context(|| format!("creating bucket {bucket}"))?;
    let proxy = FaultProxy::start(&s3.endpoint, FaultPolicy::mixed(args.seed, args.faults, Duration::from_millis(200)));

    std::fs::write(dir.join("admin-token"), ADMIN)?;
    std::fs::write(
        dir.join("tokens.toml"),
        format!("[tenants]\n\"{TENANT}\" = \"soak\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"soak\"]\n"),
    )?;
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ntoken_file = \"tokens.toml\"\n\
             [store]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"{}\"\nprefix = \"soak\"\n\
             [gc]\ninterval = \"{}s\"\ngrace = \"{}s\"\nexistence_ttl = \"0s\"\n\
             [eviction]\nheads_bytes = \"{}\"\nactions_bytes = \"{}\"\n\
             [admin]\ntoken_file = \"admin-token\"\n",
            proxy.endpoint(),
            s3.region,
            args.gc_interval_secs,
            args.grace_secs,
            args.heads_bytes,
            args.actions_bytes
        ),
    )?;
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::copy(program("busybox"), ctx.join("busybox"))?;
    for d in 0..args.dockerfiles {
        std::fs::write(ctx.join(format!("Dockerfile.{d}")), dockerfile(d))?;
    }

    let (_coordinator, url) = start_coordinator(dir, &rbk, &s3)?;
    let _worker = Proc(
        Command::new(&rbk)
            .args(["worker", "--coordinator", &url, "--token", WORKER, "--id", "soak-worker", "--max-backoff", "1s"])
            .arg("--state-dir")
            .arg(dir.join("worker"))
            .arg("--runtime-path")
            .arg(program("runc"))
            .env("RBK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("worker.log"))?)
            .spawn()
            .context("starting rbk worker")?,
    );

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let (mut ran, mut retried, mut failed) = (0usize, 0usize, Vec::new());
    let mut peak = (0u64, 0u64);
    for n in 0..args.builds {
        if Instant::now() > deadline {
            eprintln!("soak: time limit reached after {n} builds");
            break;
        }
        let d = n % args.dockerfiles;
        let mut last = Ok(());
        for attempt in 0..args.retries.max(1) {
            last = submit(&rbk, &url, dir, &ctx, d, n);
            match &last {
                Ok(()) => break,
                Err(e) => {
                    retried += 1;
                    eprintln!("soak: build {n} (Dockerfile.{d}) attempt {} failed: {e}", attempt + 1);
                }
            }
        }
        ran += 1;
        if let Err(e) = last {
            failed.push((n, e));
        }
        let (bytes, objects) = store_bytes(&direct).await?;
        if bytes > peak.0 {
            peak = (bytes, objects);
        }
        if (n + 1) % 25 == 0 {
            let c = proxy.counts();
            eprintln!(
                "soak: {} builds in {:.0}s, store {bytes} bytes in {objects} objects, S3 requests {} ({} faulted)",
                n + 1,
                t0.elapsed().as_secs_f64(),
                c.requests,
                c.faults()
            );
        }
    }
    let elapsed = t0.elapsed();
    let counts = proxy.counts();
    // The final check reads the store as it is, not through the faults.
    proxy.set_policy(FaultPolicy::NONE);
    let gc = Command::new(&rbk).args(["store", "gc", "--verify", "--coordinator", &url]).env("RBK_ADMIN_TOKEN", ADMIN).output()?;
    let report = String::from_utf8_lossy(&gc.stdout).into_owned();
    let (final_bytes, final_objects) = store_bytes(&direct).await?;

    println!("| soak ({} builds over {} Dockerfiles, {:.0} % S3 faults) | value |", ran, args.dockerfiles, args.faults * 100.0);
    println!("|---|---|");
    println!("| wall time | {:.0} s |", elapsed.as_secs_f64());
    println!("| S3 requests through the proxy | {} |", counts.requests);
    println!(
        "| faults injected | {} (503: {}, 500 after forwarding: {}, reset: {}, truncated: {}, slow: {}) |",
        counts.faults(),
        counts.unavailable,
        counts.error_after_forwarding,
        counts.reset,
        counts.truncate,
        counts.slow
    );
    println!("| build attempts that failed (then retried) | {retried} |");
    println!("| builds failed after {} attempts | {} |", args.retries, failed.len());
    println!("| store peak (after a build) | {} bytes in {} objects |", peak.0, peak.1);
    println!("| store final (after the last collection) | {final_bytes} bytes in {final_objects} objects |");
    println!("| collector (every {} s, grace {} s), budgets heads {} / actions {} | |", args.gc_interval_secs, args.grace_secs, args.heads_bytes, args.actions_bytes);
    for line in report.lines() {
        println!("    {line}");
    }
    for (n, e) in &failed {
        println!("failed: build {n}: {e}");
    }
    if !gc.status.success() {
        bail!("rbk store gc --verify: {}", String::from_utf8_lossy(&gc.stderr).trim());
    }
    if !failed.is_empty() {
        bail!("{} builds failed after {} attempts", failed.len(), args.retries);
    }
    Ok(())
}
