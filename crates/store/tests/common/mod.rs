//! Helpers shared by the store's integration tests: fresh buckets on the
//! real S3 server, private servers a test may stop, and test data.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rbk_store::{Digest, S3Config, Secret, Store};

/// A configuration for a new, empty bucket on the shared S3 server, so tests
/// never see each other's objects.
pub async fn fresh_bucket() -> S3Config {
    let s3 = rbk_testsupport::s3();
    bucket_on(&s3.endpoint, &s3.region, &s3.access_key, &s3.secret_key).await
}

pub async fn bucket_on(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> S3Config {
    let mut config = S3Config::new(format!("rbk-test-{:016x}", rand::random::<u64>()));
    config.endpoint = Some(endpoint.to_owned());
    config.region = Some(region.to_owned());
    config.access_key_id = Some(Secret(access_key.to_owned()));
    config.secret_access_key = Some(Secret(secret_key.to_owned()));
    config.prefix = "test".into();
    let client = config.sdk_client().await.unwrap();
    client.create_bucket().bucket(&config.bucket).send().await.unwrap();
    config
}

/// Half-compressible bytes, like real build caches: runs of text-like data
/// interleaved with random bytes.
pub fn data(len: usize, seed: u64) -> Bytes {
    rbk_testsupport::half_compressible(len, seed).into()
}

/// A server process this test owns; killed when dropped.
pub struct Private {
    pub child: Option<Child>,
    pub port: u16,
    program: std::path::PathBuf,
    args: Vec<String>,
    service: &'static str,
}

impl Private {
    pub fn start(service: &'static str, program: std::path::PathBuf, args: Vec<String>, port: u16) -> Self {
        let mut p = Self { child: None, port, program, args, service };
        p.restart();
        p
    }

    /// A private moto server and a config for a fresh bucket on it (with
    /// the test credentials), for tests that stop or freeze the server.
    pub async fn moto_bucket() -> (Self, String, S3Config) {
        let s3 = rbk_testsupport::s3();
        let server = Self::moto();
        let endpoint = format!("http://{}", server.addr());
        let config = bucket_on(&endpoint, &s3.region, &s3.access_key, &s3.secret_key).await;
        (server, endpoint, config)
    }

    /// A private moto S3 server on a free port.
    pub fn moto() -> Self {
        let port = rbk_testsupport::free_port();
        let args = vec!["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        Self::start("moto_server", rbk_testsupport::program("moto_server"), args, port)
    }

    /// A private redis-server on a free port.
    pub fn redis() -> Self {
        let port = rbk_testsupport::free_port();
        let args = ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Self::start("redis-server", rbk_testsupport::program("redis-server"), args, port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.service));
        self.child = Some(child);
        rbk_testsupport::wait_for_port(&self.addr(), self.service, Duration::from_secs(30));
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every blob's digest, read through `list_page` `limit` at a time,
/// asserting what every page of a backend that knows ages holds: at most
/// `limit` blobs, each with its stored size and modification time.
pub async fn page_through(s: &dyn Store, limit: usize) -> Vec<Digest> {
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = s.list_page(after, limit).await.unwrap();
        assert!(page.blobs.len() <= limit);
        for b in &page.blobs {
            assert_eq!(b.stored_bytes, b.digest.size());
            assert!(b.modified.is_some(), "{} has no age", b.digest);
        }
        seen.extend(page.blobs.iter().map(|b| b.digest));
        match page.next_after {
            Some(a) => after = Some(a),
            None => return seen,
        }
    }
}
