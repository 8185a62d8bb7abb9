//! Blobs scoped per tenant (issue #15, item 4), with a real `rbk
//! coordinator` and `rbk worker`s: through the Content service a tenant
//! reads and finds only the blobs it uploaded or its results and cache
//! heads name, and a worker only those of the tenants whose steps run on
//! it. Anything else looks exactly like a blob the store lacks.

use std::time::{Duration, Instant};

use rbk_client::RemoteStore;
use rbk_proto::build as pb;
use rbk_proto::build::build_event::Event;
use rbk_proto::content::content_client::ContentClient;
use rbk_proto::content::{FindMissingRequest, ReadRequest, WriteChunk};
use rbk_store::{Digest, StoreError, StoreExt};
use tonic::{Code, Request, Status};

use crate::harness::*;

async fn store_as(farm: &Farm, token: &str) -> RemoteStore {
    RemoteStore::connect(&rbk_client::ClientTls::default(), &farm.url, token).await.expect("content service")
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn content(farm: &Farm) -> ContentClient<tonic::transport::Channel> {
    ContentClient::connect(farm.url.clone()).await.expect("content service")
}

/// The status a read of `digest` by `token` ends with (the first message
/// of the stream, or the call's own refusal).
async fn read_status(farm: &Farm, token: &str, digest: &Digest) -> Result<Vec<u8>, Status> {
    let req = ReadRequest { digest: digest.to_string(), offset: 0, length: 0 };
    let mut stream = content(farm).await.read(with_token(req, token)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend(chunk.data);
    }
    Ok(out)
}

async fn find_missing(farm: &Farm, token: &str, digests: &[Digest]) -> Vec<String> {
    let req = FindMissingRequest { digests: digests.iter().map(ToString::to_string).collect() };
    content(farm).await.find_missing(with_token(req, token)).await.expect("find_missing").into_inner().missing
}

/// Tenant A's `.env`, uploaded through the Content service.
async fn a_uploads_a_secret_file(farm: &Farm) -> (Digest, &'static [u8]) {
    let bytes: &'static [u8] = b"AWS_SECRET_ACCESS_KEY=team-a-only\n";
    let d = store_as(farm, TENANT).await.put_bytes(bytes.to_vec().into()).await.expect("tenant A uploads");
    (d, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_b_reads_a_blob_tenant_a_uploaded_as_not_found_like_one_nobody_stored() {
    let farm = Farm::start().await;
    let (d, bytes) = a_uploads_a_secret_file(&farm).await;
    assert_eq!(read_status(&farm, TENANT, &d).await.expect("A reads its own blob"), bytes);

    let theirs = read_status(&farm, TENANT_B, &d).await.expect_err("tenant B read tenant A's blob");
    let nobodys = Digest::of(b"never stored by anyone");
    let absent = read_status(&farm, TENANT_B, &nobodys).await.expect_err("a blob nobody stored");
    assert_eq!(theirs.code(), Code::NotFound, "{theirs:?}");
    assert_eq!(theirs.message(), absent.message().replace(&nobodys.to_string(), &d.to_string()), "the answers tell the two apart");
    let via_store = store_as(&farm, TENANT_B).await.get_bytes(d).await.unwrap_err();
    assert!(matches!(via_store, StoreError::NotFound(n) if n == d), "{via_store:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn find_missing_reports_another_tenants_blob_missing() {
    let farm = Farm::start().await;
    let (d, _) = a_uploads_a_secret_file(&farm).await;
    assert_eq!(find_missing(&farm, TENANT, &[d]).await, Vec::<String>::new(), "A has it");
    assert_eq!(find_missing(&farm, TENANT_B, &[d]).await, [d.to_string()], "B learns nothing of A's content");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_tenant_b_uploads_the_same_bytes_it_reads_them_and_a_still_does() {
    let farm = Farm::start().await;
    let (d, bytes) = a_uploads_a_secret_file(&farm).await;
    let b = store_as(&farm, TENANT_B).await;
    assert_eq!(b.put_bytes(bytes.to_vec().into()).await.expect("B uploads the same bytes"), d);
    assert_eq!(read_status(&farm, TENANT_B, &d).await.expect("B reads what it uploaded"), bytes);
    assert_eq!(find_missing(&farm, TENANT_B, &[d]).await, Vec::<String>::new());
    assert_eq!(read_status(&farm, TENANT, &d).await.expect("A still reads it"), bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploading_other_bytes_under_a_stored_digest_is_refused_and_grants_nothing() {
    let farm = Farm::start().await;
    let (d, bytes) = a_uploads_a_secret_file(&farm).await;
    // Same length, other bytes: a guess at A's secret that is wrong.
    let guess = vec![b'x'; bytes.len()];
    let chunk = WriteChunk { digest: d.to_string(), data: guess };
    let refused = content(&farm).await.write(with_token(futures::stream::iter([chunk]), TENANT_B)).await.expect_err("a wrong upload was taken");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(read_status(&farm, TENANT_B, &d).await.expect_err("B reads A's blob").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_token_without_an_assignment_of_tenant_a_cannot_read_or_find_its_blob() {
    let farm = Farm::start().await;
    let (d, _) = a_uploads_a_secret_file(&farm).await;
    // A worker's own token, the shared pool token, and a pool that does
    // not serve tenant A: none runs a step of A now.
    for token in [worker_token("a"), WORKER_TOKEN.to_string(), ROGUE_TOKEN.to_string()] {
        let refused = read_status(&farm, &token, &d).await.expect_err("a worker read A's blob");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert_eq!(find_missing(&farm, &token, &[d]).await, [d.to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_reads_tenant_as_blob_while_a_step_of_a_runs_on_it_and_not_after() {
    let farm = Farm::start().await;
    let (d, bytes) = a_uploads_a_secret_file(&farm).await;
    let _a = farm.worker("a", &[]);
    let token = worker_token("a");
    let mut stream = farm.submit(vec![farm.run("s", "k-slow", "sleep 4; echo done", None, Some("a"))], Default::default()).await;
    let deadline = Instant::now() + WAIT;
    while read_status(&farm, &token, &d).await.ok().as_deref() != Some(bytes) {
        assert!(Instant::now() < deadline, "worker a never could read A's blob while running A's step");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let m = tokio::time::timeout(WAIT, stream.message()).await.expect("build did not finish").unwrap().expect("stream ended");
        if matches!(m.event, Some(Event::BuildFinished(_))) {
            break;
        }
    }
    assert_eq!(read_status(&farm, &token, &d).await.expect_err("read after the step").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_as_cached_steps_and_cache_heads_stay_readable_to_a_and_not_to_b() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    let step = || farm.run("s", "k-cached", "echo hello > /cache/f", Some(("c1", "shared")), None);
    let first = farm.build(vec![step()]).await;
    assert_eq!(final_state(&first), "succeeded", "{first:#?}");
    let again = farm.build(vec![step()]).await;
    assert!(again.iter().any(|e| matches!(e, Event::Cached(_))), "A's unchanged step was not cached: {again:#?}");
    // The head the step committed: A restores it, B sees no such blob.
    assert_eq!(farm.wait_cache_files("c1").await.get("f").map(String::as_str), Some("hello\n"));
    let heads = farm.client().await.list_caches(bearer(pb::ListCachesRequest {})).await.unwrap().into_inner().heads;
    let snapshot: Digest = heads.iter().find(|h| h.id == "c1").expect("head c1").snapshot.parse().unwrap();
    assert_eq!(read_status(&farm, TENANT_B, &snapshot).await.expect_err("B read A's cache head").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn find_missing_refuses_more_digests_than_its_cap_naming_the_cap() {
    let farm = Farm::start().await;
    let many: Vec<Digest> = (0..10_001u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
    let req = FindMissingRequest { digests: many.iter().map(ToString::to_string).collect() };
    let refused = content(&farm).await.find_missing(with_token(req, TENANT)).await.expect_err("an oversized batch was answered");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("more than the limit of 10000 per call"), "{refused:?}");
}

/// Submits `steps` as `token` and collects the events until the build ends.
async fn build_as(farm: &Farm, token: &str, steps: Vec<pb::StepNode>) -> Vec<Event> {
    let req = pb::SubmitRequest { options: Some(Default::default()), context_digest: String::new(), steps, secrets: Default::default() };
    let mut stream = farm.client().await.submit(with_token(req, token)).await.expect("submit").into_inner();
    let mut events = Vec::new();
    loop {
        let m = tokio::time::timeout(WAIT, stream.message()).await.expect("build did not finish").unwrap().expect("stream ended");
        let done = matches!(m.event, Some(Event::BuildFinished(_)));
        events.extend(m.event);
        if done {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_of_tenant_b_naming_tenant_as_base_layer_cannot_read_it_until_b_uploads_it() {
    let farm = Farm::start().await;
    let _a = farm.worker("a", &[]);
    // The farm's busybox base layer was uploaded by tenant A only.
    let base: Digest = farm.base.blake3.parse().unwrap();
    let refused = build_as(&farm, TENANT_B, vec![farm.run("s", "k-b", "echo b", None, None)]).await;
    assert_eq!(final_state(&refused), "failed", "{refused:#?}");
    let message = refused.iter().find_map(|e| if let Event::Failed(f) = e { Some(f.message.clone()) } else { None }).unwrap_or_default();
    assert!(message.contains(&format!("blob {base} not found")), "{refused:#?}");

    let bytes = store_as(&farm, TENANT).await.get_bytes(base).await.expect("A reads its base layer");
    assert_eq!(store_as(&farm, TENANT_B).await.put_bytes(bytes).await.unwrap(), base);
    let built = build_as(&farm, TENANT_B, vec![farm.run("s", "k-b", "echo b", None, None)]).await;
    assert_eq!(final_state(&built), "succeeded", "{built:#?}");
}
