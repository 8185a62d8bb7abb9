//! What a step prints cannot break its worker or grow the coordinator: a
//! 50 MB line and 100 MB of output through a real worker and coordinator.

use crate::harness::*;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_step_printing_a_50_mb_line_and_100_mb_of_logs_is_clipped_and_its_worker_runs_the_next_build() {
    let farm = Farm::start().await;
    let worker = farm.worker("a", &[]);
    let rss_before = farm.coordinator_memory_kib("VmRSS") * 1024;
    // One 50 MB line with no newline, then 100 MB of 100-byte lines.
    let loud = "dd if=/dev/zero bs=1048576 count=50 2>/dev/null | tr '\\000' x; echo; \
                yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 \
                | head -c 104857600; echo finished-printing >&2";
    let events = farm.build(vec![farm.run("loud", "k-loud", loud, None, None)]).await;
    assert_eq!(final_state(&events), "succeeded", "{:?}", events.iter().rev().take(3).collect::<Vec<_>>());
    let lines = logs_of(&events, "loud");
    let shown: u64 = lines.iter().map(|l| l.len() as u64).sum();
    assert!(lines.iter().any(|l| l.contains("log clipped")), "no clip marker in {} lines", lines.len());
    assert!(shown <= 9 * MIB, "the client was sent {shown} bytes of a step's log");

    // The same worker, still in its first session, runs the next build.
    let events = farm.build(vec![farm.run("next", "k-next", "echo after-the-flood", None, None)]).await;
    assert_eq!(final_state(&events), "succeeded");
    assert_eq!(logs_of(&events, "next"), ["after-the-flood"]);
    assert_eq!(finished_on(&events)["next"], "a");
    let log = worker.log_text();
    assert_eq!(log.matches("registered with ").count(), 1, "the worker's session broke:\n{log}");

    let peak = farm.coordinator_memory_kib("VmHWM") * 1024;
    let grew = peak.saturating_sub(rss_before);
    eprintln!("coordinator RSS before {} MiB, peak {} MiB (+{} MiB) for 150 MB of step output", rss_before / MIB, peak / MIB, grew / MIB);
    assert!(grew < 64 * MIB, "the coordinator's memory grew by {} MiB for one loud step", grew / MIB);
}
