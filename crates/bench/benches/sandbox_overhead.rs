//! `cargo bench -p rbk-worker --bench sandbox_overhead`: what the RUN
//! sandbox (issue #14) costs per step, runc vs crun. Each row runs `true`
//! on busybox RBK_BENCH_RUNS times (default 30, after one warm-up) and
//! prints the median and p90 of the whole step (`Executor::execute`):
//!
//! - `host + insecure`: the worker's network and no seccomp, masks or
//!   capability limits: what every step got before the sandbox;
//! - `none + sandbox`: seccomp, noNewPrivileges, capabilities, a new
//!   network namespace with only `lo`;
//! - `default + sandbox`: the default: the same plus a network namespace
//!   with pasta egress taken from the ready pool;
//! - `default, no pool`: the same with the pool off (pasta started on the
//!   step's path), to show what the pool saves.
//!
//! Needs root, runc, crun, pasta and busybox (`eval "$(deploy/dev/services.sh env)"`).

use std::time::{Duration, Instant};

use rbk_worker::{Entitlement, Executor, LayerRef, RuntimeKind, Step, StepInputs, WorkerConfig};

fn main() {
    let runs: usize = std::env::var("RBK_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let busybox = rbk_testsupport::program("busybox");
    let dir = tempfile::tempdir().unwrap();
    let layout = rbk_image::OciLayout::create(dir.path().join("layout")).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &busybox, "busybox:latest").unwrap();
    let base: Vec<LayerRef> = image.layers().iter().zip(image.diff_ids()).map(|(d, id)| LayerRef { digest: d.digest, diff_id: *id }).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("| runtime | case | runs | whole step, median | whole step, p90 |\n|---|---|---|---|---|");
    for (kind, prog) in [(RuntimeKind::Runc, "runc"), (RuntimeKind::Crun, "crun")] {
        let program = rbk_testsupport::program(prog);
        let cases: [(&str, &str, &str, usize); 6] = [
            ("host + insecure", "host", "insecure", 2),
            ("host + sandbox", "host", "sandbox", 2),
            ("none + insecure", "none", "insecure", 2),
            ("none + sandbox", "none", "sandbox", 2),
            ("default + sandbox", "private", "sandbox", 2),
            ("default, no pool", "private", "sandbox", 0),
        ];
        for (name, network, security, pool) in cases {
            let mut config = WorkerConfig::new(dir.path().join(format!("{prog}-{pool}-{network}-{security}")), kind, &program);
            config.entitlements = Entitlement::ALL.to_vec();
            config.netns_pool = pool;
            let ex = Executor::new(config).unwrap();
            let step: Step = serde_json::from_value(serde_json::json!({
                "kind": "run", "command": {"exec": ["/bin/true"]}, "network": network, "security": security,
                "base": serde_json::to_value(&base).unwrap(),
            }))
            .unwrap();
            let inputs = StepInputs { allow: Entitlement::ALL.to_vec(), ..Default::default() };
            let mut times = Vec::new();
            rt.block_on(async {
                for i in 0..=runs {
                    // Give the pool time to refill, as the gaps between a
                    // worker's steps do.
                    tokio::time::sleep(Duration::from_millis(if pool > 0 { 150 } else { 0 })).await;
                    let t = Instant::now();
                    let out = ex.execute(&step, &layout, &inputs, rbk_worker::logs::discard()).await.unwrap();
                    assert!(out.succeeded(), "{name}: {:?}", out.tail);
                    if i > 0 {
                        times.push(t.elapsed());
                    }
                }
            });
            times.sort();
            let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
            println!("| {prog} | {name} | {runs} | {} | {} |", ms(times[times.len() / 2]), ms(times[(times.len() * 9 / 10).min(times.len() - 1)]));
        }
    }
}
