//! `rbk-bench snapshot`: snapshots against the naive `tar | zstd -3` method
//! on the synthetic workload, through the filesystem store and S3.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use rbk_snapshot::{CaptureOptions, RestoreOptions, Snapshot, capture, restore};
use rbk_store::{ByteRange, Digest, FilesystemStore, S3Config, S3Store, Secret, Store, StoreExt};

#[derive(Args)]
pub struct SnapshotBenchArgs {
    /// Scratch directory (trees, restores, the filesystem store). Wiped first.
    #[arg(long, default_value = "/tmp/rbk-bench-snapshot")]
    work_dir: PathBuf,
    /// The synthetic workload generator (gen.py).
    #[arg(long, default_value = "/work/shared/workloads/synthetic/gen.py")]
    generator: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Files in the unchanged build-context re-capture measurement.
    #[arg(long, default_value_t = 50_000)]
    context_files: usize,
    /// Ranged GETs in flight during restore (and for the raw GET baseline).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Cold restores are timed this many times, alternating snapshot, naive
    /// and raw GET, and the median is reported: on a shared machine one
    /// sample says more about the neighbours than about the code.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// S3 endpoint; without one only the filesystem store is measured.
    #[arg(long, env = "RBK_TEST_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "RBK_TEST_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    #[arg(long, env = "RBK_TEST_S3_ACCESS_KEY")]
    s3_access_key: Option<String>,
    #[arg(long, env = "RBK_TEST_S3_SECRET_KEY", hide_env_values = true)]
    s3_secret_key: Option<String>,
    /// Bucket to create and use (a fresh one per run by default).
    #[arg(long)]
    s3_bucket: Option<String>,
    /// Measure only the S3 store, and only the rows the restore ÷ raw GET
    /// ratio needs (captures, cold restores, raw GETs, incremental
    /// restore): what `bench/snapshot-link.sh` runs once per link rate.
    #[arg(long)]
    s3_only: bool,
}

struct Row {
    what: String,
    secs: f64,
    bytes_up: Option<u64>,
    bytes_down: Option<u64>,
    note: String,
}

impl Row {
    /// A row of a method that only wrote to the store.
    fn uploaded(what: impl Into<String>, secs: f64, bytes_up: u64, note: impl Into<String>) -> Row {
        Row { what: what.into(), secs, bytes_up: Some(bytes_up), bytes_down: None, note: note.into() }
    }
}

