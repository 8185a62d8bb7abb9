//! Item 4: `ADD <git url>` in BuildKit's syntax (`REPO#REF:SUBDIR`,
//! `--keep-git-dir`, `--checksum`), keyed by the commit its ref names at
//! each build (issue #21 item 1). A bare repository served by a real
//! `git daemon` on 127.0.0.1; BuildKit does not take `file://` for ADD.

use std::path::PathBuf;

use rbk_testsupport::{GitDaemon, git};

use crate::plain_progress::is_cached;
use crate::support::{Project, busybox};

/// A bare repository `app.git` under a directory `git daemon` serves, and
/// the work tree commits are made in.
struct Repo {
    dir: tempfile::TempDir,
    daemon: GitDaemon,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("served")).unwrap();
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "served/app.git"]);
        git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        let daemon = GitDaemon::start(&dir.path().join("served"));
        Repo { dir, daemon }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `git://…/app.git` with `fragment` (`#REF:SUBDIR`, or empty).
    fn url(&self, fragment: &str) -> String {
        format!("{}{fragment}", self.daemon.url("app.git"))
    }

    /// Writes `files` (path, content, executable) into the work tree,
    /// commits them on main and pushes main; returns the commit id.
    fn commit(&self, files: &[(&str, &str, bool)]) -> String {
        use std::os::unix::fs::PermissionsExt;
        for (path, content, exec) in files {
            let f = self.work().join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, content).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(if *exec { 0o755 } else { 0o644 })).unwrap();
        }
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", "change"]);
        self.push("main");
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    fn push(&self, what: &str) {
        let bare = self.dir.path().join("served/app.git");
        git(&self.work(), &["push", "-q", "--force", bare.to_str().unwrap(), what]);
    }

    /// An annotated tag `name` at main's commit, pushed.
    fn tag(&self, name: &str) {
        git(&self.work(), &["tag", "-a", "-m", name, name]);
        self.push(&format!("refs/tags/{name}"));
    }
}

#[tokio::test]
async fn add_git_puts_the_checkout_in_the_image_with_git_modes_and_without_dot_git() {
    let repo = Repo::new();
    repo.commit(&[("hello.txt", "v1\n", false), ("bin/run.sh", "echo run\n", true)]);
    let base = busybox().await;
    let p = Project::new();
    let df = format!("FROM {base}\nADD {} /src/\nRUN stat -c '%a %u' /src/bin/run.sh /src/hello.txt > /modes\n", repo.url(""));
    let (_, img) = p.build_oci(&df, &[]);
    assert_eq!(img.file("src/hello.txt").as_deref(), Some("v1\n"));
    assert_eq!(img.file("src/bin/run.sh").as_deref(), Some("echo run\n"));
    assert_eq!(img.file("modes").as_deref(), Some("755 0\n644 0\n"), "git's modes, owned by root");
    assert!(img.layers().iter().flatten().all(|e| !e.path.starts_with("src/.git")), "no .git without --keep-git-dir");
}

#[tokio::test]
async fn a_subdirectory_in_the_fragment_copies_only_its_contents() {
    let repo = Repo::new();
    repo.commit(&[("top.txt", "top\n", false), ("docs/api/index.txt", "api\n", false)]);
    let base = busybox().await;
    let p = Project::new();
    let (_, img) = p.build_oci(&format!("FROM {base}\nADD {} /api/\n", repo.url("#main:docs/api")), &[]);
    assert_eq!(img.file("api/index.txt").as_deref(), Some("api\n"));
    assert_eq!(img.file("api/top.txt"), None);
    assert_eq!(img.file("api/docs/api/index.txt"), None);
}

#[tokio::test]
async fn keep_git_dir_keeps_a_dot_git_checked_out_at_the_commit_without_credentials_or_fetch_head() {
    let repo = Repo::new();
    let commit = repo.commit(&[("hello.txt", "v1\n", false)]);
    let base = busybox().await;
    let p = Project::new();
    let (_, img) = p.build_oci(&format!("FROM {base}\nADD --keep-git-dir=true {} /src/\n", repo.url("#main")), &[]);
    assert_eq!(img.file("src/hello.txt").as_deref(), Some("v1\n"));
    assert_eq!(img.file("src/.git/HEAD").as_deref(), Some(format!("{commit}\n").as_str()), "HEAD detached at the commit");
    assert!(img.file("src/.git/config").unwrap().contains(&format!("url = {}", repo.url(""))));
    assert_eq!(img.file("src/.git/FETCH_HEAD"), None);
}

