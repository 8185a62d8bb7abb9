//! The farm pulls base images and pushes results (issue #23): `rbk submit`
//! runs in a network namespace with a route to the coordinator only, so it
//! cannot reach the registry (a docker-registry with htpasswd auth this
//! test starts on the host's loopback). The build still starts `FROM` a
//! private image there and pushes its result there, with credentials from
//! the coordinator's per-tenant docker config, or sent by the client from
//! its own docker config and credential helper. A second tenant cannot use
//! the first one's private base through the farm's store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use rbk_image::{Credentials, History, ImageRef, LayerOptions, OciLayout, PushOptions, RegistryClient};
use rbk_store::{Digest, S3Config, S3Store, Secret, Store, StoreExt};
use rbk_testsupport::program;

use crate::harness::{Farm, NetNs, RBK, TENANT, TENANT_B};
use crate::submit::succeeded;

#[path = "../../../image/tests/common/mod.rs"]
mod image_common;
use image_common::PrivateRegistry;

const USER: &str = "builder";
/// Unusual enough that finding it anywhere means it leaked.
const PASSWORD: &str = "pw-7f3a-never-stored-9c1e";

/// A docker-registry with htpasswd auth on the host's loopback.
fn registry() -> PrivateRegistry {
    PrivateRegistry::start(|dir| {
        std::fs::write(dir.join("htpasswd"), format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap())).unwrap();
        format!("  htpasswd:\n    realm: rbk-test\n    path: {}", dir.join("htpasswd").display())
    })
}

fn with_password(addr: &str) -> RegistryClient {
    RegistryClient::new().unwrap().with_credentials(addr, Credentials::Basic { username: USER.into(), password: PASSWORD.into() })
}

/// Pushes a busybox image with one more layer (`/private.txt`) to the
/// registry as `private/base:1`; returns that layer's blake3.
async fn push_private_base(addr: &str) -> Digest {
    push_private_image(addr, "private/base:1", &format!("team's private base {}\n", std::process::id())).await
}

/// Pushes a busybox image with `/private.txt` = `content` to the registry
/// as `name`; returns that layer's blake3.
async fn push_private_image(addr: &str, name: &str, content: &str) -> Digest {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("oci")).unwrap();
    let mut image = rbk_image::testimage::busybox_image(&layout, &program("busybox"), "bb").unwrap();
    let upper = dir.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(upper.join("private.txt"), content).unwrap();
    let layer = rbk_image::layer_from_upper(&upper, &LayerOptions { source_date_epoch: Some(0), ..LayerOptions::new(&layout.root().join("blobs/sha256")) }).unwrap();
    layer.add_to_layout(&layout).unwrap();
    image.push_layer(&layer, History { created_by: Some("private layer".into()), ..Default::default() });
    let desc = image.save(&layout, Some("private")).unwrap();
    let dest: ImageRef = format!("{addr}/{name}").parse().unwrap();
    with_password(addr).push(&layout, &desc, &dest, &PushOptions::default()).await.unwrap();
    layer.blake3
}

fn context(addr: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {addr}/private/base:1\nRUN cat /private.txt > /copy.txt\n")).unwrap();
    dir
}

/// `rbk submit` as `token` inside `ns` (it reaches the coordinator over the
/// namespace's link, and nothing else), with `docker_config` as its
/// `$DOCKER_CONFIG` and `path` prepended to `$PATH`.
fn submit_in(farm: &Farm, ns: &NetNs, token: &str, ctx: &Path, docker_config: &Path, path: Option<&Path>, extra: &[&str]) -> Output {
    let port = farm.url.rsplit(':').next().unwrap();
    let mut search = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = path {
        search = std::env::join_paths(std::iter::once(p.to_path_buf()).chain(std::env::split_paths(&search))).unwrap();
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, RBK, "submit", "--progress=plain", "--coordinator"])
        .arg(format!("http://{}:{port}", ns.host_ip))
        .args(["--token", token, "--client-dir"])
        .arg(farm.dir.path().join(format!("client-{token}")))
        .args(extra)
        .arg(ctx)
        .env("DOCKER_CONFIG", docker_config)
        .env("PATH", search)
        .env_remove("RBK_TOKEN")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("running rbk submit in the namespace");
    out
}

