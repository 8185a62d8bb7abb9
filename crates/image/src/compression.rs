use std::io::{self, BufRead, BufReader, Read};

use crate::media_type;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    /// The default for layers rbk writes: every registry and `docker load`
    /// understands it.
    #[default]
    Gzip,
    /// Smaller and several times faster to compress and decompress; needs
    /// containerd 1.5+ / Docker 23+ on the consumer's side.
    Zstd,
}

impl Compression {
    /// Recognises a compressed stream by its first bytes (magic numbers),
    /// because media types in the wild are not always truthful.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for a tar compressed this way.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => media_type::OCI_LAYER,
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let kind = Compression::detect(buffered.fill_buf()?);
    Ok(match kind {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_compression_is_recognised_and_undone() {
        let data = b"layer bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (blob, kind) in [(data.clone(), Compression::None), (gz, Compression::Gzip), (zs, Compression::Zstd)] {
            assert_eq!(Compression::detect(&blob), kind);
            let mut out = Vec::new();
            decompress(&blob[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{kind:?}");
        }
    }
}
