//! What metrics cost: one recorded store operation (MetricsStore over an
//! in-memory store vs the bare store) and one scrape of a populated registry.
//!
//! cargo bench -p rbk-metrics --bench overhead

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rbk_metrics::{BuildResult, CacheKind, Metrics, MetricsStore, StepResult};
use rbk_store::{MemoryStore, Store, StoreExt};

fn store_ops(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let data = Bytes::from(vec![7u8; 4096]);
    let bare = MemoryStore::default();
    let metered = MetricsStore::new(MemoryStore::default(), "memory", Metrics::new());
    let d = rt.block_on(bare.put_bytes(data.clone())).unwrap();
    rt.block_on(metered.put_bytes(data.clone())).unwrap();
    let mut g = c.benchmark_group("get 4 KiB");
    g.bench_function("bare", |b| b.iter(|| rt.block_on(bare.get_bytes(d)).unwrap()));
    g.bench_function("metered", |b| b.iter(|| rt.block_on(metered.get_bytes(d)).unwrap()));
    g.finish();
    let mut g = c.benchmark_group("find_missing 1");
    g.bench_function("bare", |b| b.iter(|| rt.block_on(bare.find_missing(&[d])).unwrap()));
    g.bench_function("metered", |b| b.iter(|| rt.block_on(metered.find_missing(&[d])).unwrap()));
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let m = Metrics::new();
    let s = MetricsStore::new(MemoryStore::default(), "s3", m.clone());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(s.put_bytes(Bytes::from_static(b"x"))).unwrap();
    for i in 0..100 {
        m.build_finished(BuildResult::Succeeded, Duration::from_millis(100 * i));
        m.step(StepResult::Done);
        m.cache_lookup(CacheKind::Action, i % 2 == 0);
    }
    c.bench_function("encode_prometheus", |b| b.iter(|| m.encode_prometheus().len()));
}

criterion_group!(benches, store_ops, scrape);
criterion_main!(benches);
