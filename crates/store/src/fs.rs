use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{ByteRange, ByteStream, Digest, ListPage, ListedBlob, Store, StoreError, StoreResult};

/// Blobs as files under a local directory: the embedded default, and a
/// worker's local cache.
///
/// Layout: `ROOT/blobs/ab/cd/<digest>` (two levels of sharding keep
/// directories small at millions of blobs) and `ROOT/tmp/` for writes in
/// progress. A write goes to a temporary file, is synced, and is renamed into
/// place, so a crash never leaves a partial blob under a real name. The
/// directories the rename touched are then synced too: until they are, the
/// new name lives only in the page cache, and a power loss after `put`
/// returned could forget a blob the caller has already recorded (in a
/// manifest, a cache head) as stored.
///
/// This store does not check what it reads against the digest: stacks built
/// from configuration (see `build_store`) always put a `VerifyingStore` on
/// top, which does.
#[derive(Debug, Clone)]
pub struct FilesystemStore {
    root: PathBuf,
}

const READ_CHUNK: usize = 256 * 1024;

impl FilesystemStore {
    /// Opens (creating if needed) a store rooted at `root`. Leftover
    /// temporary files from an earlier crash are removed.
    pub async fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        let _ = fs::remove_dir_all(&tmp).await;
        for dir in [root.join("blobs"), tmp] {
            fs::create_dir_all(&dir)
                .await
                .map_err(|e| StoreError::io(None, format!("creating {}", dir.display()), e))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives; callers outside this file only use it for
    /// diagnostics and tests that corrupt blobs on purpose.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hash_hex();
        self.root.join("blobs").join(&hex[0..2]).join(&hex[2..4]).join(digest.to_string())
    }

    async fn write_temp(&self, digest: &Digest, mut data: ByteStream) -> StoreResult<PathBuf> {
        let tmp = self.root.join("tmp").join(format!("{}.{:016x}", digest, rand::random::<u64>()));
        let io = |what: &str, e| StoreError::io(*digest, format!("{what} {}", tmp.display()), e);
        let mut file = fs::File::create(&tmp).await.map_err(|e| io("creating", e))?;
        let result: StoreResult<()> = async {
            while let Some(chunk) = data.next().await {
                file.write_all(&chunk?).await.map_err(|e| io("writing", e))?;
            }
            file.sync_all().await.map_err(|e| io("syncing", e))?;
            Ok(())
        }
        .await;
        drop(file);
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for FilesystemStore {
    async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> {
        let mut missing = Vec::new();
        for d in digests {
            match fs::metadata(self.blob_path(d)).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => missing.push(*d),
                Err(e) => return Err(StoreError::io(*d, "checking existence", e)),
            }
        }
        Ok(missing)
    }

    async fn put(&self, digest: Digest, data: ByteStream) -> StoreResult<()> {
        let tmp = self.write_temp(&digest, data).await?;
        let dest = self.blob_path(&digest);
        let parent = dest.parent().expect("blob path has a parent");
        let blobs = self.root.join("blobs");
        let result = async {
            let created = create_shard_dirs(&blobs, parent).await?;
            fs::rename(&tmp, &dest).await?;
            // The new name, then any shard directory made for it, in the
            // directory that holds it: children before parents, so a
            // directory entry that is durable never points at one that is not.
            sync_dir(parent).await?;
            for dir in created.iter().rev() {
                sync_dir(dir.parent().expect("shard directories live under blobs/")).await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp).await;
            return Err(StoreError::io(digest, format!("moving into {}", dest.display()), e));
        }
        Ok(())
    }

    async fn get(&self, digest: Digest, range: ByteRange) -> StoreResult<ByteStream> {
        let path = self.blob_path(&digest);
        let mut file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound(digest)),
            Err(e) => return Err(StoreError::io(digest, format!("opening {}", path.display()), e)),
        };
        let len = file.metadata().await.map_err(|e| StoreError::io(digest, "reading metadata", e))?.len();
        let (start, end) = range.resolve(&digest, len)?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| StoreError::io(digest, "seeking", e))?;
        }
        let reader = tokio_util::io::ReaderStream::with_capacity(file.take(end - start), READ_CHUNK);
        Ok(reader.map(move |r| r.map_err(|e| StoreError::io(digest, "reading", e))).boxed())
    }

    async fn delete(&self, digest: Digest) -> StoreResult<()> {
        match fs::remove_file(self.blob_path(&digest)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(digest, "deleting", e)),
        }
    }

    async fn list(&self) -> StoreResult<Vec<Digest>> {
        let blobs = self.root.join("blobs");
        tokio::task::spawn_blocking(move || list_blobs(&blobs))
            .await
            .map_err(|e| StoreError::io(None, "listing blobs", std::io::Error::other(e)))?
    }

    async fn list_page(&self, after: Option<Digest>, limit: usize) -> StoreResult<ListPage> {
        let blobs = self.root.join("blobs");
        tokio::task::spawn_blocking(move || list_blobs_page(&blobs, after, limit.max(1)))
            .await
            .map_err(|e| StoreError::io(None, "listing blobs", std::io::Error::other(e)))?
    }
}

