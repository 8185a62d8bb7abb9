//! Pull and push against the real local docker-registry.

mod common;

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

#[tokio::test]
async fn pull_picks_the_platform_from_an_image_index() {
    use rbk_image::model::{Index, media_type, to_json};
    let registry = rbk_testsupport::registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let amd64 = rbk_image::testimage::busybox_image(&layout, &busybox(), "amd64").unwrap();
    let mut arm64 = amd64.clone();
    arm64.config.architecture = "arm64".into();
    arm64.config.variant = Some("v8".into());
    arm64.save(&layout, Some("arm64")).unwrap();
    let mut index = Index::empty();
    index.manifests = vec![arm64.manifest_descriptor.clone(), amd64.manifest_descriptor.clone()];
    let bytes = to_json(&index);
    layout.write_blob(&bytes).unwrap();
    let index_desc = rbk_image::Descriptor::for_bytes(media_type::OCI_INDEX, &bytes);

    let dest: ImageRef = format!("{registry}/multi-{}:v1", std::process::id()).parse().unwrap();
    let client = RegistryClient::new().unwrap();
    client.push(&layout, &index_desc, &dest, &PushOptions::default()).await.unwrap();

    let other = tempfile::tempdir().unwrap();
    let pulled = client.pull(&dest, &OciLayout::create(other.path()).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, amd64.manifest_descriptor.digest);
    let arm_client = client.with_platform(rbk_image::Platform { architecture: "arm64".into(), os: "linux".into(), variant: None, os_version: None, os_features: vec![] });
    let pulled = arm_client.pull(&dest, &OciLayout::create(other.path().join("arm")).unwrap()).await.unwrap();
    assert_eq!(pulled.manifest_descriptor.digest, arm64.manifest_descriptor.digest);
    let s390 = RegistryClient::new().unwrap().with_platform(rbk_image::Platform { architecture: "s390x".into(), os: "linux".into(), variant: None, os_version: None, os_features: vec![] });
    let err = s390.pull(&dest, &OciLayout::create(other.path().join("s390")).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("linux/s390x") && err.contains("linux/arm64/v8") && err.contains("linux/amd64"), "{err}");
}

#[tokio::test]
async fn a_blob_longer_than_its_descriptor_says_is_refused_on_pull() {
    let registry = rbk_testsupport::registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &busybox(), "bb").unwrap();
    let dest: ImageRef = format!("{registry}/sizecheck-{}:v1", std::process::id()).parse().unwrap();
    let client = RegistryClient::new().unwrap();
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    let mut short = image.layers()[0].clone();
    short.size -= 1;
    let other = tempfile::tempdir().unwrap();
    let target = OciLayout::create(other.path()).unwrap();
    let err = client.pull_blob(&dest, &short, &target).await.unwrap_err();
    assert!(matches!(err, rbk_image::ImageError::SizeMismatch { .. }), "{err}");
    assert!(!target.has_blob(&short.digest));
}

#[tokio::test]
async fn a_blob_the_registry_serves_corrupted_is_refused_on_pull() {
    let reg = common::PrivateRegistry::start(|_| String::new());
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path()).unwrap();
    let image = rbk_image::testimage::busybox_image(&layout, &busybox(), "bb").unwrap();
    let dest: ImageRef = format!("{}/corrupt:v1", reg.addr).parse().unwrap();
    let client = RegistryClient::new().unwrap();
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await.unwrap();
    // Flip a byte of the layer in the registry's storage.
    let layer = image.layers()[0].digest;
    let data = reg.blob_data(&layer.hex());
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let other = tempfile::tempdir().unwrap();
    let target = OciLayout::create(other.path()).unwrap();
    let err = client.pull(&dest, &target).await.unwrap_err();
    match &err {
        rbk_image::ImageError::DigestMismatch { what, expected, .. } => {
            assert_eq!(expected, &layer.to_string());
            assert!(what.contains(&format!("/blobs/{layer}")), "{what}");
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(!target.has_blob(&layer));
    assert!(target.index().unwrap().manifests.is_empty(), "a failed pull lists no image");
}
