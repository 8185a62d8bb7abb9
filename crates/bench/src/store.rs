//! `rbk-bench store`: MB/s of every stage a blob passes through, and of our
//! S3 path next to the raw SDK on the same bytes in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use rbk_store::{Digest, S3Config, Secret, Store, StoreConfig, StoreExt, build_store};

#[derive(Args)]
pub struct BenchStoreArgs {
    /// Bytes moved per S3 and filesystem measurement, in MiB.
    #[arg(long, default_value_t = 1024)]
    total_mib: usize,
    /// Size of each blob, in KiB.
    #[arg(long, default_value_t = 4096)]
    blob_kib: usize,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// S3-compatible endpoint; without it (and without --s3-bucket) the S3
    /// rows are skipped. Credentials come from the standard AWS chain.
    #[arg(long, env = "RBK_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "RBK_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// An existing bucket to use; by default a fresh `rbk-bench-*` bucket is
    /// created (and emptied again as the run goes).
    #[arg(long, env = "RBK_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// Directory for the filesystem rows (a temporary one by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Half-compressible data like a build cache: 4 KiB random blocks
/// alternating with 4 KiB of text.
fn pool(len: usize) -> Bytes {
    rbk_testsupport::half_compressible(len, 42).into()
}

/// Blob `i` of a run: a window of the pool, made unique by its first bytes.
fn blob(pool: &Bytes, nonce: u64, i: usize, len: usize) -> Bytes {
    let start = (i * 7919 * 4096) % (pool.len() - len + 1);
    let mut v = pool[start..start + len].to_vec();
    let tag = [nonce.to_le_bytes(), (i as u64).to_le_bytes()].concat();
    let n = tag.len().min(v.len());
    v[..n].copy_from_slice(&tag[..n]);
    v.into()
}

/// Runs `op(i)` for `count` indices with `concurrency` workers; returns
/// the wall-clock seconds.
async fn timed<F, Fut>(count: usize, concurrency: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    op(i).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

struct Table {
    rows: Vec<(String, usize, f64, Option<f64>)>,
}

impl Table {
    fn row(&mut self, what: &str, concurrency: usize, mbps: f64, raw: Option<f64>) {
        let ratio = raw.map(|r| format!("{:.0} MB/s | {:.0} %", r, 100.0 * mbps / r)).unwrap_or_else(|| "| ".into());
        println!("| {what} | {concurrency} | {mbps:.0} MB/s | {ratio} |");
        self.rows.push((what.to_owned(), concurrency, mbps, raw));
    }
}

pub async fn run(args: BenchStoreArgs) -> anyhow::Result<()> {
    if args.blob_kib == 0 || args.total_mib == 0 {
        bail!("--blob-kib and --total-mib must be positive");
    }
    let blob_len = args.blob_kib * 1024;
    let count = (args.total_mib * 1024 * 1024).div_ceil(blob_len);
    let total_mb = (count * blob_len) as f64 / MIB;
    let pool = pool((64 << 20).max(blob_len * 2));
    let nonce = rand::random::<u64>();
    let mut t = Table { rows: Vec::new() };
    println!("blobs: {count} x {} KiB = {total_mb:.0} MiB per row; data: half-compressible", args.blob_kib);
    println!();
    println!("| measurement | concurrency | ours | raw | ours / raw |");
    println!("|---|---|---|---|---|");

    // CPU stages, one core.
    let cpu_total = 256usize << 20;
    let chunks: Vec<Bytes> = (0..cpu_total / (4 << 20)).map(|i| blob(&pool, nonce, i, 4 << 20)).collect();
    let started = Instant::now();
    for c in &chunks {
        std::hint::black_box(Digest::of(c));
    }
    t.row("blake3 hash (1 core)", 1, cpu_total as f64 / MIB / started.elapsed().as_secs_f64(), None);
    let started = Instant::now();
    let packed: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| zstd::bulk::compress(c, rbk_store::DEFAULT_ZSTD_LEVEL))
        .collect::<Result<_, _>>()?;
    t.row("zstd-3 compress (1 core)", 1, cpu_total as f64 / MIB / started.elapsed().as_secs_f64(), None);
    let ratio = packed.iter().map(Vec::len).sum::<usize>() as f64 / cpu_total as f64;
    let started = Instant::now();
    for p in &packed {
        std::hint::black_box(zstd::bulk::decompress(p, 4 << 20)?);
    }
    t.row("zstd-3 decompress (1 core)", 1, cpu_total as f64 / MIB / started.elapsed().as_secs_f64(), None);
    drop(chunks);

    // Filesystem: the plain backend and the default stack on top of it.
    let tmp = tempfile_dir(args.dir.as_deref())?;
    for (name, config) in [
        ("fs put", StoreConfig::Filesystem { path: tmp.join("plain") }),
        ("fs put (verify+compress)", StoreConfig::local(tmp.join("stack"))),
    ] {
        let store = build_store(&config).await?;
        for &c in &args.concurrency {
            let (put_s, get_s) = put_get(Target::Ours(store.clone()), &pool, nonce ^ (c as u64) << 32 ^ name.len() as u64, count, blob_len, c).await?;
            t.row(name, c, total_mb / put_s, None);
            t.row(&name.replace("put", "get"), c, total_mb / get_s, None);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);

    if args.s3_endpoint.is_some() || args.s3_bucket.is_some() {
        s3_rows(&args, &mut t, &pool, nonce, count, blob_len, total_mb).await?;
    } else {
        println!("\n(S3 rows skipped: give --s3-endpoint or --s3-bucket)");
    }
    println!("\nzstd-3 ratio on this data: {:.2}", ratio);
    Ok(())
}

fn tempfile_dir(dir: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    let base = dir.map(|d| d.to_path_buf()).unwrap_or_else(std::env::temp_dir);
    let path = base.join(format!("rbk-bench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// Where a row's blobs go: through one of our store stacks (by digest), or
/// the same bytes through the bare SDK, one PutObject / GetObject each
/// (`raw-NONCE/I`), the baseline the S3 rows are compared with.
#[derive(Clone)]
enum Target {
    Ours(Arc<dyn Store>),
    Raw { client: aws_sdk_s3::Client, bucket: String },
}

impl Target {
    fn raw_key(nonce: u64, i: usize) -> String {
        format!("raw-{nonce:016x}/{i}")
    }

    async fn put(&self, nonce: u64, i: usize, body: Bytes) -> anyhow::Result<()> {
        match self {
            Target::Ours(store) => drop(store.put_bytes(body).await?),
            Target::Raw { client, bucket } => {
                client.put_object().bucket(bucket).key(Self::raw_key(nonce, i)).body(body.into()).send().await?;
            }
        }
        Ok(())
    }

    /// Blob `i` (digest `d`) read back; returns its length.
    async fn get(&self, nonce: u64, i: usize, d: Digest) -> anyhow::Result<usize> {
        Ok(match self {
            Target::Ours(store) => store.get_bytes(d).await?.len(),
            Target::Raw { client, bucket } => {
                let out = client.get_object().bucket(bucket).key(Self::raw_key(nonce, i)).send().await?;
                out.body.collect().await?.into_bytes().len()
            }
        })
    }

    async fn delete(&self, nonce: u64, i: usize, d: Digest) -> anyhow::Result<()> {
        match self {
            Target::Ours(store) => store.delete(d).await?,
            Target::Raw { client, bucket } => drop(client.delete_object().bucket(bucket).key(Self::raw_key(nonce, i)).send().await?),
        }
        Ok(())
    }
}

/// Puts `count` fresh blobs, reads them all back, deletes them; returns the
/// seconds the puts and the gets took.
async fn put_get(
    target: Target,
    pool: &Bytes,
    nonce: u64,
    count: usize,
    blob_len: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let digests: Arc<Vec<Digest>> = Arc::new((0..count).map(|i| Digest::of(&blob(pool, nonce, i, blob_len))).collect());
    let put = {
        let (target, pool) = (target.clone(), pool.clone());
        timed(count, concurrency, move |i| {
            let (target, pool) = (target.clone(), pool.clone());
            async move { target.put(nonce, i, blob(&pool, nonce, i, blob_len)).await }
        })
        .await?
    };
    let get = {
        let (target, digests) = (target.clone(), digests.clone());
        timed(count, concurrency, move |i| {
            let (target, digests) = (target.clone(), digests.clone());
            async move {
                let len = target.get(nonce, i, digests[i]).await?;
                anyhow::ensure!(len == blob_len, "blob {i} ({}) came back with {len} bytes", digests[i]);
                Ok(())
            }
        })
        .await?
    };
    for (i, d) in digests.iter().enumerate() {
        target.delete(nonce, i, *d).await?;
    }
    Ok((put, get))
}

#[allow(clippy::too_many_arguments)]
async fn s3_rows(
    args: &BenchStoreArgs,
    t: &mut Table,
    pool: &Bytes,
    nonce: u64,
    count: usize,
    blob_len: usize,
    total_mb: f64,
) -> anyhow::Result<()> {
    let bucket = args.s3_bucket.clone().unwrap_or_else(|| format!("rbk-bench-{nonce:016x}"));
    let mut s3 = S3Config::new(&bucket);
    s3.endpoint = args.s3_endpoint.clone();
    s3.region = Some(args.s3_region.clone());
    s3.prefix = format!("bench-{nonce:016x}");
    if let (Ok(id), Ok(secret)) = (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        s3.access_key_id = Some(Secret(id));
        s3.secret_access_key = Some(Secret(secret));
    }
    let client = s3.sdk_client().await?;
    if args.s3_bucket.is_none() {
        client.create_bucket().bucket(&bucket).send().await.with_context(|| format!("creating bucket {bucket}"))?;
    }
    // The production stack minus Redis: existence cache > verify > compress > s3.
    let stack = StoreConfig::ExistenceCache {
        redis_url: None,
        redis_prefix: "rbk:".into(),
        redis_timeout_ms: 250,
        capacity: 1 << 20,
        ttl_secs: 600,
        inner: Box::new(StoreConfig::Verify {
            inner: Box::new(StoreConfig::Compress { level: rbk_store::DEFAULT_ZSTD_LEVEL, inner: Box::new(StoreConfig::S3(s3)) }),
        }),
    };
    let store = build_store(&stack).await?;
    // The same without zstd: separates the wrappers' own cost from the CPU
    // compression takes (which matters on a small machine shared with the
    // S3 server, and pays for itself on a real network).
    let StoreConfig::ExistenceCache { inner, .. } = &stack else { unreachable!("built above") };
    let StoreConfig::Verify { inner } = &**inner else { unreachable!("built above") };
    let StoreConfig::Compress { inner: s3_only, .. } = &**inner else { unreachable!("built above") };
    let uncompressed = build_store(&StoreConfig::Verify { inner: s3_only.clone() }).await?;
    for &c in &args.concurrency {
        let raw = Target::Raw { client: client.clone(), bucket: bucket.clone() };
        let (raw_put, raw_get) = put_get(raw, pool, nonce ^ 0xffff ^ (c as u64) << 40, count, blob_len, c).await?;
        let (put, get) = put_get(Target::Ours(store.clone()), pool, nonce ^ (c as u64) << 40, count, blob_len, c).await?;
        t.row("S3 put (full stack)", c, total_mb / put, Some(total_mb / raw_put));
        t.row("S3 get (full stack)", c, total_mb / get, Some(total_mb / raw_get));
        let (put, get) = put_get(Target::Ours(uncompressed.clone()), pool, nonce ^ 0xabcd ^ (c as u64) << 40, count, blob_len, c).await?;
        t.row("S3 put (verify, no zstd)", c, total_mb / put, Some(total_mb / raw_put));
        t.row("S3 get (verify, no zstd)", c, total_mb / get, Some(total_mb / raw_get));
    }
    if args.s3_bucket.is_none() {
        let _ = client.delete_bucket().bucket(&bucket).send().await;
    }
    Ok(())
}
