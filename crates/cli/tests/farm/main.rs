//! The farm end to end as processes: `rbk coordinator` (store on the S3
//! server), `rbk worker`s with separate state dirs, builds submitted over
//! gRPC or with `rbk submit`. See `harness.rs`.

mod background_commits;
mod disk_limit;
mod gc;
mod harness;
mod workers;
mod submit;
mod ssh;
mod tenancy;
mod blob_scope;
mod buildx;
mod entitlements;
mod history;
mod output_bounds;
mod farm_images;
mod multiarch;

#[path = "../common/oci_archive.rs"]
mod oci_archive;