/// Directory entries' names, sorted; a directory gone meanwhile is empty.
fn sorted_names(dir: &Path) -> StoreResult<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(None, format!("listing {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(None, format!("listing {}", dir.display()), e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// One page in name order. The shard directories are prefixes of the name,
/// so walking them in order walks the names in order, and shards before
/// `after`'s are skipped without being read.
fn list_blobs_page(blobs: &Path, after: Option<Digest>, limit: usize) -> StoreResult<ListPage> {
    let after_name = after.map(|d| d.to_string());
    let after_shards = after_name.as_deref().map(|n| (n[0..2].to_owned(), n[2..4].to_owned()));
    let mut page = ListPage::default();
    for s1 in sorted_names(blobs)? {
        if after_shards.as_ref().is_some_and(|(a1, _)| s1 < *a1) {
            continue;
        }
        let dir1 = blobs.join(&s1);
        for s2 in sorted_names(&dir1)? {
            if after_shards.as_ref().is_some_and(|(a1, a2)| (&s1, &s2) < (a1, a2)) {
                continue;
            }
            let dir2 = dir1.join(&s2);
            for name in sorted_names(&dir2)? {
                if after_name.as_ref().is_some_and(|a| name <= *a) {
                    continue;
                }
                // Anything that does not parse as a digest is not ours.
                let Ok(digest) = name.parse::<Digest>() else { continue };
                let md = match std::fs::metadata(dir2.join(&name)) {
                    Ok(md) => md,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(digest, "reading metadata", e)),
                };
                page.blobs.push(ListedBlob { digest, stored_bytes: md.len(), modified: md.modified().ok() });
                if page.blobs.len() == limit {
                    page.next_after = Some(digest);
                    return Ok(page);
                }
            }
        }
    }
    Ok(page)
}

/// Creates the shard directories between `blobs` and `parent` that do not
/// exist yet and returns them, outermost first.
async fn create_shard_dirs(blobs: &Path, parent: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut dir = parent;
    while dir != blobs && fs::metadata(dir).await.is_err() {
        missing.push(dir.to_path_buf());
        dir = dir.parent().expect("shard directories live under blobs/");
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d).await {
            Ok(()) => {}
            // Another put made it first and may not have synced it yet:
            // it is synced below all the same.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// Makes a directory's entries durable (fsync on the directory itself).
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

fn list_blobs(blobs: &Path) -> StoreResult<Vec<Digest>> {
    let io = |p: &Path, e| StoreError::io(None, format!("listing {}", p.display()), e);
    let mut out = Vec::new();
    for shard1 in std::fs::read_dir(blobs).map_err(|e| io(blobs, e))? {
        let shard1 = shard1.map_err(|e| io(blobs, e))?.path();
        for shard2 in std::fs::read_dir(&shard1).map_err(|e| io(&shard1, e))? {
            let shard2 = shard2.map_err(|e| io(&shard1, e))?.path();
            for entry in std::fs::read_dir(&shard2).map_err(|e| io(&shard2, e))? {
                let entry = entry.map_err(|e| io(&shard2, e))?;
                // Anything that does not parse as a digest is not ours; skip it.
                if let Some(d) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StoreExt, stream_from_bytes};
    use bytes::Bytes;

    async fn store() -> (tempfile::TempDir, FilesystemStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = FilesystemStore::open(dir.path()).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn round_trips_and_lists_a_blob() {
        let (_d, s) = store().await;
        let digest = s.put_bytes(Bytes::from_static(b"hello world")).await.unwrap();
        assert_eq!(s.get_bytes(digest).await.unwrap(), &b"hello world"[..]);
        assert_eq!(s.list().await.unwrap(), vec![digest]);
        assert!(s.find_missing(&[digest]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn serves_byte_ranges() {
        let (_d, s) = store().await;
        let digest = s.put_bytes(Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(s.get_range_bytes(digest, ByteRange::new(3, 4)).await.unwrap(), &b"3456"[..]);
        assert_eq!(s.get_range_bytes(digest, ByteRange { offset: 8, length: None }).await.unwrap(), &b"89"[..]);
        assert!(matches!(s.get(digest, ByteRange::new(8, 5)).await, Err(StoreError::InvalidRange { .. })));
    }

    #[tokio::test]
    async fn a_failed_write_leaves_nothing_visible() {
        let (_d, s) = store().await;
        let digest = Digest::of(b"never");
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"nev")),
            Err(StoreError::Backend { backend: "test", message: "client went away".into(), retryable: false }),
        ])
        .boxed();
        assert!(s.put(digest, failing).await.is_err());
        assert_eq!(s.find_missing(&[digest]).await.unwrap(), vec![digest]);
        assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_write_cut_off_by_a_crash_is_never_visible_and_is_cleaned_up_on_reopen() {
        let (dir, s) = store().await;
        let digest = Digest::of(b"0123456789");
        // The writer stalls after half the bytes; dropping the put mid-way
        // is what a crash looks like from the store's side.
        let (half_written, wait) = tokio::sync::oneshot::channel::<()>();
        let stalled = futures::stream::iter(vec![Ok(Bytes::from_static(b"01234"))])
            .chain(futures::stream::once(async move {
                let _ = half_written.send(());
                futures::future::pending::<StoreResult<Bytes>>().await
            }))
            .boxed();
        let writer = tokio::spawn({
            let s = s.clone();
            async move { s.put(digest, stalled).await }
        });
        wait.await.unwrap();
        writer.abort();
        assert!(writer.await.unwrap_err().is_cancelled());
        assert_eq!(s.find_missing(&[digest]).await.unwrap(), vec![digest]);
        assert!(s.list().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 1, "the partial write stays in tmp/");
        let reopened = FilesystemStore::open(dir.path()).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(reopened.find_missing(&[digest]).await.unwrap(), vec![digest]);
    }

    #[tokio::test]
    async fn concurrent_puts_into_a_new_shard_all_land() {
        let (_d, s) = store().await;
        let blobs: Vec<Bytes> = (0..64u32).map(|i| Bytes::from(i.to_le_bytes().to_vec())).collect();
        let puts = blobs.iter().cloned().map(|b| {
            let s = s.clone();
            tokio::spawn(async move { s.put_bytes(b).await })
        });
        let digests: Vec<Digest> = futures::future::join_all(puts).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(s.find_missing(&digests).await.unwrap().is_empty());
        for (d, b) in digests.iter().zip(&blobs) {
            assert_eq!(&s.get_bytes(*d).await.unwrap(), b);
        }
    }

    #[tokio::test]
    async fn missing_blob_is_not_found_and_delete_is_idempotent() {
        let (_d, s) = store().await;
        let digest = Digest::of(b"absent");
        assert!(matches!(s.get(digest, ByteRange::FULL).await, Err(StoreError::NotFound(d)) if d == digest));
        s.delete(digest).await.unwrap();
        let put = s.put(digest, stream_from_bytes(Bytes::from_static(b"absent")));
        put.await.unwrap();
        s.delete(digest).await.unwrap();
        assert_eq!(s.find_missing(&[digest]).await.unwrap(), vec![digest]);
    }
}