/// Pulls `name` from the registry with the password: its manifest digest.
async fn pushed_digest(addr: &str, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let image = with_password(addr).pull(&name.parse().unwrap(), &OciLayout::create(dir.path()).unwrap()).await.unwrap();
    assert_eq!(image.layers().len(), 3, "busybox, the private layer and the RUN's");
    image.manifest_descriptor.digest.to_string()
}

/// The coordinator's docker config for tenant `team` (TENANT).
fn tenant_auth(farm: &Farm, addr: &str) {
    let dir = farm.dir.path().join("registry-auth");
    std::fs::create_dir_all(&dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(dir.join("team.json"), format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_route_to_the_registry_builds_from_a_private_base_and_pushes_with_the_tenants_farm_credentials() {
    let reg = registry();
    push_private_base(&reg.addr).await;
    let farm = Farm::start_for_netns_configured("[registries]\nauth_dir = \"registry-auth\"\n").await;
    tenant_auth(&farm, &reg.addr);
    let _a = farm.worker("a", &[]);
    let ns = NetNs::new(20);
    let ctx = context(&reg.addr);
    let no_docker_config = tempfile::tempdir().unwrap();
    let name = format!("{}/private/out:1", reg.addr);

    let out = submit_in(&farm, &ns, TENANT, ctx.path(), no_docker_config.path(), None, &["-t", &name, "--push"]);
    let (digest, stderr) = succeeded(&out);
    assert!(stderr.contains("pulled by the farm") && stderr.contains(&format!("pushing {name}")) && stderr.contains("from the farm"), "{stderr}");
    assert_eq!(pushed_digest(&reg.addr, &name).await, digest);

    // The client's own pulls would have failed (no route, no credentials):
    // proven by the same build with them.
    let own = submit_in(&farm, &ns, TENANT, ctx.path(), no_docker_config.path(), None, &["--client-registry-access"]);
    assert!(!own.status.success(), "the client reached the registry itself:\n{}", String::from_utf8_lossy(&own.stderr));
}

/// A `docker-credential-test` helper in a directory of its own that
/// answers with the registry's password.
fn credential_helper(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    std::fs::write(&helper, format!("#!/bin/sh\ncat >/dev/null\nprintf '{{\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n")).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let (p, t) = (e.path(), e.file_type().unwrap());
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                found.push(p);
            }
        }
    }
    found
}

/// Every blob of the farm's store (its S3 bucket) that holds `needle`.
async fn store_blobs_holding(farm: &Farm, needle: &[u8]) -> Vec<Digest> {
    let s3 = rbk_testsupport::s3();
    let mut config = S3Config::new(farm.bucket.clone());
    config.endpoint = Some(s3.endpoint.clone());
    config.region = Some(s3.region.clone());
    config.prefix = "farm".into();
    config.access_key_id = Some(Secret(s3.access_key.clone()));
    config.secret_access_key = Some(Secret(s3.secret_key.clone()));
    let store = S3Store::new(config).await.unwrap();
    let mut found = Vec::new();
    for d in store.list().await.unwrap() {
        let b = store.get_bytes(d).await.unwrap();
        if b.windows(needle.len()).any(|w| w == needle) {
            found.push(d);
        }
    }
    found
}

