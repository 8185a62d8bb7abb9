//! Item 2: images as sources. `COPY --from=<image>` and
//! `RUN --mount=type=bind,from=<image>` resolve the reference on every
//! build (a tag to the digest it names now, a pinned digest as is), and
//! the step's key follows the digest.

use crate::support::{Project, busybox, push_built, registry};

/// Builds `FROM base` + `/marker` holding `value` and pushes it as `tag`
/// (`-o type=image,name=...,push=true`); returns the image digest.
fn push_marker(producer: &Project, base: &str, tag: &str, value: &str) -> String {
    let df = format!("FROM {base}\nRUN echo {value} > /marker\n");
    producer.build(&df, &["-o", &format!("type=image,name={tag},push=true")]).assert_ok().digest
}

fn copy_step_cached(progress: &str) -> bool {
    // Plain progress: `#N [2/3] COPY --from=...`, then `#N CACHED`.
    progress
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("COPY --from="))
        .filter_map(|l| l.split(' ').next())
        .any(|n| progress.lines().any(|l| l == format!("{n} CACHED")))
}

#[tokio::test]
async fn copy_and_bind_from_an_image_read_its_files_and_follow_its_tag_to_a_new_digest() {
    let base = busybox().await;
    let tag = format!("{}/imgsrc-copy-from:latest", registry());
    let producer = Project::new();
    push_marker(&producer, &base, &tag, "one");
    let p = Project::new();
    let df = format!(
        "FROM {base}\nCOPY --from={tag} /marker /copied\nRUN --mount=type=bind,from={tag},source=/marker,target=/m cat /m > /bound\n"
    );
    let (built, img) = p.build_oci(&df, &[]);
    assert_eq!(img.file("copied").as_deref(), Some("one\n"));
    assert_eq!(img.file("bound").as_deref(), Some("one\n"));
    assert!(built.progress.contains(&format!("FROM {tag}@sha256:")), "the image's own FROM line:\n{}", built.progress);

    let (again, _) = p.build_oci(&df, &[]);
    assert!(copy_step_cached(&again.progress), "same digest, same key:\n{}", again.progress);

    push_marker(&producer, &base, &tag, "two");
    let (moved, img) = p.build_oci(&df, &[]);
    assert!(!copy_step_cached(&moved.progress), "the tag moved, the step runs again:\n{}", moved.progress);
    assert_eq!(img.file("copied").as_deref(), Some("two\n"));
    assert_eq!(img.file("bound").as_deref(), Some("two\n"));
}

#[tokio::test]
async fn a_pinned_digest_is_used_as_is_when_the_tag_has_moved() {
    let base = busybox().await;
    let repo = format!("{}/imgsrc-pinned", registry());
    let producer = Project::new();
    let first = push_marker(&producer, &base, &format!("{repo}:latest"), "first");
    push_marker(&producer, &base, &format!("{repo}:latest"), "second");
    let p = Project::new();
    let (_, img) = p.build_oci(&format!("FROM scratch\nCOPY --from={repo}@{first} /marker /pinned\n"), &[]);
    assert_eq!(img.file("pinned").as_deref(), Some("first\n"));
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_naming_it() {
    let p = Project::new();
    let missing = format!("{}/imgsrc-no-such-image:1", registry());
    let built = p.build(&format!("FROM scratch\nCOPY --from={missing} /x /x\n"), &[]);
    assert!(!built.ok);
    assert!(built.progress.contains("imgsrc-no-such-image"), "{}", built.progress);
    assert!(!built.progress.contains("not supported"), "{}", built.progress);
}

#[tokio::test]
async fn a_cache_mount_seeded_from_an_image_starts_with_its_directory_and_then_keeps_its_own() {
    let base = busybox().await;
    let tag = format!("{}/imgsrc-cache-seed:latest", registry());
    push_built(&format!("FROM {base}\nRUN mkdir -p /opt/wheels && echo a.whl > /opt/wheels/a.whl\n"), &tag);
    let p = Project::new();
    let df = format!(
        "FROM {base}\nRUN --mount=type=cache,id=wheels,target=/cache,from={tag},source=/opt/wheels ls /cache > /first && touch /cache/b.whl\n\
         RUN --mount=type=cache,id=wheels,target=/cache,from={tag},source=/opt/wheels ls /cache > /second\n"
    );
    let (built, img) = p.build_oci(&df, &[]);
    assert_eq!(img.file("first").as_deref(), Some("a.whl\n"), "{}", built.progress);
    assert_eq!(img.file("second").as_deref(), Some("a.whl\nb.whl\n"), "the seeded cache is the cache");
}
