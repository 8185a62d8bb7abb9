//! Every API checks the token; tenants never see each other's data.

use std::collections::BTreeMap;

use rbk_proto::build::{self as pb};
use rbk_proto::content::content_client::ContentClient;
use rbk_proto::worker::{self as pw};

use crate::harness::*;

fn register(id: &str) -> pw::Register {
    pw::Register { worker_id: id.into(), resources: Some(pw::Resources { max_parallel: 1, ..Default::default() }), ..Default::default() }
}

#[tokio::test]
async fn build_requests_without_a_valid_token_are_refused() {
    let farm = farm().await;
    let mut c = farm.client("").await;
    let err = c.inner.list(bearer(pb::ListRequest::default(), "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = c.inner.list(bearer(pb::ListRequest::default(), "not-a-token-of-this-farm")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.token = "not-a-token-of-this-farm".into();
    assert_eq!(c.submit(vec![step("a", "k", &[])]).await.err().unwrap().code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn worker_and_tenant_tokens_only_open_their_own_services() {
    let farm = farm().await;
    let mut c = farm.client(WORKER).await;
    let err = c.inner.list(bearer(pb::ListRequest::default(), WORKER)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = open_session(&farm, TENANT_A, register("sneaky")).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = open_session(&farm, "", register("anon")).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn content_requests_without_a_token_are_refused() {
    let farm = farm().await;
    let mut c = ContentClient::new(farm.channel().await);
    let req = rbk_proto::content::FindMissingRequest { digests: vec![] };
    assert_eq!(c.find_missing(bearer(req, "")).await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn another_tenant_can_neither_see_nor_touch_a_tenants_cache_or_builds() {
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    let mut a = farm.client(TENANT_A).await;
    let mut b = farm.client(TENANT_B).await;

    // Tenant A fills its cache "pip".
    let mut build_a = a.submit(vec![with_cache(step("s", "k-a", &[]), "pip", "shared")]).await.unwrap();
    let job = w.assignment().await;
    let commit = w.capture(&job.mounts[0], &BTreeMap::from([("a-secret.whl".into(), "A".into())])).await;
    w.succeed(&job, vec![commit]).await;
    assert_eq!(final_state(&build_a.finish().await), "succeeded");
    let heads_a = a.list_caches().await.unwrap();
    assert_eq!(heads_a.len(), 1);

    // Tenant B cannot list it, and its own "pip" starts empty in its namespace.
    assert!(b.list_caches().await.unwrap().is_empty());
    let mut build_b = b.submit(vec![with_cache(step("s", "k-b", &[]), "pip", "shared")]).await.unwrap();
    let job = w.assignment().await;
    assert_eq!(job.namespace, "team-b");
    assert_eq!(job.mounts[0].snapshot, "", "tenant B was handed tenant A's cache");
    assert!(w.restore(&job.mounts[0]).await.is_empty());
    // Whatever B writes lands in B's head, never A's.
    let commit = w.capture(&job.mounts[0], &BTreeMap::from([("poison".into(), "B".into())])).await;
    w.succeed(&job, vec![commit]).await;
    assert_eq!(final_state(&build_b.finish().await), "succeeded");
    assert_eq!(a.list_caches().await.unwrap(), heads_a, "tenant A's head changed");
    assert_eq!(b.list_caches().await.unwrap().len(), 1);

    // Nor can B read or cancel A's build.
    assert_eq!(b.status(&build_a.build_id).await.unwrap_err().code(), tonic::Code::NotFound);
    let cancel = pb::CancelRequest { build_id: build_a.build_id.clone() };
    assert_eq!(b.inner.cancel(bearer(cancel, TENANT_B)).await.unwrap_err().code(), tonic::Code::NotFound);
    // And A's action cache does not serve B: B's identical key ran (above).
}

#[tokio::test]
async fn a_revoked_tenant_token_is_refused_and_a_revoked_workers_session_ends_at_its_next_heartbeat() {
    use rbk_proto::worker::worker_message::Msg as Up;
    let farm = farm().await;
    let mut w = farm.worker("w1", 1).await;
    // The token file without tenant A and without the worker token.
    let file = rbk_coordinator::TokenFile::parse(&format!("[tenants]\n\"{TENANT_B}\" = \"team-b\"\n"), std::path::Path::new("tokens.toml")).unwrap();
    farm.coordinator.auth.install(&file).await.unwrap();
    let mut a = farm.client(TENANT_A).await;
    let refused = a.inner.list(bearer(pb::ListRequest::default(), TENANT_A)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    let mut b = farm.client(TENANT_B).await;
    b.inner.list(bearer(pb::ListRequest::default(), TENANT_B)).await.expect("tenant B is still in the file");
    w.send(Up::Heartbeat(pw::Heartbeat::default()));
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match w.down.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the session of a revoked worker token stayed open");
}
