//! Authentication against real docker-registry instances this test starts
//! privately: HTTP Basic (htpasswd) and bearer tokens (`auth: token`, the
//! registry verifying tokens from a token endpoint the test serves).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rbk_image::registry::DockerConfig;
use rbk_image::{Credentials, ImageError, ImageRef, OciLayout, PushOptions, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::PrivateRegistry;

const USER: &str = "builder";
const PASSWORD: &str = "s3cret-pw";

fn htpasswd_registry() -> PrivateRegistry {
    PrivateRegistry::start(|dir| {
        let line = format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap());
        std::fs::write(dir.join("htpasswd"), line).unwrap();
        format!("  htpasswd:\n    realm: rbk-test\n    path: {}", dir.join("htpasswd").display())
    })
}

fn busybox_layout() -> (tempfile::TempDir, OciLayout, rbk_image::Image) {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &rbk_testsupport::program("busybox"), "bb").unwrap();
    (dir, layout, image)
}

#[tokio::test]
async fn basic_auth_registry_takes_push_and_pull_with_the_password() {
    let reg = htpasswd_registry();
    let (_d, layout, image) = busybox_layout();
    let dest: ImageRef = format!("{}/private/bb:v1", reg.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap().with_credentials(&reg.addr, Credentials::Basic { username: USER.into(), password: PASSWORD.into() });
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let pulled = client.pull(&dest, &OciLayout::create(other.path()).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, image.manifest_descriptor.digest);
}

#[tokio::test]
async fn basic_auth_registry_refuses_anonymous_pull_with_a_clear_error() {
    let reg = htpasswd_registry();
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{}/private/bb:v1", reg.addr).parse().unwrap();
    let err = RegistryClient::new().unwrap().pull(&r, &OciLayout::create(dir.path()).unwrap()).await.unwrap_err();
    match err {
        ImageError::Auth { registry, reason } => {
            assert_eq!(registry, reg.addr);
            assert!(reason.contains("username and password"), "{reason}");
        }
        other => panic!("expected an auth error, got {other}"),
    }
}

#[tokio::test]
async fn basic_auth_registry_refuses_a_wrong_password() {
    let reg = htpasswd_registry();
    let (_d, layout, image) = busybox_layout();
    let dest: ImageRef = format!("{}/private/bb:v1", reg.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap().with_credentials(&reg.addr, Credentials::Basic { username: USER.into(), password: "wrong".into() });
    let err = client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap_err();
    assert!(matches!(&err, ImageError::Auth { reason, .. } if reason.contains("refused the credentials")), "{err}");
    assert!(!err.to_string().contains("wrong"), "the password must not appear in errors: {err}");
}

// ---- docker config files and credential helpers ----

/// A `docker-credential-test` helper script in `dir` that answers with the
/// registry's password and notes the server address it was asked about.
fn credential_helper(dir: &Path) {
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > {asked}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$(cat {asked})\"\n",
        asked = dir.join("asked").display()
    );
    let helper = dir.join("docker-credential-test");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_credential_helper_named_in_the_docker_config_supplies_the_password() {
    let reg = htpasswd_registry();
    let (_d, layout, image) = busybox_layout();
    let dir = tempfile::tempdir().unwrap();
    credential_helper(dir.path());
    let json = format!(r#"{{"credHelpers":{{"{}":"test"}}}}"#, reg.addr);
    let config = DockerConfig::parse(json.as_bytes(), &dir.path().join("config.json")).unwrap().with_helper_path(dir.path());
    let dest: ImageRef = format!("{}/private/bb:v1", reg.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap().with_docker_config(config);
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let pulled = client.pull(&dest, &OciLayout::create(other.path()).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, image.manifest_descriptor.digest);
    assert_eq!(std::fs::read_to_string(dir.path().join("asked")).unwrap(), reg.addr, "the helper is asked for the registry host on stdin");
}

#[tokio::test]
async fn an_auths_entry_in_the_docker_config_is_used_for_the_push() {
    let reg = htpasswd_registry();
    let (_d, layout, image) = busybox_layout();
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(dir.path().join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr)).unwrap();
    let config = DockerConfig::load(&dir.path().join("config.json")).unwrap();
    let dest: ImageRef = format!("{}/private/bb:v2", reg.addr).parse().unwrap();
    let report = RegistryClient::new().unwrap().with_docker_config(config).push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    assert_eq!(report.manifest_digest, Some(image.manifest_descriptor.digest));
}

#[tokio::test]
async fn a_credential_helper_that_fails_is_an_auth_error_naming_it() {
    let reg = htpasswd_registry();
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("docker-credential-broken");
    std::fs::write(&helper, "#!/bin/sh\necho 'keychain locked' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = DockerConfig::parse(br#"{"credsStore":"broken"}"#, &dir.path().join("config.json")).unwrap().with_helper_path(dir.path());
    let r: ImageRef = format!("{}/private/bb:v1", reg.addr).parse().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = RegistryClient::new().unwrap().with_docker_config(config).pull(&r, &OciLayout::create(out.path()).unwrap()).await.unwrap_err();
    let e = err.to_string();
    assert!(e.contains("docker-credential-broken") && e.contains("keychain locked"), "{e}");
}

// ---- bearer tokens ----

const SERVICE: &str = "rbk-test-registry";
const ISSUER: &str = "rbk-test-issuer";

/// A signing key (generated by ring) and its self-signed certificate (made
/// by openssl), which the registry trusts as its token root.
struct TokenKey {
    pair: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

fn token_key(dir: &Path) -> TokenKey {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    std::fs::write(dir.join("key.der"), pkcs8.as_ref()).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&["pkey", "-inform", "DER", "-in", "key.der", "-out", "key.pem"]);
    openssl(&["req", "-x509", "-key", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=rbk-test-token"]);
    openssl(&["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    TokenKey { pair, cert_der: std::fs::read(dir.join("cert.der")).unwrap() }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT granting `scopes` (`repository:<name>:<actions>`), as a token
/// server issues them.
fn sign_token(key: &TokenKey, scopes: &[String]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<_> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::engine::general_purpose::STANDARD.encode(&key.cert_der)]});
    let claims = serde_json::json!({"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", scopes.len()), "access": access});
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let sig = key.pair.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

/// What the token endpoint was asked.
#[derive(Default, Debug)]
struct TokenLog {
    requests: Vec<(String, Option<String>)>,
}

/// Serves `GET /token?service=..&scope=..` over plain HTTP/1.1: checks the
/// Basic credentials and answers `{"token": <JWT>}`, or 401.
async fn serve_tokens(listener: tokio::net::TcpListener, key: Arc<TokenKey>, log: Arc<Mutex<TokenLog>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { return };
        let (key, log) = (key.clone(), log.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let target = text.lines().next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
            let auth = text.lines().find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))).map(str::to_owned);
            let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
            let scopes: Vec<String> = url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).collect();
            let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
            log.lock().unwrap().requests.push((target.clone(), auth.clone()));
            let (status, body) = if auth.as_deref() == Some(want.as_str()) {
                ("200 OK", serde_json::json!({"token": sign_token(&key, &scopes), "expires_in": 300}).to_string())
            } else {
                ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned())
            };
            let resp = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

struct TokenSetup {
    registry: PrivateRegistry,
    log: Arc<Mutex<TokenLog>>,
    _dir: tempfile::TempDir,
}

/// A token registry; with `trusted_signer` false the endpoint signs with a
/// key the registry does not trust.
async fn token_registry(trusted_signer: bool) -> TokenSetup {
    let dir = tempfile::tempdir().unwrap();
    let trusted = token_key(dir.path());
    let key = Arc::new(if trusted_signer {
        trusted
    } else {
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        token_key(&other)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(TokenLog::default()));
    tokio::spawn(serve_tokens(listener, key, log.clone()));
    let cert = dir.path().join("cert.pem");
    let registry = PrivateRegistry::start(|_| {
        format!("  token:\n    realm: http://{token_addr}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}", cert.display())
    });
    TokenSetup { registry, log, _dir: dir }
}

#[tokio::test]
async fn bearer_token_registry_takes_push_and_pull_with_a_token_from_the_realm() {
    let t = token_registry(true).await;
    let (_d, layout, image) = busybox_layout();
    let dest: ImageRef = format!("{}/team/bb:v1", t.registry.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap().with_credentials(&t.registry.addr, Credentials::Basic { username: USER.into(), password: PASSWORD.into() });
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let pulled = client.pull(&dest, &OciLayout::create(other.path()).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, image.manifest_descriptor.digest);

    let log = t.log.lock().unwrap();
    assert!(!log.requests.is_empty(), "the token endpoint was never asked");
    let (first, auth) = &log.requests[0];
    assert!(first.contains(&format!("service={SERVICE}")) && first.contains("scope=repository%3Ateam%2Fbb%3Apull%2Cpush"), "{first}");
    assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));
    // One token per scope, reused for every request of the push.
    assert!(log.requests.len() <= 2, "tokens should be cached: {:?}", log.requests);
}

#[tokio::test]
async fn bearer_token_refused_by_the_realm_is_reported_as_an_auth_error() {
    let t = token_registry(true).await;
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{}/team/bb:v1", t.registry.addr).parse().unwrap();
    let err = RegistryClient::new().unwrap().pull(&r, &OciLayout::create(dir.path()).unwrap()).await.unwrap_err();
    match err {
        ImageError::Auth { reason, .. } => assert!(reason.contains("token server") && reason.contains("401"), "{reason}"),
        other => panic!("expected an auth error, got {other}"),
    }
}

#[tokio::test]
async fn bearer_token_signed_by_an_untrusted_key_is_refused_by_the_registry() {
    let t = token_registry(false).await;
    let dir = tempfile::tempdir().unwrap();
    let r: ImageRef = format!("{}/team/bb:v1", t.registry.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap().with_credentials(&t.registry.addr, Credentials::Basic { username: USER.into(), password: PASSWORD.into() });
    let err = client.pull(&r, &OciLayout::create(dir.path()).unwrap()).await.unwrap_err();
    assert!(matches!(&err, ImageError::Auth { reason, .. } if reason.contains("refused the credentials")), "{err}");
    assert_eq!(t.log.lock().unwrap().requests.len(), 1, "a token was issued and then refused by the registry");
}