pub async fn run(args: SnapshotBenchArgs) -> anyhow::Result<()> {
    let w = &args.work_dir;
    let _ = std::fs::remove_dir_all(w);
    std::fs::create_dir_all(w)?;
    let (v0, v1) = (w.join("pristine-v0"), w.join("pristine-v1"));
    eprintln!("generating {} files (seed 0) ...", args.files);
    run_gen(&args.generator, &v0, args.files, 0)?;
    copy_tree(&v0, &v1)?;
    run_gen(&args.generator, &v1, args.files, 1)?;
    let (total, changed, changed_files) = changed_bytes(&v0, &v1)?;
    println!("workload: {} files, {:.1} MB; SEED=1 rewrites {changed_files} files, {:.1} MB\n", args.files, mb(total), mb(changed));

    let mut stores: Vec<(&str, Arc<dyn Store>, Option<S3Store>)> = Vec::new();
    if !args.s3_only {
        let fs: Arc<dyn Store> = Arc::new(FilesystemStore::open(w.join("fs-store")).await?);
        stores.push(("fs", fs, None));
    } else if args.s3_endpoint.is_none() {
        bail!("--s3-only needs an S3 endpoint (--s3-endpoint or RBK_TEST_S3_ENDPOINT)");
    }
    if let Some(endpoint) = &args.s3_endpoint {
        let mut cfg = S3Config::new(args.s3_bucket.clone().unwrap_or_else(|| format!("rbk-bench-snap-{}", std::process::id())));
        cfg.endpoint = Some(endpoint.clone());
        cfg.region = Some(args.s3_region.clone());
        cfg.access_key_id = args.s3_access_key.clone().map(Secret);
        cfg.secret_access_key = args.s3_secret_key.clone().map(Secret);
        let s3 = S3Store::new(cfg).await?;
        let _ = s3.client().create_bucket().bucket(s3.bucket()).send().await;
        stores.push(("s3", Arc::new(s3.clone()), Some(s3)));
    }

    for (name, store, s3) in stores {
        let rows = bench_store(&args, name, store, s3.as_ref(), &v0, total, changed).await?;
        println!("### {name} store\n");
        println!("| step | time (s) | MB/s of tree | uploaded MB | downloaded MB | notes |");
        println!("|---|---:|---:|---:|---:|---|");
        let rows_seen: Vec<(String, f64, Option<u64>)> = rows.iter().map(|r| (r.what.clone(), r.secs, r.bytes_down)).collect();
        for r in rows {
            let rate = if r.what.contains("incremental") || r.what.contains("unchanged") { changed.max(1) } else { total };
            let rate = if r.what.contains("unchanged") { String::from("–") } else { format!("{:.0}", mb(rate) / r.secs) };
            println!(
                "| {} | {:.2} | {} | {} | {} | {} |",
                r.what,
                r.secs,
                rate,
                r.bytes_up.map(|b| format!("{:.1}", mb(b))).unwrap_or_else(|| "–".into()),
                r.bytes_down.map(|b| format!("{:.1}", mb(b))).unwrap_or_else(|| "–".into()),
                r.note
            );
        }
        println!();
        if let Some(line) = summary(name, &rows_seen) {
            println!("{line}\n");
        }
    }
    let _ = std::fs::remove_dir_all(w);
    Ok(())
}

