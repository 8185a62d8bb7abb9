//! What a wrapper store that changes only how blobs are written and read
//! (`put` and `get`: compression, verification) passes through to the
//! store it wraps, written once.

/// `impl Store for WRAPPER<S>` from the wrapper's own `put` and `get`
/// (given as the body); `find_missing`, `delete`, `list` and `list_page`
/// go to `self.inner` unchanged. A macro because the impl is
/// `#[async_trait]`: the passed-through methods must be in the item the
/// attribute rewrites.
macro_rules! store_changing_reads_and_writes {
    ($wrapper:ident { $($put_and_get:tt)* }) => {
        #[async_trait::async_trait]
        impl<S: $crate::Store> $crate::Store for $wrapper<S> {
            $($put_and_get)*

            async fn find_missing(&self, digests: &[$crate::Digest]) -> $crate::StoreResult<Vec<$crate::Digest>> {
                self.inner.find_missing(digests).await
            }

            async fn delete(&self, digest: $crate::Digest) -> $crate::StoreResult<()> {
                self.inner.delete(digest).await
            }

            async fn list(&self) -> $crate::StoreResult<Vec<$crate::Digest>> {
                self.inner.list().await
            }

            async fn list_page(&self, after: Option<$crate::Digest>, limit: usize) -> $crate::StoreResult<$crate::ListPage> {
                self.inner.list_page(after, limit).await
            }
        }
    };
}
