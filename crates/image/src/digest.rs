use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::{ImageError, Result};

/// An OCI content digest, `sha256:<hex>`.
///
/// OCI names every blob by sha256; rbk's own store uses blake3
/// ([`rbk_store::Digest`]). Only sha256 is accepted: it is what every
/// registry and `docker load` produce, and refusing the rest keeps "is this
/// the blob I asked for" a single code path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OciDigest([u8; 32]);

impl OciDigest {
    pub const fn from_bytes(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// The digest of bytes in memory.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Hashes everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Self, u64)> {
        let mut w = Sha256Writer::new(io::sink());
        let n = io::copy(&mut reader, &mut w)?;
        let (d, _, _) = w.finish();
        Ok((d, n))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Fails with [`ImageError::DigestMismatch`] naming `what` unless
    /// `actual` is this digest.
    pub fn verify(&self, actual: &OciDigest, what: impl FnOnce() -> String) -> Result<()> {
        if self == actual {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch { what: what(), expected: self.to_string(), actual: actual.to_string() })
        }
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OciDigest({self})")
    }
}

impl FromStr for OciDigest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self> {
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| ImageError::DigestFormat(s.to_owned()))?;
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::DigestFormat(s.to_owned()));
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut h).map_err(|_| ImageError::DigestFormat(s.to_owned()))?;
        Ok(Self(h))
    }
}

impl serde::Serialize for OciDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OciDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (OciDigest, u64, W) {
        (OciDigest(self.hasher.finalize().into()), self.count, self.inner)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn finish(self) -> (OciDigest, u64) {
        (OciDigest(self.hasher.finalize().into()), self.count)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let d = OciDigest::of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.to_string().parse::<OciDigest>().unwrap(), d);
    }

    #[test]
    fn other_algorithms_and_bad_hex_are_refused() {
        assert!("sha512:00".parse::<OciDigest>().is_err());
        assert!(format!("sha256:{}", "A".repeat(64)).parse::<OciDigest>().is_err());
        assert!("sha256:abc".parse::<OciDigest>().is_err());
    }
}
