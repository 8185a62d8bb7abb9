use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::error::IoContext;
use crate::model::{Descriptor, Index, from_json, media_type, to_json};
use crate::{Image, ImageError, OciDigest, Platform, Result, Sha256Writer};

/// The annotation an OCI layout's `index.json` names images by.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A directory in OCI image layout format: `oci-layout`, `index.json` and
/// `blobs/sha256/<hex>`.
///
/// rbk's local image store. A blob becomes visible under its name only
/// after its bytes were hashed and matched (written to a temporary file in
/// the same directory, then renamed), so a reader never sees a partial or
/// wrong blob and two writers of the same blob cannot corrupt it.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `root`, creating the directory and its skeleton
    /// if absent.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256")).ctx(|| format!("creating OCI layout {}", root.display()))?;
        let layout = OciLayout { root };
        if !layout.root.join("oci-layout").exists() {
            write_atomic(&layout.root.join("oci-layout"), LAYOUT_FILE.as_bytes())?;
        }
        if !layout.root.join("index.json").exists() {
            write_atomic(&layout.root.join("index.json"), &to_json(&Index::empty()))?;
        }
        Ok(layout)
    }

    /// Opens an existing layout, refusing a directory that is not one.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let marker = root.join("oci-layout");
        let text = fs::read(&marker).ctx(|| format!("{} is not an OCI layout (reading oci-layout)", root.display()))?;
        let v: serde_json::Value = from_json(&text, &marker.display().to_string())?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
            return Err(ImageError::invalid(marker.display().to_string(), "no imageLayoutVersion"));
        }
        Ok(OciLayout { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &OciDigest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &OciDigest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a (small) blob into memory, checking its digest.
    pub fn read_blob(&self, digest: &OciDigest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).ctx(|| format!("reading blob {digest} from {}", path.display()))?;
        digest.verify(&OciDigest::of(&bytes), || format!("blob {}", path.display()))?;
        Ok(bytes)
    }

    /// Stores bytes held in memory and returns their digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<OciDigest> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).ctx(|| format!("writing a blob into {}", self.root.display()))?;
        Ok(w.commit(None)?.0)
    }

    /// A writer for a blob of not-yet-known digest; [`BlobWriter::commit`]
    /// names it.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("blobs/sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&dir)
            .ctx(|| format!("creating a temporary blob in {}", dir.display()))?;
        Ok(BlobWriter { layout: self.clone(), inner: Sha256Writer::new(io::BufWriter::with_capacity(1 << 20, tmp)) })
    }

    /// Copies the blob in file `path` into the layout, checking it against
    /// `expected` when given.
    pub fn add_blob_file(&self, path: &Path, expected: Option<(&OciDigest, u64)>) -> Result<(OciDigest, u64)> {
        let mut src = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        self.add_blob_reader(&mut src, expected, &path.display().to_string())
    }

    /// Copies a blob from a reader into the layout; `what` names the source
    /// in errors.
    pub fn add_blob_reader(&self, src: &mut dyn Read, expected: Option<(&OciDigest, u64)>, what: &str) -> Result<(OciDigest, u64)> {
        if let Some((d, _)) = expected
            && self.has_blob(d)
        {
            return Ok((*d, fs::metadata(self.blob_path(d)).ctx(|| format!("stat of blob {d}"))?.len()));
        }
        let mut w = self.blob_writer()?;
        io::copy(src, &mut w).ctx(|| format!("copying {what} into {}", self.root.display()))?;
        w.commit_as(expected, what)
    }

    /// Puts the content store's blob `blob` into the layout as the blob
    /// `expected` (digest, size), unless the layout has it. Streamed to a
    /// temporary file in the layout (a base layer may be hundreds of MB)
    /// and named only once its sha256 and size check out; `what` names the
    /// source in errors. The one way a layer travels from the store to a
    /// layout: the worker before a step, the client assembling the image.
    pub async fn add_blob_from_store(&self, store: &dyn rbk_store::Store, blob: rbk_store::Digest, expected: (&OciDigest, u64), what: &str) -> Result<()> {
        if self.has_blob(expected.0) {
            return Ok(());
        }
        let mut stream = store.get(blob, rbk_store::ByteRange::FULL).await?;
        let mut w = self.blob_writer()?;
        while let Some(chunk) = stream.next().await {
            w.write_all(&chunk?).ctx(|| format!("copying {what} into {}", self.root.display()))?;
        }
        w.commit_as(Some(expected), what)?;
        Ok(())
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        from_json(&bytes, &path.display().to_string())
    }

    /// Lists `desc` in `index.json`, under `ref_name` when given (replacing
    /// an earlier entry of that name, as a tag moves).
    pub fn add_manifest(&self, mut desc: Descriptor, ref_name: Option<&str>) -> Result<()> {
        let lock_path = self.root.join("index.json.lock");
        let lock = File::create(&lock_path).ctx(|| format!("creating {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ImageError::io(format!("locking {}", lock_path.display()), e.into()))?;
        let mut index = self.index()?;
        match ref_name {
            Some(name) => {
                desc.annotations.insert(REF_NAME.to_owned(), name.to_owned());
                index.manifests.retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
            }
            None => index.manifests.retain(|d| d.digest != desc.digest || d.annotations.contains_key(REF_NAME)),
        }
        index.manifests.push(desc);
        write_atomic(&self.root.join("index.json"), &to_json(&index))
    }

    /// The `index.json` entry named `ref_name`, or the only entry when
    /// `None`.
    pub fn find(&self, ref_name: Option<&str>) -> Result<Descriptor> {
        let index = self.index()?;
        let what = format!("{}/index.json", self.root.display());
        match ref_name {
            Some(name) => index
                .manifests
                .iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(name))
                .cloned()
                .ok_or_else(|| ImageError::invalid(what, format!("no image named {name:?}"))),
            None => match index.manifests.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ImageError::invalid(what, "holds no image")),
                many => Err(ImageError::invalid(
                    what,
                    format!(
                        "holds {} images; name one of: {}",
                        many.len(),
                        many.iter().map(|d| d.annotations.get(REF_NAME).cloned().unwrap_or_else(|| d.digest.to_string())).collect::<Vec<_>>().join(", ")
                    ),
                )),
            },
        }
    }

    /// Loads the image `desc` points at, following an index to the manifest
    /// for `platform`.
    pub fn load_image(&self, desc: &Descriptor, platform: &Platform) -> Result<Image> {
        let mut desc = desc.clone();
        if media_type::is_index(&desc.media_type) {
            let bytes = self.read_blob(&desc.digest)?;
            let index: Index = from_json(&bytes, &format!("index {}", desc.digest))?;
            desc = index.select(platform, &format!("index {}", desc.digest))?.clone();
        }
        if !media_type::is_manifest(&desc.media_type) {
            return Err(ImageError::invalid(format!("descriptor {}", desc.digest), format!("unsupported media type {:?}", desc.media_type)));
        }
        let manifest_bytes = self.read_blob(&desc.digest)?;
        Image::from_manifest_bytes(desc, &manifest_bytes, |d| self.read_blob(d))
    }
}

