//! Blob ownership is replicated state (issue #15, item 4): after the
//! leader that took a tenant's upload dies, the next leader still lets
//! that tenant read the blob and still hides it from another tenant.

use rbk_client::{ClientTls, RemoteStore};
use rbk_store::{Store, StoreError, StoreExt};

use crate::harness::*;

const OTHER: &str = "raft-test-other-tenant-token-0005";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_upload_stays_readable_to_it_and_hidden_from_another_tenant_after_a_leader_change() {
    let mut c = Cluster::new(3, 1000);
    std::fs::write(
        c.tokens_path(),
        format!("[tenants]\n\"{TENANT}\" = \"team\"\n\"{OTHER}\" = \"other\"\n[workers]\n\"{WORKER}\" = \"pool\"\n[pools.pool]\ntenants = [\"team\"]\n"),
    )
    .unwrap();
    let (leader, old) = c.start_and_elect().await;
    let bytes = b"team's .env, uploaded through the first leader".to_vec();
    let d = RemoteStore::connect(&ClientTls::default(), &leader, TENANT).await.unwrap().put_bytes(bytes.clone().into()).await.unwrap();

    c.kill(old);
    let new_leader = c.leader_via(&c.apis()[0]).await;
    assert_ne!(new_leader, leader);

    let team = RemoteStore::connect(&ClientTls::default(), &new_leader, TENANT).await.unwrap();
    assert_eq!(team.get_bytes(d).await.expect("the tenant reads its upload through the new leader").to_vec(), bytes);
    let other = RemoteStore::connect(&ClientTls::default(), &new_leader, OTHER).await.unwrap();
    let refused = other.get_bytes(d).await.expect_err("another tenant read the blob");
    assert!(matches!(refused, StoreError::NotFound(n) if n == d), "{refused:?}");
    assert_eq!(other.find_missing(&[d]).await.unwrap(), [d]);
}
