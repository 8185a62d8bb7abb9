//! The OCI image model: registry pull and push, import, unpack, layer diff,
//! export.
//!
//! Everything an image is made of lives in an [`OciLayout`] directory on the
//! local disk (blobs by sha256 plus an `index.json`): a pull writes into
//! one, an import copies into one, a build appends layers to an [`Image`]
//! whose blobs are in one, and exports and pushes read from one. One local
//! format means one place where digests are checked.
//!
//! Layers move between machines through rbk's content store by their blake3
//! [`rbk_store::Digest`]; OCI names the same bytes by sha256 ([`OciDigest`]).
//! [`Layer`] carries both.
//!
//! Filesystem work (unpack, diff, import, export) is synchronous: callers in
//! async code run it under `tokio::task::spawn_blocking`. Registry work is
//! async.

mod compression;
mod diff;
mod digest;
mod error;
mod export;
mod image;
mod import;
mod layout;
pub mod model;
mod recompress;
mod platform;
mod reference;
pub mod registry;
#[cfg(feature = "test-util")]
pub mod testimage;
mod unpack;

pub use compression::{Compression, decompress};
pub use diff::{Layer, LayerOptions, layer_from_upper};
pub use digest::{OciDigest, Sha256Reader, Sha256Writer};
pub use error::{ImageError, Result};
pub use export::{export_docker_archive, export_oci_archive};
pub use image::Image;
pub use import::{import_docker_archive, import_oci};
pub use layout::{BlobWriter, OciLayout};
pub use platform::save_index;
pub use model::{ContainerConfig, Descriptor, HealthCheck, History, ImageConfig, Index, Manifest, Platform, RootFs, media_type};
pub use recompress::{Recompress, recompress_image};
pub use reference::{DOCKER_HUB, ImageRef};
pub use registry::{Credentials, PushOptions, PushReport, RegistryClient};
pub use unpack::{UnpackOptions, UnpackStats, unpack_layer, unpack_layer_file};
