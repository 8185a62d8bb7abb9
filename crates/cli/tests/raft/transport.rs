//! The raft port (issue #15, item 6): a node does not start without the
//! cluster secret, and the membership RPCs refuse callers without it.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_change_members_without_the_cluster_secret_are_refused() {
    let mut c = Cluster::new(3, 1000);
    c.start_all();
    c.leader_via(&c.node(1).api()).await;
    for secret in [None, Some("not-the-cluster-secret-0000")] {
        let list = c.members_with(&["list"], 1, secret);
        assert!(!list.status.success(), "members list with {secret:?} answered:\n{}", String::from_utf8_lossy(&list.stdout));
        assert!(String::from_utf8_lossy(&list.stderr).contains("cluster secret"), "{}", String::from_utf8_lossy(&list.stderr));
        for via in 1..=3 {
            let add = c.members_with(&["add", "--id", "99", "--raft", "127.0.0.1:9", "--api", "http://127.0.0.1:9"], via, secret);
            assert!(!add.status.success(), "members add via node {via} with {secret:?} succeeded");
        }
    }
    let list = c.members(&["list"], 1);
    assert!(!list.lines().any(|l| l.starts_with("99 ")), "node 99 was added:\n{list}");
    assert_eq!(list.lines().skip(2).count(), 3, "{list}");
}

#[test]
fn a_raft_node_without_a_secret_file_does_not_start_and_names_the_setting() {
    let c = Cluster::new(1, 1000);
    let path = c.config_of(1);
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text.lines().filter(|l| !l.starts_with("secret_file")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, text);
    std::fs::write(&path, without).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbk")).args(["coordinator", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "a raft node without secret_file started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.secret_file is required"), "{err}");
}

/// A CA and, signed by it, a certificate for 127.0.0.1, written as
/// `NAME-ca.pem`, `NAME.pem` and `NAME.key` under `dir`; returns their paths.
fn issue(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("{name} raft CA"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `rbk coordinator members list` against node `via`'s raft port over
/// https://, presenting `client` (cert, key) when given.
fn members_over_tls(c: &Cluster, via: u64, ca: &std::path::Path, client: Option<(&std::path::Path, &std::path::Path)>) -> std::process::Output {
    let url = c.node(via).raft().replace("http://", "https://");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rbk"));
    command.args(["coordinator", "members", "list", "--coordinator", &url, "--token", SECRET]).arg("--tls-ca").arg(ca);
    if let Some((cert, key)) = client {
        command.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_mutual_tls_elect_a_leader_replicate_a_build_and_refuse_callers_without_a_cluster_certificate() {
    let mut c = Cluster::new(3, 1000);
    let certs = c.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = issue(&certs, "cluster");
    c.configure(&format!("[raft.tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n", cert.display(), key.display(), ca.display()));
    let (leader, _) = c.start_and_elect().await;

    // Replication runs over the TLS links: a build sent to a follower completes.
    let follower = c.apis().into_iter().find(|u| *u != leader).unwrap();
    let _w = TestWorker::start("w1", c.apis(), 50);
    let build = submit(&follower, chain(2, "mtls")).await;
    assert_eq!(wait_finished(&c.apis(), &build).await.state, "succeeded");

    let ok = members_over_tls(&c, 1, &ca, Some((&cert, &key)));
    assert!(ok.status.success(), "members over mTLS: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).lines().skip(2).count(), 3);

    // The secret alone no longer opens the port: no client certificate, a
    // certificate from another CA, or plaintext are all refused.
    let (_, rogue_cert, rogue_key) = issue(&certs, "rogue");
    for (what, out) in [
        ("no client certificate", members_over_tls(&c, 1, &ca, None)),
        ("another CA's certificate", members_over_tls(&c, 1, &ca, Some((&rogue_cert, &rogue_key)))),
        ("plaintext", c.members_with(&["list"], 1, Some(SECRET))),
    ] {
        assert!(!out.status.success(), "members list with {what} answered:\n{}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn a_raft_node_whose_tls_key_is_missing_does_not_start_and_names_the_file() {
    let mut c = Cluster::new(1, 1000);
    c.configure("[raft.tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\nca = \"nope-ca.pem\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbk")).args(["coordinator", "--config"]).arg(c.config_of(1)).output().unwrap();
    assert!(!out.status.success(), "a raft node with missing TLS files started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.tls") && err.contains("nope.pem"), "{err}");
}
