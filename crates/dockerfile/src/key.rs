//! Cache keys: a blake3 hash over everything that determines a step's result
//! and nothing else.
//!
//! Content of context files is hashed as: relative path, kind, for files
//! the mode as [`context_file_mode`] gives it and the bytes' blake3, for
//! symlinks the target. Never the mtime, the owner, the absolute checkout
//! path, or permission bits that depend on the umask (group and other), and
//! directory modes are left out. The client stages the context with the
//! same modes (files by [`context_file_mode`], directories 0o755;
//! `rbk_plan`'s `stage_context`) and owner 0:0, so a cache hit is
//! indistinguishable from a rebuild.

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

/// A context file's mode as the frontend key holds it (the staged context,
/// and so the action key and the layer, keep the full mode): the
/// bits Docker keeps that a checkout does not vary — the owner's
/// permissions, setuid, setgid, sticky — with group and other given the
/// owner's read and execute bits, because theirs are the umask's (git
/// writes one file 0644 under umask 022, 0600 under 077, 0664 under 002).
/// An ordinary file is 0644 or 0755 (git's model); a read-only one 0444.
pub fn context_file_mode(mode: u32) -> u32 {
    let owner = mode & 0o700;
    (mode & 0o7000) | owner | ((owner >> 3) & 0o050) | ((owner >> 6) & 0o005)
}

#[cfg(test)]
mod mode_tests {
    use super::context_file_mode;

    #[test]
    fn one_checkout_under_any_umask_has_one_mode_and_owner_bits_are_kept() {
        for umask in [0o002, 0o022, 0o027, 0o077] {
            assert_eq!(context_file_mode(0o666 & !umask), 0o644, "umask {umask:o}");
            assert_eq!(context_file_mode(0o777 & !umask), 0o755, "umask {umask:o}");
        }
        assert_eq!(context_file_mode(0o400), 0o444);
        assert_eq!(context_file_mode(0o500), 0o555);
        assert_eq!(context_file_mode(0o4755), 0o4755);
    }
}
