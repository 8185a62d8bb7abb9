use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::error::IoContext;
use crate::model::Descriptor;
use crate::{Compression, ImageError, OciDigest, OciLayout, Result, Sha256Writer};

/// How [`layer_from_upper`] writes a layer.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    pub compression: Compression,
    /// gzip level 0-9 (default 6, docker's) or zstd level 1-19 (default 3).
    pub level: Option<u32>,
    /// Clamp every mtime to at most this (seconds since the epoch) for
    /// reproducible layers; usually from `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// Directory for the compressed blob file (ideally on the filesystem of
    /// the layout it will be copied into).
    pub out_dir: PathBuf,
}

impl LayerOptions {
    /// gzip, no clamping, the blob written into `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        LayerOptions { compression: Compression::Gzip, level: None, source_date_epoch: None, out_dir: out_dir.into() }
    }

    /// Reads `SOURCE_DATE_EPOCH` from the environment (the reproducible
    /// builds convention); an unparsable value is an error, not ignored.
    pub fn with_source_date_epoch_from_env(mut self) -> Result<Self> {
        if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
            let t = v.trim().parse::<i64>().map_err(|_| ImageError::invalid("SOURCE_DATE_EPOCH", format!("{v:?} is not an integer")))?;
            self.source_date_epoch = Some(t);
        }
        Ok(self)
    }
}

/// A compressed layer blob on disk with every name it goes by.
///
/// Storing in rbk's content store is left to the caller
/// ([`Layer::put_into`]): the diff is CPU and disk work done under
/// `spawn_blocking`, the store is async network work, and callers want to
/// schedule the two separately (and skip the put when the store already
/// holds the blake3 digest).
#[derive(Debug)]
pub struct Layer {
    /// The compressed blob, a temporary file deleted when the `Layer` is
    /// dropped (copy it out with [`add_to_layout`](Self::add_to_layout)).
    pub file: tempfile::TempPath,
    /// sha256 of the compressed blob: the OCI layer digest.
    pub digest: OciDigest,
    /// sha256 of the uncompressed tar: the config's diff_id.
    pub diff_id: OciDigest,
    /// blake3 of the compressed blob: its name in rbk's content store.
    pub blake3: rbk_store::Digest,
    /// Bytes of the compressed blob.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: String,
}

impl Layer {
    /// The manifest entry for this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest, self.size)
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Copies the blob into `layout` (by its sha256), checking it on the way.
    pub fn add_to_layout(&self, layout: &OciLayout) -> Result<()> {
        layout.add_blob_file(&self.file, Some((&self.digest, self.size)))?;
        Ok(())
    }

    /// Stores the blob in rbk's content store under [`blake3`](Self::blake3);
    /// the store checks the bytes against the name.
    pub async fn put_into(&self, store: &dyn rbk_store::Store) -> Result<()> {
        let path = self.file.to_path_buf();
        let f = tokio::fs::File::open(&path).await.ctx(|| format!("opening layer {}", path.display()))?;
        let digest = self.blake3;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)
            .map(move |r| r.map_err(|e| rbk_store::StoreError::io(digest, format!("reading layer {}", path.display()), e)))
            .boxed();
        store.put(self.blake3, stream).await?;
        Ok(())
    }
}

/// Turns an overlayfs upper directory into an OCI layer: overlay whiteouts
/// (character device 0:0) become `.wh.<name>` entries and opaque directories
/// (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a
/// `.wh..wh..opq` entry; entries come in a fixed order (depth first, names
/// sorted bytewise), user and group names are left empty, and mtimes are
/// clamped to `source_date_epoch`, so the same tree always gives the same
/// bytes. Hard links within the tree stay hard links. The
/// `security.capability` and `user.*` extended attributes are recorded
/// (PAX `SCHILY.xattr.*`), so file capabilities survive; sockets are
/// skipped, as docker does.
///
/// The upper dir must come from a mount with `redirect_dir=off` and
/// `metacopy=off` (rbk's worker mounts it so): with those on, an upper dir
/// does not hold complete files.
pub fn layer_from_upper(upper: &Path, opts: &LayerOptions) -> Result<Layer> {
    let tmp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(&opts.out_dir)
        .ctx(|| format!("creating a layer file in {}", opts.out_dir.display()))?;
    let (file, path) = tmp.into_parts();
    let sink = HashingFile { inner: BufWriter::with_capacity(1 << 20, file), sha: Sha256Writer::new(io::sink()), blake: rbk_store::Hasher::new() };
    let compressor = Compressor::new(sink, opts.compression, opts.level).ctx(|| "starting the compressor".to_owned())?;
    let mut builder = tar::Builder::new(Sha256Writer::new(compressor));
    let mut w = Walker { upper, epoch: opts.source_date_epoch, links: HashMap::new() };
    w.dir(&mut builder, upper, "")?;
    let tar_sha = builder.into_inner().ctx(|| "finishing the layer tar".to_owned())?;
    let (diff_id, uncompressed_size, compressor) = tar_sha.finish();
    let mut sink = compressor.finish().ctx(|| "finishing compression".to_owned())?;
    sink.inner.flush().ctx(|| format!("writing {}", path.display()))?;
    let (digest, size, _) = sink.sha.finish();
    Ok(Layer {
        file: path,
        digest,
        diff_id,
        blake3: sink.blake.finish(),
        size,
        uncompressed_size,
        media_type: opts.compression.oci_layer_media_type().to_owned(),
    })
}

