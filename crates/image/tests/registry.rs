//! Pull and push against the real local docker-registry.

use rbk_image::{ImageRef, OciLayout, PushOptions, RegistryClient, UnpackOptions, unpack_layer_file};

fn busybox() -> std::path::PathBuf {
    rbk_testsupport::program("busybox")
}

#[tokio::test]
async fn pushed_busybox_pulls_back_with_the_same_digests() {
    let registry = rbk_testsupport::registry();
    let pushed = rbk_image::testimage::push_busybox(&registry, &busybox()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let client = RegistryClient::new().unwrap();
    let by_tag: ImageRef = format!("{registry}/busybox:latest").parse().unwrap();
    let image = client.pull(&by_tag, &layout).await.unwrap();
    assert_eq!(Some(image.manifest_descriptor.digest), pushed.digest);
    assert_eq!(image.layers().len(), 1);
    let layer = &image.layers()[0];
    let dest = tempfile::tempdir().unwrap();
    let stats = unpack_layer_file(&layout.blob_path(&layer.digest), dest.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.diff_id, image.diff_ids()[0]);
    assert_eq!(std::fs::read_link(dest.path().join("bin/sh")).unwrap().to_str(), Some("busybox"));
    assert_eq!(image.config.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
    // Pinned by digest, too.
    let again = client.pull(&pushed, &layout).await.unwrap();
    assert_eq!(again.manifest_descriptor.digest, image.manifest_descriptor.digest);
}

#[tokio::test]
async fn push_skips_blobs_the_registry_has_and_mounts_across_repositories() {
    let registry = rbk_testsupport::registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &busybox(), "bb").unwrap();
    let client = RegistryClient::new().unwrap();
    let unique = format!("push-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let first: ImageRef = format!("{registry}/{unique}/a:v1").parse().unwrap();
    let report = client.push(&layout, &image.manifest_descriptor, &first, &PushOptions { chunk_size: Some(256 * 1024), ..Default::default() }).await.unwrap();
    assert_eq!(report.uploaded.len(), 2, "{report:?}");
    let again = client.push(&layout, &image.manifest_descriptor, &first, &PushOptions::default()).await.unwrap();
    assert_eq!((again.skipped.len(), again.uploaded.len()), (2, 0), "{again:?}");
    let second: ImageRef = format!("{registry}/{unique}/b:v1").parse().unwrap();
    let opts = PushOptions { mount_from: vec![format!("{unique}/a")], ..Default::default() };
    let mounted = client.push(&layout, &image.manifest_descriptor, &second, &opts).await.unwrap();
    assert_eq!((mounted.mounted.len(), mounted.uploaded.len()), (2, 0), "{mounted:?}");
    let pulled = client.pull(&second, &OciLayout::create(dir.path().join("other")).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, image.manifest_descriptor.digest);
}

#[tokio::test]
async fn pulling_a_missing_tag_names_the_url_and_status() {
    let registry = rbk_testsupport::registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let r: ImageRef = format!("{registry}/does-not-exist/x:nope").parse().unwrap();
    let err = RegistryClient::new().unwrap().pull(&r, &layout).await.unwrap_err().to_string();
    assert!(err.contains("/v2/does-not-exist/x/manifests/nope") && err.contains("404"), "{err}");
}