/// A blob being written into an [`OciLayout`]; dropped without
/// [`commit`](Self::commit), it leaves nothing behind.
pub struct BlobWriter {
    layout: OciLayout,
    inner: Sha256Writer<io::BufWriter<tempfile::NamedTempFile>>,
}

impl BlobWriter {
    /// Makes the blob visible under its digest, after checking it against
    /// `expected` (digest and size) when given.
    pub fn commit(self, expected: Option<(&OciDigest, u64)>) -> Result<(OciDigest, u64)> {
        let (digest, size, buf) = self.inner.finish();
        let tmp = buf.into_inner().map_err(|e| ImageError::io("flushing a blob", e.into_error()))?;
        if let Some((want, want_size)) = expected {
            if size != want_size {
                return Err(ImageError::SizeMismatch { what: format!("blob {want}"), expected: want_size, actual: size });
            }
            want.verify(&digest, || format!("blob {want}"))?;
        }
        let dest = self.layout.blob_path(&digest);
        tmp.persist(&dest).map_err(|e| ImageError::io(format!("storing blob {}", dest.display()), e.error))?;
        Ok((digest, size))
    }

    /// [`commit`](Self::commit), a mismatch naming `what` (the source).
    fn commit_as(self, expected: Option<(&OciDigest, u64)>, what: &str) -> Result<(OciDigest, u64)> {
        self.commit(expected).map_err(|e| match e {
            ImageError::DigestMismatch { expected, actual, .. } => ImageError::DigestMismatch { what: what.to_owned(), expected, actual },
            ImageError::SizeMismatch { expected, actual, .. } => ImageError::SizeMismatch { what: what.to_owned(), expected, actual },
            e => e,
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a small file so readers see the old or the new content, never a
/// mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx(|| format!("creating a temporary file beside {}", path.display()))?;
    tmp.write_all(bytes).ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path).map_err(|e| ImageError::io(format!("replacing {}", path.display()), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let want = OciDigest::of(b"right");
        let err = layout.add_blob_reader(&mut &b"wrong"[..], Some((&want, 5)), "test blob").unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!layout.has_blob(&want));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256")).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_store_blob_is_added_under_its_sha256_and_one_that_is_not_the_layer_is_refused() {
        use rbk_store::StoreExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let store = rbk_store::MemoryStore::default();
        let want = OciDigest::of(b"layer bytes");
        let wrong = store.put_bytes(bytes::Bytes::from_static(b"other bytes")).await.unwrap();
        let err = layout.add_blob_from_store(&store, wrong, (&want, 11), "store blob X").await.unwrap_err();
        assert!(matches!(&err, ImageError::DigestMismatch { what, .. } if what == "store blob X"), "{err}");
        assert!(!layout.has_blob(&want));
        let right = store.put_bytes(bytes::Bytes::from_static(b"layer bytes")).await.unwrap();
        layout.add_blob_from_store(&store, right, (&want, 11), "store blob Y").await.unwrap();
        assert_eq!(layout.read_blob(&want).unwrap(), b"layer bytes");
    }

    #[test]
    fn add_manifest_moves_a_ref_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let a = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"a");
        let b = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"b");
        layout.add_manifest(a, Some("latest")).unwrap();
        layout.add_manifest(b.clone(), Some("latest")).unwrap();
        assert_eq!(layout.index().unwrap().manifests.len(), 1);
        assert_eq!(layout.find(Some("latest")).unwrap().digest, b.digest);
        assert!(OciLayout::open(dir.path()).is_ok());
    }
}
