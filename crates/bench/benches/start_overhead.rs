//! `cargo bench -p rbk-bench --bench start_overhead`: container start
//! overhead per RUN (`true`), runc vs crun (median of 20). Needs root and
//! the test services' programs (`eval "$(deploy/dev/services.sh env)"`).

fn main() {
    let runs = std::env::var("RBK_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let runc = rbk_testsupport::program("runc");
    let crun = rbk_testsupport::program("crun");
    let busybox = rbk_testsupport::program("busybox");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let results = rt
        .block_on(rbk_bench::start_overhead::start_overhead(
            runs,
            &busybox,
            &[(rbk_worker::RuntimeKind::Runc, runc.as_path()), (rbk_worker::RuntimeKind::Crun, crun.as_path())],
        ))
        .expect("benchmark run");
    print!("{}", rbk_bench::start_overhead::table(&results));
}