/// The end of the pipeline: the file, hashed both ways as it is written.
struct HashingFile {
    inner: BufWriter<File>,
    sha: Sha256Writer<io::Sink>,
    blake: rbk_store::Hasher,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.write_all(&buf[..n])?;
        self.blake.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(w: W, c: Compression, level: Option<u32>) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::None(w),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(w, flate2::Compression::new(level.unwrap_or(6).min(9)))),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, level.unwrap_or(3).clamp(1, 19) as i32)?),
        })
    }
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

struct Walker<'a> {
    upper: &'a Path,
    epoch: Option<i64>,
    /// First path seen for each (device, inode) with more than one link.
    links: HashMap<(u64, u64), String>,
}

impl Walker<'_> {
    fn mtime(&self, m: &fs::Metadata) -> u64 {
        let t = m.mtime().max(0);
        self.epoch.map_or(t, |e| t.min(e.max(0))) as u64
    }

    fn header(&self, kind: tar::EntryType, m: &fs::Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(self.mtime(m));
        h.set_size(0);
        h
    }

    fn dir<W: Write>(&mut self, b: &mut tar::Builder<W>, dir: &Path, prefix: &str) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("reading {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let name = name.to_str().ok_or_else(|| {
                ImageError::invalid(path.display().to_string(), "file name is not UTF-8 (tar paths must be)")
            })?;
            let rel = format!("{prefix}{name}");
            self.entry(b, &path, &rel, name)?;
        }
        Ok(())
    }

    fn entry<W: Write>(&mut self, b: &mut tar::Builder<W>, path: &Path, rel: &str, name: &str) -> Result<()> {
        let shown = || format!("{} (in {})", rel, self.upper.display());
        let m = fs::symlink_metadata(path).ctx(|| format!("stat of {}", shown()))?;
        let ft = m.file_type();
        let io_err = |e: io::Error| ImageError::io(format!("adding {} to the layer", shown()), e);
        if ft.is_char_device() && m.rdev() == 0 {
            let parent = rel.strip_suffix(name).unwrap_or("");
            let mut h = self.header(tar::EntryType::Regular, &m);
            h.set_mode(0);
            b.append_data(&mut h, format!("{parent}.wh.{name}"), io::empty()).map_err(io_err)?;
            return Ok(());
        }
        let xattrs = read_xattrs(path).ctx(|| format!("reading extended attributes of {}", shown()))?;
        let opaque = xattrs.iter().any(|(k, v)| (k == "trusted.overlay.opaque" || k == "user.overlay.opaque") && v == b"y");
        let keep: Vec<_> = xattrs.into_iter().filter(|(k, _)| k == "security.capability" || (k.starts_with("user.") && !k.starts_with("user.overlay."))).collect();
        if !keep.is_empty() {
            let pax: Vec<(String, Vec<u8>)> = keep.into_iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v)).collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).map_err(io_err)?;
        }
        if ft.is_dir() {
            let mut h = self.header(tar::EntryType::Directory, &m);
            b.append_data(&mut h, format!("{rel}/"), io::empty()).map_err(io_err)?;
            if opaque {
                let mut h = self.header(tar::EntryType::Regular, &m);
                h.set_mode(0);
                b.append_data(&mut h, format!("{rel}/.wh..wh..opq"), io::empty()).map_err(io_err)?;
            }
            return self.dir(b, path, &format!("{rel}/"));
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut h = self.header(tar::EntryType::Link, &m);
                    b.append_link(&mut h, rel, first).map_err(io_err)?;
                    return Ok(());
                }
                self.links.insert(key, rel.to_owned());
            }
            let f = open_nofollow(path).ctx(|| format!("opening {}", shown()))?;
            let mut h = self.header(tar::EntryType::Regular, &m);
            h.set_size(m.len());
            // A file that changes size while being read would corrupt the tar;
            // `take` plus the length check turn that into an error.
            let mut limited = io::Read::take(f, m.len());
            b.append_data(&mut h, rel, &mut limited).map_err(|e| {
                ImageError::io(format!("adding {} to the layer (did it change while being read?)", shown()), e)
            })?;
            return Ok(());
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).ctx(|| format!("reading symlink {}", shown()))?;
            let mut h = self.header(tar::EntryType::Symlink, &m);
            b.append_link(&mut h, rel, &target).map_err(io_err)?;
            return Ok(());
        }
        if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = self.header(kind, &m);
            let dev = m.rdev();
            h.set_device_major(rustix::fs::major(dev)).map_err(io_err)?;
            h.set_device_minor(rustix::fs::minor(dev)).map_err(io_err)?;
            b.append_data(&mut h, rel, io::empty()).map_err(io_err)?;
            return Ok(());
        }
        // Sockets cannot be carried in a tar; docker drops them too.
        tracing::debug!(path = %path.display(), "skipping socket in upper dir");
        Ok(())
    }
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().read(true).custom_flags(libc_o_nofollow()).open(path)
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Every extended attribute of `path` (not following a symlink), sorted by
/// name.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(vec![]);
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut list[..])?;
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut v = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut v[..])?;
        v.truncate(got);
        out.push((name.to_owned(), v));
    }
    out.sort();
    Ok(out)
}
