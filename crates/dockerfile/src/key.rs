//! Cache keys: a blake3 hash over everything that determines a step's result
//! and nothing else.
//!
//! Content of context files is hashed as: relative path, kind, for files
//! the executable bit and the bytes' blake3, for symlinks the target. Never
//! the mtime, the owner, the absolute checkout path, or permission bits that
//! depend on the umask: a file's mode is reduced to "executable or not"
//! (the owner's x bit — exactly what git records), and directory modes are
//! left out. The client stages the context with the same normalisation
//! (0o755 / 0o644 files, 0o755 directories; `rbk_plan`'s `stage_context`)
//! so a cache hit is indistinguishable from a rebuild.

use std::fmt;

/// A step's cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 16 hex digits, for display.
    pub fn short(&self) -> String {
        self.hex()[..16].to_string()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Builds a key from labelled, length-prefixed fields, so that no two
/// different field sequences hash the same bytes.
pub(crate) struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"rbk-dockerfile-key-v1\0");
        let mut k = KeyHasher(h);
        k.field("domain", domain.as_bytes());
        k
    }

    pub fn field(&mut self, label: &str, value: &[u8]) -> &mut Self {
        self.0.update(&(label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    pub fn str(&mut self, label: &str, value: &str) -> &mut Self {
        self.field(label, value.as_bytes())
    }

    pub fn opt(&mut self, label: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.field(label, &[&[1u8][..], v.as_bytes()].concat()),
            None => self.field(label, &[0u8]),
        }
    }

    pub fn key(&mut self, label: &str, k: &Key) -> &mut Self {
        self.field(label, &k.0)
    }

    pub fn finish(&self) -> Key {
        Key(*self.0.finalize().as_bytes())
    }
}

/// The part of a file's mode that goes into keys: executable or not.
pub(crate) fn normalised_mode(mode: u32) -> u32 {
    if mode & 0o100 != 0 { 0o755 } else { 0o644 }
}
