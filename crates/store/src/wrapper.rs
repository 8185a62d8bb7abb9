//! What a wrapper store passes through to the store it wraps unchanged,
//! written once.

/// `impl Store for TYPE` from the methods the wrapper changes (the body);
/// the methods named in the list go to `self.FIELD` unchanged. With
/// `impl<S>`, the wrapper is generic over the store it wraps
/// (`impl<S: Store> Store for TYPE`).
///
/// ```ignore
/// rbk_store::forward_store!(impl<S> Counting<S> => inner [put, get, delete, list, list_page] {
///     async fn find_missing(&self, digests: &[Digest]) -> StoreResult<Vec<Digest>> { ... }
/// });
/// ```
///
/// A macro because the impl is `#[async_trait]`: the passed-through
/// methods must be in the item the attribute rewrites, so the list is
/// turned into methods (one rule per method, accumulated) before the
/// attribute sees the impl. The caller depends on `async-trait`.
#[macro_export]
macro_rules! forward_store {
    (@munch [$($gen:tt)*] [$ty:ty] $field:ident [$($acc:tt)*] []) => {
        #[async_trait::async_trait]
        impl $($gen)* $crate::Store for $ty {
            $($acc)*
        }
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [find_missing $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn find_missing(&self, digests: &[$crate::Digest]) -> $crate::StoreResult<Vec<$crate::Digest>> {
                self.$field.find_missing(digests).await
            }
        ] [$($rest)*]);
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [put $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn put(&self, digest: $crate::Digest, data: $crate::ByteStream) -> $crate::StoreResult<()> {
                self.$field.put(digest, data).await
            }
        ] [$($rest)*]);
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [get $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn get(&self, digest: $crate::Digest, range: $crate::ByteRange) -> $crate::StoreResult<$crate::ByteStream> {
                self.$field.get(digest, range).await
            }
        ] [$($rest)*]);
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [delete $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn delete(&self, digest: $crate::Digest) -> $crate::StoreResult<()> {
                self.$field.delete(digest).await
            }
        ] [$($rest)*]);
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [list $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn list(&self) -> $crate::StoreResult<Vec<$crate::Digest>> {
                self.$field.list().await
            }
        ] [$($rest)*]);
    };
    (@munch $gen:tt $ty:tt $field:ident [$($acc:tt)*] [list_page $($rest:ident)*]) => {
        $crate::forward_store!(@munch $gen $ty $field [$($acc)*
            async fn list_page(&self, after: Option<$crate::Digest>, limit: usize) -> $crate::StoreResult<$crate::ListPage> {
                self.$field.list_page(after, limit).await
            }
        ] [$($rest)*]);
    };
    (impl<$g:ident> $ty:ty => $field:ident [$($m:ident),* $(,)?] { $($own:tt)* }) => {
        $crate::forward_store!(@munch [<$g: $crate::Store>] [$ty] $field [$($own)*] [$($m)*]);
    };
    ($ty:ty => $field:ident [$($m:ident),* $(,)?] { $($own:tt)* }) => {
        $crate::forward_store!(@munch [] [$ty] $field [$($own)*] [$($m)*]);
    };
}
