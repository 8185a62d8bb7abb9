//! `rbk-bench` as a user runs it: the measurements `rbk bench` had, under
//! the same names, and one cheap measurement end to end.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rbk-bench");

#[test]
fn help_lists_the_five_measurements() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for sub in ["worker", "store", "snapshot", "image", "raft"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(&format!("{sub} "))), "no `{sub}` in:\n{text}");
    }
}

#[test]
fn the_raft_fsync_probe_prints_a_row_per_method() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["raft", "--fsync-probe", "--commands", "5", "--dir"]).arg(dir.path()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for method in ["append + fsync (growing file)", "overwrite zero-written, O_DSYNC"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("| {method} | 5 |"))), "no row for {method:?} in:\n{stdout}");
    }
}