#[tokio::test]
async fn a_moved_branch_reruns_the_add_and_what_follows_and_an_unmoved_one_is_cached() {
    let repo = Repo::new();
    repo.commit(&[("hello.txt", "v1\n", false)]);
    let base = busybox().await;
    let p = Project::new();
    let df = format!("FROM {base}\nADD {} /src/\nRUN cat /src/hello.txt > /seen\n", repo.url("#main"));
    let (first, img) = p.build_oci(&df, &[]);
    assert!(!is_cached(&first.progress, "ADD git://"), "{}", first.progress);
    assert_eq!(img.file("seen").as_deref(), Some("v1\n"));

    let (again, _) = p.build_oci(&df, &[]);
    assert!(is_cached(&again.progress, "ADD git://") && is_cached(&again.progress, "RUN cat"), "an unmoved ref is a hit:\n{}", again.progress);

    repo.commit(&[("hello.txt", "v2\n", false)]);
    let (moved, img) = p.build_oci(&df, &[]);
    assert!(!is_cached(&moved.progress, "ADD git://") && !is_cached(&moved.progress, "RUN cat"), "the branch moved:\n{}", moved.progress);
    assert_eq!(img.file("seen").as_deref(), Some("v2\n"));
}

#[tokio::test]
async fn an_annotated_tag_and_a_commit_id_name_the_commit_they_name_after_the_branch_moved() {
    let repo = Repo::new();
    let first = repo.commit(&[("hello.txt", "v1\n", false)]);
    repo.tag("v1");
    repo.commit(&[("hello.txt", "v2\n", false)]);
    let base = busybox().await;
    let p = Project::new();
    let df = format!("FROM {base}\nADD {} /tag/\nADD {} /commit/\nADD {} /branch/\n", repo.url("#v1"), repo.url(&format!("#{first}")), repo.url("#main"));
    let (_, img) = p.build_oci(&df, &[]);
    assert_eq!(img.file("tag/hello.txt").as_deref(), Some("v1\n"));
    assert_eq!(img.file("commit/hello.txt").as_deref(), Some("v1\n"));
    assert_eq!(img.file("branch/hello.txt").as_deref(), Some("v2\n"));
}

#[tokio::test]
async fn a_checksum_pins_the_commit_and_a_wrong_one_fails_naming_both() {
    let repo = Repo::new();
    let commit = repo.commit(&[("hello.txt", "v1\n", false)]);
    let base = busybox().await;
    let p = Project::new();
    let pinned = format!("FROM {base}\nADD --checksum={} {} /src/\n", &commit[..12], repo.url("#main"));
    let (_, img) = p.build_oci(&pinned, &[]);
    assert_eq!(img.file("src/hello.txt").as_deref(), Some("v1\n"));

    let wrong = format!("FROM {base}\nADD --checksum=0000000000 {} /src/\n", repo.url("#main"));
    let built = p.build(&wrong, &[]);
    assert!(!built.ok);
    assert!(built.progress.contains(&commit) && built.progress.contains("0000000000"), "{}", built.progress);
}

#[tokio::test]
async fn an_unknown_ref_or_an_unreachable_repository_fails_naming_the_dockerfile_line() {
    let repo = Repo::new();
    repo.commit(&[("hello.txt", "v1\n", false)]);
    let p = Project::new();
    let built = p.build(&format!("FROM scratch\n\nADD {} /src/\n", repo.url("#no-such-branch")), &[]);
    assert!(!built.ok);
    assert!(built.progress.contains("Dockerfile:3") && built.progress.contains("no-such-branch"), "{}", built.progress);

    let nobody = format!("git://127.0.0.1:{}/app.git", rbk_testsupport::free_port());
    let built = p.build(&format!("FROM scratch\nADD {nobody} /src/\n"), &[]);
    assert!(!built.ok);
    assert!(built.progress.contains("Dockerfile:2") && built.progress.contains(&nobody), "{}", built.progress);
}

#[tokio::test]
async fn an_ssh_git_source_is_refused_before_anything_is_fetched_saying_what_to_use() {
    let p = Project::new();
    for url in ["git@127.0.0.1:o/r.git", "ssh://git@127.0.0.1/o/r.git"] {
        let built = p.build(&format!("FROM scratch\nADD {url} /src/\n"), &[]);
        assert!(!built.ok);
        assert!(built.progress.contains("Dockerfile:2") && built.progress.contains("use an https:// or git:// URL"), "{}", built.progress);
    }
}
