//! The version-skew window over real gRPC: callers say their rbk version in
//! the `user-agent` (`rbk_proto::version`); the coordinator serves its own
//! minor version and the one before, and refuses newer callers by name.

use rbk_proto::version::Version;

use crate::harness::*;

/// The user agent an rbk of `major.minor.patch` connects with.
fn rbk(major: u64, minor: u64, patch: u64) -> String {
    format!("rbk/{major}.{minor}.{patch} tonic/0.14")
}

/// One minor version before this build (this build's own when its minor is 0
/// and its major is not: there is no such older minor).
fn one_minor_older() -> String {
    let own = Version::own();
    assert!(own.minor > 0 || own.major == 0, "no minor version before {own} under the same major");
    if own.minor == 0 { rbk(0, 0, 0) } else { rbk(own.major, own.minor - 1, 7) }
}

#[tokio::test]
async fn a_client_and_a_worker_one_minor_version_older_run_a_build_to_the_end() {
    let farm = farm().await;
    let older = one_minor_older();
    let mut w = farm.worker_as("old-worker", &older).await;
    let mut client = farm.client_as(TENANT_A, &older).await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let a = w.assignment().await;
    w.succeed(&a, vec![]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");
}

#[tokio::test]
async fn a_client_newer_than_the_coordinator_is_refused_naming_both_versions() {
    let farm = farm().await;
    let own = Version::own();
    let mut client = farm.client_as(TENANT_A, &rbk(own.major, own.minor + 1, 0)).await;
    let status = match client.submit(vec![step("a", "k-a", &[])]).await {
        Err(s) => s,
        Ok(_) => panic!("a newer client was served"),
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let newer = format!("rbk {}.{}.0", own.major, own.minor + 1);
    assert!(status.message().contains(&newer) && status.message().contains(&format!("rbk {own}")), "{}", status.message());
}

#[tokio::test]
async fn a_worker_of_another_major_version_cannot_open_a_session() {
    let farm = farm().await;
    let own = Version::own();
    let register = rbk_proto::worker::Register { worker_id: "w".into(), platform: "linux/amd64".into(), ..Default::default() };
    let err = open_session_on(farm.channel_as(&rbk(own.major + 1, 0, 0)).await, WORKER, register).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn a_caller_that_names_no_rbk_version_is_served() {
    let farm = farm().await;
    let mut w = farm.worker_as("w", "grpcurl/1.8.9").await;
    let mut client = farm.client_as(TENANT_A, "grpcurl/1.8.9").await;
    let mut build = client.submit(vec![step("a", "k-a", &[])]).await.unwrap();
    let a = w.assignment().await;
    w.succeed(&a, vec![]).await;
    assert_eq!(final_state(&build.finish().await), "succeeded");
}
