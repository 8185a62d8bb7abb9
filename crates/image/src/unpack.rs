use std::io::Read;
use std::path::Path;

use crate::{ImageError, OciDigest, Result};

/// Limits and permissions for [`unpack_layer`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Allow character and block device entries (privileged builds only:
    /// a device node in a layer is a way out of the container).
    pub privileged: bool,
    /// Refuse layers that inflate beyond this many tar bytes (decompression
    /// bombs). Default 64 GiB.
    pub max_uncompressed_bytes: u64,
    /// Refuse layers with more entries than this. Default 10 million.
    pub max_entries: u64,
    /// Apply the uid/gid recorded in the tar (needs root); otherwise files
    /// belong to the unpacking user.
    pub preserve_ownership: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { privileged: false, max_uncompressed_bytes: 64 << 30, max_entries: 10_000_000, preserve_ownership: true }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of uncompressed tar read.
    pub tar_bytes: u64,
    /// sha256 of the uncompressed tar: compare with the config's diff_id.
    pub diff_id: OciDigest,
}

/// Unpacks a layer (gzip, zstd or plain tar, detected from its first bytes)
/// into `dest`, which must exist, turning OCI whiteouts into overlayfs ones
/// (`.wh.x` → character device 0:0 named `x`; `.wh..wh..opq` →
/// `trusted.overlay.opaque=y` on the directory) so `dest` can serve as an
/// overlayfs lower directory.
///
/// Hostile input is refused with [`ImageError::HostileEntry`] naming the
/// entry: absolute paths, `..`, paths through symlinks, hard links whose
/// target is outside the layer, device nodes unless `privileged`; and
/// [`ImageError::TooLarge`] past `max_uncompressed_bytes`. Every file is
/// created relative to a directory file descriptor, never following a
/// symlink, so nothing can be written outside `dest`. On error `dest` holds
/// a partial tree: callers unpack into a scratch directory and rename it
/// into place on success.
pub fn unpack_layer(reader: impl Read, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let _ = (reader, dest, opts);
    Err(ImageError::invalid("unpack_layer", "not implemented yet"))
}

/// [`unpack_layer`] from a blob file.
pub fn unpack_layer_file(blob: &Path, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let f = std::fs::File::open(blob).map_err(|e| ImageError::io(format!("opening layer {}", blob.display()), e))?;
    unpack_layer(f, dest, opts)
}
