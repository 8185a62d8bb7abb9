//! `ADD <git url>` on the worker (`rbk_worker::git_source`) against a real
//! `git daemon`: the planned commit or nothing, and only network
//! transports.

use std::path::Path;

use rbk_testsupport::{GitDaemon, git};
use rbk_worker::git_source::fetch_git;

/// A served bare repository whose `main` held `v1`, then was force-pushed
/// to an unrelated `v2` (v1's commit is no longer reachable); returns the
/// two commits.
fn rewritten_main(dir: &Path) -> (String, String) {
    git(dir, &["init", "-q", "--bare", "-b", "main", "served/app.git"]);
    let bare = dir.join("served/app.git");
    let mut commits = Vec::new();
    for (work, content) in [("one", "v1\n"), ("two", "v2\n")] {
        git(dir, &["init", "-q", "-b", "main", work]);
        std::fs::write(dir.join(work).join("f.txt"), content).unwrap();
        git(&dir.join(work), &["add", "f.txt"]);
        git(&dir.join(work), &["commit", "-q", "-m", content.trim()]);
        git(&dir.join(work), &["push", "-q", "--force", bare.to_str().unwrap(), "main"]);
        commits.push(git(&dir.join(work), &["rev-parse", "HEAD"]));
    }
    git(&bare, &["reflog", "expire", "--all", "--expire=now"]);
    git(&bare, &["gc", "-q", "--prune=now"]);
    (commits.remove(0), commits.remove(0))
}

#[tokio::test]
async fn the_planned_commit_is_checked_out_and_a_rewritten_branch_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let (gone, now) = rewritten_main(dir.path());
    let daemon = GitDaemon::start(&dir.path().join("served"));
    let url = daemon.url("app.git");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    let tree = fetch_git(&url, "main", &now, "", false, &out).await.unwrap();
    assert_eq!(std::fs::read_to_string(tree.join("f.txt")).unwrap(), "v2\n");

    let e = fetch_git(&url, "main", &gone, "", false, &out).await.unwrap_err().to_string();
    assert!(e.contains(&format!("main is now {now}, not the {gone}")) && e.contains("changed during the build"), "{e}");
}

#[tokio::test]
async fn a_local_path_or_file_url_is_refused_before_git_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, commit) = rewritten_main(dir.path());
    let bare = dir.path().join("served/app.git");
    for repo in [bare.display().to_string(), format!("file://{}", bare.display())] {
        let e = fetch_git(&repo, "main", &commit, "", false, dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("not a git URL") || e.contains("file:// is not a transport"), "{repo}: {e}");
    }
}

#[tokio::test]
async fn a_subdirectory_that_escapes_through_a_symlink_stays_inside_the_checkout() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "--bare", "-b", "main", "served/app.git"]);
    let work = dir.path().join("work");
    git(dir.path(), &["init", "-q", "-b", "main", "work"]);
    std::os::unix::fs::symlink("/etc", work.join("etc")).unwrap();
    git(&work, &["add", "etc"]);
    git(&work, &["commit", "-q", "-m", "link"]);
    git(&work, &["push", "-q", dir.path().join("served/app.git").to_str().unwrap(), "main"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    let daemon = GitDaemon::start(&dir.path().join("served"));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let e = fetch_git(&daemon.url("app.git"), "main", &commit, "etc", false, &out).await.unwrap_err().to_string();
    // `etc` → `/etc`, read inside the checkout: itself again, never the host's.
    assert!(e.contains("too many levels of symbolic links") || e.contains("is not a directory of the repository"), "{e}");
}