/// Redis keys (any, not only the farm's prefix) whose name or value holds
/// `needle`.
fn redis_keys_holding(url: &str, needle: &str) -> Vec<String> {
    let cli = |args: &[&str]| String::from_utf8_lossy(&Command::new("redis-cli").args(["-u", url]).args(args).output().expect("redis-cli").stdout).into_owned();
    cli(&["--scan"])
        .lines()
        .filter(|k| k.contains(needle) || cli(&["DUMP", k]).contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_a_client_sends_from_its_credential_helper_pull_and_push_and_are_never_kept() {
    let reg = registry();
    push_private_base(&reg.addr).await;
    let redis = std::env::var("RBK_TEST_REDIS_URL").expect("RBK_TEST_REDIS_URL is unset; start the test services");
    let farm = Farm::start_for_netns_configured(&format!("[redis]\nurl = \"{redis}\"\nprefix = \"rbk-thin-test:\"\n")).await;
    let _a = farm.worker("a", &[]);
    let ns = NetNs::new(21);
    let ctx = context(&reg.addr);
    let client = tempfile::tempdir().unwrap();
    let bin = credential_helper(client.path());
    std::fs::write(client.path().join("config.json"), format!(r#"{{"credHelpers":{{"{}":"test"}}}}"#, reg.addr)).unwrap();
    let name = format!("{}/private/out:2", reg.addr);

    let out = submit_in(&farm, &ns, TENANT, ctx.path(), client.path(), Some(&bin), &["-t", &name, "--push"]);
    let (digest, stderr) = succeeded(&out);
    assert!(stderr.contains(&format!("pushing {name}")), "{stderr}");
    assert_eq!(pushed_digest(&reg.addr, &name).await, digest);

    // Not in the coordinator's or the workers' files and logs, nor the
    // store, nor Redis.
    assert_eq!(files_holding(farm.dir.path(), PASSWORD.as_bytes()), Vec::<PathBuf>::new());
    assert_eq!(store_blobs_holding(&farm, PASSWORD.as_bytes()).await, Vec::<Digest>::new());
    assert_eq!(redis_keys_holding(&redis, PASSWORD), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_tenant_cannot_build_from_the_first_tenants_private_base_through_the_farm() {
    let reg = registry();
    let private_layer = push_private_base(&reg.addr).await;
    let farm = Farm::start_for_netns_configured("[registries]\nauth_dir = \"registry-auth\"\n").await;
    tenant_auth(&farm, &reg.addr);
    let _a = farm.worker("a", &[]);
    let ns = NetNs::new(22);
    let ctx = context(&reg.addr);
    let no_docker_config = tempfile::tempdir().unwrap();
    succeeded(&submit_in(&farm, &ns, TENANT, ctx.path(), no_docker_config.path(), None, &[]));

    // The layer is in the farm's store now, pulled for `team`.
    let b = submit_in(&farm, &ns, TENANT_B, ctx.path(), no_docker_config.path(), None, &[]);
    let stderr = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "tenant B built from A's private base:\n{stderr}");
    assert!(stderr.contains(&reg.addr) && stderr.contains("username and password"), "{stderr}");
    let store_b = rbk_client::RemoteStore::connect(&rbk_client::ClientTls::default(), &farm.url, TENANT_B).await.unwrap();
    assert_eq!(store_b.find_missing(&[private_layer]).await.unwrap(), vec![private_layer], "B sees A's pulled layer");
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_and_a_bind_mount_of_a_private_image_build_on_the_farm_with_no_registry_access_but_the_coordinators() {
    // The registry needs a password only the coordinator has (the tenant's
    // docker config): the workers have none, the client has no route.
    let reg = registry();
    push_private_base(&reg.addr).await;
    push_private_image(&reg.addr, "private/tools:1", "from the tools image\n").await;
    let farm = Farm::start_for_netns_configured("[registries]\nauth_dir = \"registry-auth\"\n").await;
    tenant_auth(&farm, &reg.addr);
    let _a = farm.worker("a", &[]);
    let ns = NetNs::new(23);
    let (base, tools) = (format!("{}/private/base:1", reg.addr), format!("{}/private/tools:1", reg.addr));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY --from={tools} /private.txt /copied.txt\n\
             RUN --mount=type=bind,from={tools},source=/private.txt,target=/m cat /m > /bound.txt\n"
        ),
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("image.tar");
    let no_docker_config = tempfile::tempdir().unwrap();
    let output = format!("type=oci,dest={}", dest.display());
    let (_, stderr) = succeeded(&submit_in(&farm, &ns, TENANT, ctx.path(), no_docker_config.path(), None, &["-o", &output]));
    assert!(stderr.contains(&format!("FROM {tools}@sha256:")), "the image source's own FROM line:\n{stderr}");

    let image = crate::oci_archive::file_in_image;
    assert_eq!(image(&dest, "copied.txt").as_deref(), Some("from the tools image\n"));
    assert_eq!(image(&dest, "bound.txt").as_deref(), Some("from the tools image\n"));
    assert_eq!(image(&dest, "m"), None, "the bind mount leaves nothing");
}
