//! `rbk-bench raft --fsync-probe`: what one durable log append costs on the
//! disk under `--dir`, by method. The Raft log's commit latency is bounded
//! below by this (every commit waits for one durable append on a quorum),
//! so this is the table that chose the log's storage layout
//! (docs/architecture.md, rbk-raft): appends of 100–500 bytes, each made
//! durable before the next, ~2000 per method, p50/p99/max.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Bytes each preallocated file holds (more than `ops` × 500 bytes).
const PREALLOC: u64 = 4 << 20;
const BLOCK: usize = 4096;

struct Rng(u64);
impl Rng {
    fn size(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        100 + (self.0 % 401) as usize
    }
}

fn zero_filled(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| path.display().to_string())?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn fallocated(path: &Path, len: u64) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::create(path).with_context(|| path.display().to_string())?;
    // SAFETY: fallocate on a file descriptor we own, no pointers involved.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    anyhow::ensure!(rc == 0, "fallocate {}: {}", path.display(), std::io::Error::last_os_error());
    f.sync_all()?;
    Ok(())
}

/// The op of the methods that make each write durable with a call after it
/// (`File::sync_all` or `File::sync_data`).
fn write_then(sync: fn(&File) -> std::io::Result<()>) -> impl FnMut(&File, u64, &[u8]) -> std::io::Result<()> {
    move |f, at, r| {
        f.write_all_at(r, at)?;
        sync(f)
    }
}

/// One method: `op(file, offset, record)` writes the record and makes it
/// durable.
fn measure(
    name: &str,
    file: &File,
    ops: usize,
    op: &mut dyn FnMut(&File, u64, &[u8]) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lat = Vec::with_capacity(ops);
    let mut at = 0u64;
    let t0 = Instant::now();
    for i in 0..ops {
        let rec = vec![(i % 251) as u8 | 1; rng.size()];
        let t = Instant::now();
        op(file, at, &rec).with_context(|| format!("{name}: op {i}"))?;
        lat.push(t.elapsed());
        at += rec.len() as u64;
    }
    let took = t0.elapsed();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "| {name} | {ops} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
        ops as f64 / took.as_secs_f64(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(*lat.last().expect("ops > 0"))
    );
    Ok(())
}

pub fn run(dir: &Path, ops: usize) -> anyhow::Result<()> {
    anyhow::ensure!(ops > 0 && ops as u64 * 500 < PREALLOC, "--commands must be between 1 and {}", PREALLOC / 500);
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    println!("| method | appends | appends/s | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let path = dir.join("fsync-probe");
    let append = |p: &Path| OpenOptions::new().create(true).truncate(true).write(true).open(p);

    measure("append + fsync (growing file)", &append(&path)?, ops, &mut write_then(File::sync_all))?;
    measure("append + fdatasync (growing file)", &append(&path)?, ops, &mut write_then(File::sync_data))?;
    fallocated(&path, PREALLOC)?;
    let f = OpenOptions::new().write(true).open(&path)?;
    measure("overwrite fallocated (unwritten) + fdatasync", &f, ops, &mut write_then(File::sync_data))?;
    zero_filled(&path, PREALLOC)?;
    let f = OpenOptions::new().write(true).open(&path)?;
    measure("overwrite zero-written + fdatasync", &f, ops, &mut write_then(File::sync_data))?;
    zero_filled(&path, PREALLOC)?;
    let f = OpenOptions::new().write(true).custom_flags(libc::O_DSYNC).open(&path)?;
    measure("overwrite zero-written, O_DSYNC", &f, ops, &mut |f, at, r| f.write_all_at(r, at))?;
    zero_filled(&path, PREALLOC)?;
    match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(&path) {
        Ok(f) => {
            // O_DIRECT wants aligned buffers, offsets and lengths: rewrite
            // the 4 KiB blocks the record touches, as a direct-I/O log would.
            let layout = std::alloc::Layout::from_size_align(2 * BLOCK, BLOCK)?;
            // SAFETY: a non-zero-sized layout; freed below with the same layout.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            anyhow::ensure!(!ptr.is_null(), "allocating an aligned buffer");
            // SAFETY: ptr is valid for 2 * BLOCK bytes and only used here.
            let buf = unsafe { std::slice::from_raw_parts_mut(ptr, 2 * BLOCK) };
            let mut tail = vec![0u8; BLOCK];
            let r = measure("overwrite zero-written, O_DIRECT|O_DSYNC 4 KiB blocks", &f, ops, &mut |f, at, r| {
                let block = at / BLOCK as u64 * BLOCK as u64;
                let skip = (at - block) as usize;
                let end = skip + r.len();
                let len = end.div_ceil(BLOCK) * BLOCK;
                buf[..skip].copy_from_slice(&tail[..skip]);
                buf[skip..end].copy_from_slice(r);
                buf[end..len].fill(0);
                f.write_all_at(&buf[..len], block)?;
                let last = (end - 1) / BLOCK * BLOCK;
                tail.copy_from_slice(&buf[last..last + BLOCK]);
                Ok(())
            });
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(ptr, layout) };
            r?;
        }
        Err(e) => println!("| O_DIRECT | - | - | - | - | not supported here: {e} |"),
    }
    std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
    Ok(())
}
