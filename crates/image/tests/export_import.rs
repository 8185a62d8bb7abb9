//! Exported images are real images: skopeo reads them and copies them to a
//! registry; what skopeo writes, rbk imports.

use std::path::Path;
use std::process::Command;

use rbk_image::{
    History, Image, ImageError, ImageRef, LayerOptions, OciLayout, Platform, RegistryClient, export_docker_archive, export_oci_archive,
    import_docker_archive, import_oci, layer_from_upper,
};

fn skopeo(args: &[&str]) -> String {
    let out = Command::new(rbk_testsupport::program("skopeo")).arg("--insecure-policy").args(args).output().expect("running skopeo");
    assert!(out.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// busybox plus a layer like `RUN echo hi > /a && rm /bin/vi` leaves.
fn two_layer_image(layout: &OciLayout) -> Image {
    let mut image = rbk_image::testimage::busybox_image(layout, &rbk_testsupport::program("busybox"), "busybox").unwrap();
    let upper = tempfile::tempdir().unwrap();
    std::fs::write(upper.path().join("a"), "hi\n").unwrap();
    std::fs::create_dir(upper.path().join("bin")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.path().join("bin/vi").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions::new(layout.root())).unwrap();
    layer.add_to_layout(layout).unwrap();
    image.push_layer(&layer, History { created_by: Some("RUN echo hi > /a && rm /bin/vi".into()), ..Default::default() });
    image.config.config.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
    image.config.config.labels = Some([("org.example".to_owned(), "yes".to_owned())].into());
    image.save(layout, Some("built")).unwrap();
    image
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test]
async fn oci_archive_is_accepted_by_skopeo_inspect_and_copy_to_a_registry() {
    let registry = rbk_testsupport::registry();
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    let tar = dir.path().join("image.tar");
    export_oci_archive(&layout, &image.manifest_descriptor, Some("built"), &tar).unwrap();

    let inspected = json(&skopeo(&["inspect", &format!("oci-archive:{}:built", tar.display())]));
    assert_eq!(inspected["Digest"], image.manifest_descriptor.digest.to_string());
    let layers: Vec<String> = image.layers().iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(layers));
    assert_eq!(inspected["Labels"]["org.example"], "yes");

    let dest = format!("{registry}/{}:v1", unique("skopeo-oci"));
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci-archive:{}:built", tar.display()), &format!("docker://{dest}")]);
    let pulled = RegistryClient::new().unwrap().pull(&dest.parse::<ImageRef>().unwrap(), &OciLayout::create(dir.path().join("pulled")).unwrap()).await.unwrap();
    assert_eq!(pulled.diff_ids(), image.diff_ids());
    assert_eq!(pulled.layers().iter().map(|l| l.digest).collect::<Vec<_>>(), image.layers().iter().map(|l| l.digest).collect::<Vec<_>>());
}

#[test]
fn docker_archive_is_accepted_by_skopeo_and_comes_back_through_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    let tar = dir.path().join("docker.tar");
    export_docker_archive(&layout, &image.manifest_descriptor, &["example.com/built:v1".to_owned()], &tar).unwrap();

    let inspected = json(&skopeo(&["inspect", &format!("docker-archive:{}", tar.display())]));
    assert_eq!(inspected["RepoTags"], serde_json::json!([]), "skopeo reports tags only for registries");
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspected["Env"], serde_json::json!(image.config.config.env));

    let oci_dir = dir.path().join("skopeo-oci");
    skopeo(&["copy", &format!("docker-archive:{}", tar.display()), &format!("oci:{}:copied", oci_dir.display())]);
    let imported = import_oci(&oci_dir, Some("copied"), &Platform::linux_amd64(), &OciLayout::create(dir.path().join("imported")).unwrap()).unwrap();
    assert_eq!(imported.diff_ids(), image.diff_ids());
    assert_eq!(imported.config.config.entrypoint, image.config.config.entrypoint);
}

#[test]
fn docker_archive_round_trips_through_import() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    let tar = dir.path().join("docker.tar");
    export_docker_archive(&layout, &image.manifest_descriptor, &["built:v1".to_owned()], &tar).unwrap();
    let target = OciLayout::create(dir.path().join("imported")).unwrap();
    let imported = import_docker_archive(&tar, Some("built:v1"), &target).unwrap();
    assert_eq!(imported.diff_ids(), image.diff_ids());
    assert_eq!(imported.config, image.config);
    // Layers were exported uncompressed, so their digests are their diff_ids.
    assert_eq!(imported.layers().iter().map(|l| l.digest).collect::<Vec<_>>(), image.diff_ids());
    assert_eq!(target.find(Some("built:v1")).unwrap().digest, imported.manifest_descriptor.digest);
}

#[test]
fn oci_archive_round_trips_through_import() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    let tar = dir.path().join("image.tar");
    export_oci_archive(&layout, &image.manifest_descriptor, Some("built"), &tar).unwrap();
    let imported = import_oci(&tar, Some("built"), &Platform::linux_amd64(), &OciLayout::create(dir.path().join("imported")).unwrap()).unwrap();
    assert_eq!(imported.manifest_descriptor.digest, image.manifest_descriptor.digest);
    assert_eq!(imported.config, image.config);
}

#[test]
fn import_refuses_a_blob_whose_content_does_not_match_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    let tar = dir.path().join("image.tar");
    export_oci_archive(&layout, &image.manifest_descriptor, Some("built"), &tar).unwrap();
    // Flip one byte inside the second layer blob.
    let mut bytes = std::fs::read(&tar).unwrap();
    let blob = std::fs::read(layout.blob_path(&image.layers()[1].digest)).unwrap();
    let at = bytes.windows(blob.len()).position(|w| w == blob).unwrap() + blob.len() / 2;
    bytes[at] ^= 0xff;
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, bytes).unwrap();
    let target = OciLayout::create(dir.path().join("imported")).unwrap();
    let err = import_oci(&bad, Some("built"), &Platform::linux_amd64(), &target).unwrap_err();
    match &err {
        ImageError::DigestMismatch { what, expected, .. } => {
            assert!(what.contains("blobs/sha256/"), "{what}");
            assert_eq!(expected, &image.layers()[1].digest.to_string());
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(!target.has_blob(&image.layers()[1].digest));
}

#[test]
fn export_never_leaves_a_partial_archive() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(dir.path().join("layout")).unwrap();
    let image = two_layer_image(&layout);
    std::fs::remove_file(layout.blob_path(&image.layers()[1].digest)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = export_docker_archive(&layout, &image.manifest_descriptor, &[], &out.join("x.tar")).unwrap_err();
    assert!(err.to_string().contains(&image.layers()[1].digest.to_string()), "{err}");
    assert!(std::fs::read_dir(&out).unwrap().next().is_none(), "nothing may be left in {}", Path::new(&out).display());
}
