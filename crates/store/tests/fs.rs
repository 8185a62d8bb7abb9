//! The filesystem backend through the public interface.

mod common;

use bytes::Bytes;
use rbk_store::{FilesystemStore, StoreExt};

#[tokio::test]
async fn pages_through_every_blob_once_in_name_order_with_sizes_and_ages() {
    let dir = tempfile::tempdir().unwrap();
    let s = FilesystemStore::open(dir.path()).await.unwrap();
    let mut digests = Vec::new();
    for i in 0..25u32 {
        digests.push(s.put_bytes(Bytes::from(vec![7u8; i as usize])).await.unwrap());
    }
    digests.sort_by(rbk_store::listing_order);
    assert_eq!(common::page_through(&s, 4).await, digests);
}