async fn bench_store(args: &SnapshotBenchArgs, name: &str, store: Arc<dyn Store>, s3: Option<&S3Store>, v0: &Path, total: u64, changed: u64) -> anyhow::Result<Vec<Row>> {
    let w = args.work_dir.join(name);
    let (src, dst, naive_dst) = (w.join("src"), w.join("restore"), w.join("naive-restore"));
    std::fs::create_dir_all(&w)?;
    copy_tree(v0, &src)?;
    settle();
    let mut rows = Vec::new();
    let mut copts = CaptureOptions::new("bench");
    copts.stat_cache = Some(w.join("src.statcache"));
    let ropts = RestoreOptions { stat_cache: Some(w.join("restore.statcache")), concurrency: args.concurrency, ..Default::default() };

    // Snapshots, cold.
    let t = Instant::now();
    let (s0, cs) = capture(store.clone(), &src, &copts).await?;
    let objects = s0.manifest.packs().len() + 1;
    rows.push(Row::uploaded("snapshot: capture cold", secs(t), cs.bytes_uploaded, format!("{objects} objects ({} packs + manifest)", objects - 1)));

    // The naive method's object, so that cold restores can alternate.
    let src0 = w.join("naive-src");
    copy_tree(v0, &src0)?;
    let t = Instant::now();
    let (d0, up0) = naive_capture(&*store, &src0).await?;
    let naive_capture_row = Row::uploaded("naive tar + zstd -3: capture", secs(t), up0, "1 object");

    // Cold restores: snapshot, naive and the raw GETs in turn, each round
    // into fresh directories (nothing is deleted until the end: on ext4
    // without a journal, creating files right after mass deletion is slow).
    let rounds = args.rounds.max(1);
    let (mut snap_t, mut naive_t, mut raw_t, mut whole_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut snap_cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    let mut rs = None;
    let mut raw_bytes = 0;
    let gets = rbk_snapshot::cold_restore_gets(&s0, &ropts)?;
    for round in 0..rounds {
        let (d, nd) = if round == 0 { (dst.clone(), naive_dst.clone()) } else { (w.join(format!("restore-{round}")), w.join(format!("naive-restore-{round}"))) };
        let mut o = ropts.clone();
        if round > 0 {
            o.stat_cache = Some(w.join(format!("restore-{round}.statcache")));
        }
        let (t, cpu) = (Instant::now(), cpu_secs());
        let r = restore(store.clone(), &Snapshot::load(&*store, s0.digest).await?, &d, &o).await?;
        snap_t.push(secs(t));
        snap_cpu.push(cpu_secs() - cpu);
        verify_same(&src, &d)?;
        rs.get_or_insert(r);
        let t = Instant::now();
        naive_restore(&*store, d0, &nd).await?;
        naive_t.push(secs(t));
        if let Some(s3) = s3 {
            let (t, cpu) = (Instant::now(), cpu_secs());
            raw_bytes = raw_ranged_gets(s3, &gets, args.concurrency).await?;
            raw_t.push(secs(t));
            raw_cpu.push(cpu_secs() - cpu);
            let packs: Vec<Digest> = s0.manifest.packs().into_iter().collect();
            let t = Instant::now();
            raw_get_all(s3, &packs, args.concurrency).await?;
            whole_t.push(secs(t));
        }
    }
    let rs = rs.expect("at least one round");
    let restore_secs = median(&snap_t);
    let of = |v: &[f64]| format!("median of {}: {}", v.len(), v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "));
    rows.push(Row {
        what: "snapshot: restore into empty dir".into(),
        secs: restore_secs,
        bytes_up: None,
        bytes_down: Some(rs.bytes_fetched),
        note: format!("{} ranged GETs; {}; CPU of this process {:.2} s", rs.gets, of(&snap_t), median(&snap_cpu)),
    });
    rows.push(Row { what: "naive: restore into empty dir".into(), secs: median(&naive_t), bytes_up: None, bytes_down: Some(up0), note: of(&naive_t) });

    // The same bytes fetched with the raw SDK: the same ranged GETs at the
    // same concurrency (apples to apples), and whole packs for reference.
    if s3.is_some() {
        let raw = median(&raw_t);
        rows.push(Row {
            what: format!("raw aws-sdk-s3 GETs of the same {} ranges (concurrency {})", gets.len(), args.concurrency),
            secs: raw,
            bytes_up: None,
            bytes_down: Some(raw_bytes),
            note: format!(
                "restore ÷ raw GET throughput = **{:.2}**; {}; CPU of this process {:.2} s",
                (rs.bytes_fetched as f64 / restore_secs) / (raw_bytes as f64 / raw),
                of(&raw_t),
                median(&raw_cpu)
            ),
        });
        let whole = median(&whole_t);
        rows.push(Row {
            what: format!("raw aws-sdk-s3 GETs of the {} whole packs (concurrency {})", s0.manifest.packs().len(), args.concurrency),
            secs: whole,
            bytes_up: None,
            bytes_down: Some(raw_bytes),
            note: format!("restore ÷ this = {:.2}; {}", whole / restore_secs, of(&whole_t)),
        });
    }

    // Incremental: SEED=1 rewrites ~5% of the files in place.
    run_gen(&args.generator, &src, args.files, 1)?;
    settle();
    copts.base = Some(s0.clone());
    let t = Instant::now();
    let (s1, cs1) = capture(store.clone(), &src, &copts).await?;
    rows.push(Row {
        what: "snapshot: incremental capture (SEED=1)".into(),
        secs: secs(t),
        bytes_up: Some(cs1.bytes_uploaded),
        bytes_down: None,
        note: format!(
            "read {} files; uploaded ÷ changed = **{:.2}**; {} new objects",
            cs1.files_read,
            cs1.bytes_uploaded as f64 / changed as f64,
            cs1.packs_uploaded + cs1.manifest_uploaded as usize
        ),
    });

    let t = Instant::now();
    let rs1 = restore(store.clone(), &Snapshot::load(&*store, s1.digest).await?, &dst, &ropts).await?;
    rows.push(Row {
        what: "snapshot: incremental restore (v0 dir → v1)".into(),
        secs: secs(t),
        bytes_up: None,
        bytes_down: Some(rs1.bytes_fetched),
        note: format!("wrote {} files, {:.1} MB; {} unchanged", rs1.files_written, mb(rs1.bytes_written), rs1.unchanged),
    });
    verify_same(&src, &dst)?;
    if args.s3_only {
        return Ok(rows);
    }

    copts.base = Some(s1.clone());
    let t = Instant::now();
    let (s2, cs2) = capture(store.clone(), &src, &copts).await?;
    rows.push(Row::uploaded(
        format!("snapshot: re-capture unchanged ({} files)", args.files),
        secs(t),
        cs2.bytes_uploaded,
        format!("read {} files; same snapshot: {}", cs2.files_read, s2.digest == s1.digest),
    ));

    rows.push(naive_capture_row);
    let t = Instant::now();
    let (d1, up1) = naive_capture(&*store, &src).await?;
    rows.push(Row::uploaded(
        "naive: incremental capture (whole tree again)",
        secs(t),
        up1,
        format!("uploaded ÷ changed = {:.2}", up1 as f64 / changed as f64),
    ));
    let t = Instant::now();
    naive_restore(&*store, d1, &naive_dst).await?;
    rows.push(Row { what: "naive: incremental restore (untar over v0)".into(), secs: secs(t), bytes_up: None, bytes_down: Some(up1), note: String::new() });
    verify_same(&src, &naive_dst)?;

    // A build context re-sent unchanged.
    let ctx = w.join("context");
    for i in 0..args.context_files {
        let d = ctx.join(format!("pkg{}", i % 500));
        if i < 500 {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::write(d.join(format!("mod{i}.py")), format!("# module {i}\nVALUE = {i}\n").repeat(8))?;
    }
    settle();
    let mut xopts = CaptureOptions::new("bench");
    xopts.stat_cache = Some(w.join("context.statcache"));
    let (c0, _) = capture(store.clone(), &ctx, &xopts).await?;
    xopts.base = Some(c0);
    let t = Instant::now();
    let (_, xs) = capture(store.clone(), &ctx, &xopts).await?;
    rows.push(Row::uploaded(
        format!("build context: re-send unchanged ({} files)", args.context_files),
        secs(t),
        xs.bytes_uploaded,
        format!("read {} files", xs.files_read),
    ));
    let _ = total;
    Ok(rows)
}

/// One line per S3 run that scripts parse (`bench/snapshot-link.sh`):
/// the rows the restore-vs-raw-GET ratio is made of, in seconds.
fn summary(store: &str, rows: &[(String, f64, Option<u64>)]) -> Option<String> {
    let find = |prefix: &str| rows.iter().find(|r| r.0.starts_with(prefix));
    let restore = find("snapshot: restore into empty dir")?;
    let raw = find("raw aws-sdk-s3 GETs of the same")?;
    let naive = find("naive: restore into empty dir")?;
    let incr = find("snapshot: incremental restore")?;
    let ratio = (restore.2? as f64 / restore.1) / (raw.2? as f64 / raw.1);
    Some(format!(
        "summary {store}: cold_restore_s={:.2} raw_get_s={:.2} ratio={ratio:.2} naive_restore_s={:.2} incremental_restore_s={:.2}",
        restore.1, raw.1, naive.1, incr.1
    ))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// User + system CPU seconds this process has used so far (all threads):
/// what a restore costs, apart from what the neighbours on a shared
/// machine do to its wall time.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// Lets freshly written files age past the stat cache's racy window.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

fn run_gen(script: &Path, dir: &Path, files: usize, seed: u32) -> anyhow::Result<()> {
    let st = std::process::Command::new("python3").arg(script).arg(dir).arg(files.to_string()).arg(seed.to_string()).status().context("running python3 gen.py")?;
    if !st.success() {
        bail!("{} failed: {st}", script.display());
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !st.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

fn files_of(root: &Path) -> anyhow::Result<HashMap<PathBuf, u64>> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(root)?.to_path_buf(), md.size());
            }
        }
    }
    Ok(out)
}

/// (total bytes of v1, bytes of files whose content differs, count).
fn changed_bytes(v0: &Path, v1: &Path) -> anyhow::Result<(u64, u64, usize)> {
    let (a, b) = (files_of(v0)?, files_of(v1)?);
    let mut changed = 0;
    let mut n = 0;
    for (p, size) in &b {
        if a.get(p) != Some(size) || std::fs::read(v0.join(p))? != std::fs::read(v1.join(p))? {
            changed += size;
            n += 1;
        }
    }
    Ok((b.values().sum(), changed, n))
}

fn verify_same(a: &Path, b: &Path) -> anyhow::Result<()> {
    let (fa, fb) = (files_of(a)?, files_of(b)?);
    if fa != fb {
        bail!("restore of {} into {} differs in file list or sizes", a.display(), b.display());
    }
    for p in fa.keys().take(200) {
        if std::fs::read(a.join(p))? != std::fs::read(b.join(p))? {
            bail!("{} differs after restore", p.display());
        }
    }
    Ok(())
}

async fn naive_capture(store: &dyn Store, dir: &Path) -> anyhow::Result<(Digest, u64)> {
    let dir = dir.to_path_buf();
    let blob = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let enc = zstd::Encoder::new(Vec::new(), 3)?;
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &dir)?;
        Ok(tar.into_inner()?.finish()?)
    })
    .await??;
    let len = blob.len() as u64;
    let digest = store.put_bytes(blob.into()).await?;
    Ok((digest, len))
}

