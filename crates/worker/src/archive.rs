//! Local archives for `ADD`: recognised by content, never by name, as
//! BuildKit does (`ADD app.tgz` and `ADD app.bin` are treated alike): a
//! tar, plain or compressed with gzip, bzip2, xz or zstd. Anything else is
//! copied as a file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{IoContext, Result};

/// How an archive's bytes are compressed, by their magic numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl ArchiveCompression {
    pub fn detect(head: &[u8]) -> ArchiveCompression {
        if head.starts_with(&[0x1f, 0x8b]) {
            ArchiveCompression::Gzip
        } else if head.starts_with(b"BZh") {
            ArchiveCompression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            ArchiveCompression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            ArchiveCompression::Zstd
        } else {
            ArchiveCompression::None
        }
    }
}

/// `path`'s bytes, decompressed as their first bytes say.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = r.fill_buf().ctx(|| format!("reading {}", path.display()))?;
    Ok(match ArchiveCompression::detect(head) {
        ArchiveCompression::None => Box::new(r),
        ArchiveCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        ArchiveCompression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        ArchiveCompression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r)),
        ArchiveCompression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).ctx(|| format!("starting zstd for {}", path.display()))?)
        }
    })
}

/// Whether `path` is a tar archive once decompressed: its first header
/// carries the `ustar` magic (POSIX and GNU tars both do).
pub fn is_tar(path: &Path) -> Result<bool> {
    let mut head = [0u8; 512];
    let mut r = open_decompressed(path)?;
    // A file that only looks compressed (a stray magic number) is not an
    // archive: a decoding error means "copy it as it is".
    let n = read_full(&mut r, &mut head).unwrap_or(0);
    Ok(n >= 262 && &head[257..262] == b"ustar")
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn compressed(kind: ArchiveCompression, data: &[u8]) -> Vec<u8> {
        match kind {
            ArchiveCompression::None => data.to_vec(),
            ArchiveCompression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveCompression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveCompression::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveCompression::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn a_tar_in_every_compression_is_recognised_by_content_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [ArchiveCompression::None, ArchiveCompression::Gzip, ArchiveCompression::Bzip2, ArchiveCompression::Xz, ArchiveCompression::Zstd] {
            let path = dir.path().join(format!("{kind:?}.bin"));
            std::fs::write(&path, compressed(kind, &tar_bytes())).unwrap();
            assert_eq!(ArchiveCompression::detect(&std::fs::read(&path).unwrap()), kind);
            assert!(is_tar(&path).unwrap(), "{kind:?}");
            let mut out = Vec::new();
            open_decompressed(&path).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar_bytes(), "{kind:?}");
        }
    }

    #[test]
    fn compressed_bytes_that_are_not_a_tar_are_not_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt.xz");
        std::fs::write(&path, compressed(ArchiveCompression::Xz, b"just some text")).unwrap();
        assert!(!is_tar(&path).unwrap());
        let fake = dir.path().join("fake.gz");
        std::fs::write(&fake, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
        assert!(!is_tar(&fake).unwrap(), "a broken stream is copied, not an error");
    }
}
