//! `rbk build` end to end for the forms issue #22 items 2, 4, 5, 6 and 7
//! made buildable: files from images (`COPY --from=<image>`, bind mounts
//! from an image), `ADD <git url>`, local `ADD` archives of every
//! compression and hard links, `ONBUILD` triggers of base images, and
//! every output type. Real parts only: runc, the test registry
//! (`RBK_TEST_REGISTRY`), skopeo, `git daemon`; bases are built from
//! busybox-static and pushed there by the tests.

#[path = "../common/oci_archive.rs"]
mod oci_archive;

mod add_git;
mod archives;
mod image_sources;
mod onbuild;
mod outputs;
mod support;

#[path = "../common/plain_progress.rs"]
mod plain_progress;