async fn naive_restore(store: &dyn Store, digest: Digest, dir: &Path) -> anyhow::Result<()> {
    let blob = store.get_bytes(digest).await?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut ar = tar::Archive::new(zstd::Decoder::new(&blob[..])?);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        ar.unpack(&dir)?;
        Ok(())
    })
    .await??;
    Ok(())
}

/// The ranged GETs a cold restore makes, issued with the bare SDK and
/// collected into memory; returns the bytes received.
async fn raw_ranged_gets(s3: &S3Store, gets: &[(Digest, ByteRange)], concurrency: usize) -> anyhow::Result<u64> {
    raw_gets(s3, gets.iter().map(|(d, r)| (*d, Some(*r))), concurrency).await
}

async fn raw_get_all(s3: &S3Store, packs: &[Digest], concurrency: usize) -> anyhow::Result<u64> {
    raw_gets(s3, packs.iter().map(|d| (*d, None)), concurrency).await
}

/// GETs of whole objects or of a `range` of them, `concurrency` at a time,
/// with the bare SDK, collected into memory; returns the bytes received.
async fn raw_gets(
    s3: &S3Store,
    gets: impl Iterator<Item = (Digest, Option<ByteRange>)>,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let client = s3.client().clone();
    let bucket = s3.bucket().to_owned();
    let sizes = futures::stream::iter(gets.map(|(d, r)| (s3.key(&d), r)))
        .map(|(key, r)| {
            let (client, bucket) = (client.clone(), bucket.clone());
            async move {
                let mut get = client.get_object().bucket(bucket).key(&key);
                if let Some(r) = r {
                    let len = r.length.context("a cold restore GET has a length")?;
                    get = get.range(format!("bytes={}-{}", r.offset, r.offset + len - 1));
                }
                let out = get.send().await.with_context(|| format!("GET {key}"))?;
                let body = out.body.collect().await.context("reading body")?;
                anyhow::Ok(body.into_bytes().len() as u64)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut total = 0;
    for s in sizes {
        total += s?;
    }
    Ok(total)
}
