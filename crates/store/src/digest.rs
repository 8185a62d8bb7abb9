use std::fmt;
use std::str::FromStr;

/// Names a blob: its blake3 hash and its length in bytes.
///
/// The size travels with the hash so a reader knows how much to expect before
/// it reads (a decompressor can refuse to inflate past it, a restore can
/// pre-allocate) and so two blobs can never share a name by accident of
/// truncation. The text form is `<64 hex digits>-<size>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hash: [u8; 32],
    size: u64,
}

impl Digest {
    pub const fn new(hash: [u8; 32], size: u64) -> Self {
        Self { hash, size }
    }

    /// The digest of `data`, hashing it in one go.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash_hex(), self.size)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a digest's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("digest {0:?}: expected <64 hex digits>-<size>")]
    Shape(String),
    #[error("digest {0:?}: hash must be 64 lowercase hex digits")]
    Hash(String),
    #[error("digest {0:?}: size is not a non-negative integer")]
    Size(String),
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hash_hex, size) = s.split_once('-').ok_or_else(|| DigestParseError::Shape(s.to_owned()))?;
        if hash_hex.len() != 64 || !hash_hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestParseError::Hash(s.to_owned()));
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DigestParseError::Size(s.to_owned()));
        }
        let size = size.parse().map_err(|_| DigestParseError::Size(s.to_owned()))?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hash_hex, &mut hash).map_err(|_| DigestParseError::Hash(s.to_owned()))?;
        Ok(Self { hash, size })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental digest computation, for data that arrives in pieces.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: blake3::Hasher,
    size: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        // blake3's SIMD paths pay off above a few KiB; rayon is not worth a
        // dependency for the chunk sizes streams deliver.
        self.inner.update(data);
        self.size += data.len() as u64;
    }

    pub fn bytes_so_far(&self) -> u64 {
        self.size
    }

    pub fn finish(&self) -> Digest {
        Digest { hash: *self.inner.finalize().as_bytes(), size: self.size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.to_string().ends_with("-5"));
    }

    #[test]
    fn empty_blob_has_size_zero() {
        assert_eq!(Digest::of(b"").size(), 0);
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        assert!(matches!("abc".parse::<Digest>(), Err(DigestParseError::Shape(_))));
        assert!(matches!(format!("{}-1", "g".repeat(64)).parse::<Digest>(), Err(DigestParseError::Hash(_))));
        assert!(matches!(format!("{}-1", "A".repeat(64)).parse::<Digest>(), Err(DigestParseError::Hash(_))));
        assert!(matches!(format!("{}-x", "a".repeat(64)).parse::<Digest>(), Err(DigestParseError::Size(_))));
        assert!(matches!(format!("{}--1", "a".repeat(64)).parse::<Digest>(), Err(DigestParseError::Size(_))));
        assert!(matches!(format!("{}-99999999999999999999999", "a".repeat(64)).parse::<Digest>(), Err(DigestParseError::Size(_))));
    }

    #[test]
    fn incremental_hash_equals_one_shot() {
        let mut h = Hasher::new();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), Digest::of(b"hello"));
    }
}
