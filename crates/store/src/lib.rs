//! The content store: blobs named by their blake3 digest.
//!
//! Every backend and every wrapper implements the one [`Store`] trait, so a
//! deployment composes them (for example S3 under compression under
//! verification under an existence cache) without any of them knowing the
//! others. Data that enters rbk (layers, cache-mount snapshots, build
//! contexts) is stored here and nowhere else.

#[macro_use]
mod wrapper;

mod compress;
mod config;
mod digest;
mod error;
mod existence;
mod fs;
mod held_back;
mod memory;
pub mod redis_conn;
mod redis_existence;
mod s3;
mod store;
mod verify;

pub use digest::{Digest, DigestParseError, Hasher};
pub use error::{StoreError, StoreResult};
pub use config::{DEFAULT_DIR, StoreConfig, build_store};
pub use compress::{CompressedStore, DEFAULT_LEVEL as DEFAULT_ZSTD_LEVEL};
pub use existence::{ExistenceCacheStore, ExistenceIndex, LruExistenceIndex, TieredExistenceIndex};
pub use fs::FilesystemStore;
pub use redis_existence::RedisExistenceIndex;
pub use memory::MemoryStore;
pub use s3::{S3Config, S3Store, Secret};
pub use verify::VerifyingStore;
pub use store::{ByteRange, ByteStream, ListPage, ListedBlob, Store, StoreExt, listing_order, stream_from_bytes};
