//! An overlayfs upper dir becomes an OCI layer, and a layer becomes an
//! overlayfs lower dir: whiteouts translated both ways, bytes reproducible.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rbk_image::{Compression, LayerOptions, OciDigest, UnpackOptions, layer_from_upper, unpack_layer_file};

fn whiteout(path: &Path) {
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::CharacterDevice, rustix::fs::Mode::empty(), rustix::fs::makedev(0, 0)).unwrap();
}

/// An upper dir as a RUN `echo hi > /a && rm /bin/vi && rm -rf /etc/conf.d && mkdir /etc/conf.d` leaves it.
fn sample_upper(dir: &Path) {
    std::fs::write(dir.join("a"), "hi\n").unwrap();
    std::fs::create_dir(dir.join("bin")).unwrap();
    whiteout(&dir.join("bin/vi"));
    std::fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    rustix::fs::setxattr(dir.join("etc/conf.d").as_path(), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
    std::fs::write(dir.join("etc/conf.d/new"), "n").unwrap();
    std::os::unix::fs::symlink("../a", dir.join("bin/link")).unwrap();
    std::fs::hard_link(dir.join("a"), dir.join("a-hard")).unwrap();
}

fn entries(blob: &Path) -> Vec<(String, tar::EntryType, String, Vec<u8>)> {
    let mut out = Vec::new();
    let r = rbk_image::decompress(std::fs::File::open(blob).unwrap()).unwrap();
    let mut a = tar::Archive::new(r);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((path, kind, link, data));
    }
    out
}

#[test]
fn upper_dir_with_a_file_and_a_whiteout_gives_the_expected_tar_entries() {
    let upper = tempfile::tempdir().unwrap();
    sample_upper(upper.path());
    let out = tempfile::tempdir().unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions::new(out.path())).unwrap();
    let got: Vec<_> = entries(layer.path()).into_iter().map(|(p, k, l, d)| (p, k, l, String::from_utf8(d).unwrap())).collect();
    let want = vec![
        ("a", tar::EntryType::Regular, "", "hi\n"),
        ("a-hard", tar::EntryType::Link, "a", ""),
        ("bin/", tar::EntryType::Directory, "", ""),
        ("bin/link", tar::EntryType::Symlink, "../a", ""),
        ("bin/.wh.vi", tar::EntryType::Regular, "", ""),
        ("etc/", tar::EntryType::Directory, "", ""),
        ("etc/conf.d/", tar::EntryType::Directory, "", ""),
        ("etc/conf.d/.wh..wh..opq", tar::EntryType::Regular, "", ""),
        ("etc/conf.d/new", tar::EntryType::Regular, "", "n"),
    ];
    let want: Vec<_> = want.into_iter().map(|(p, k, l, d)| (p.to_owned(), k, l.to_owned(), d.to_owned())).collect();
    assert_eq!(got, want);
    assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn layer_digests_describe_the_blob_and_the_tar() {
    let upper = tempfile::tempdir().unwrap();
    sample_upper(upper.path());
    let out = tempfile::tempdir().unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions { compression: Compression::Zstd, ..LayerOptions::new(out.path()) }).unwrap();
    let blob = std::fs::read(layer.path()).unwrap();
    assert_eq!(layer.digest, OciDigest::of(&blob));
    assert_eq!(layer.size, blob.len() as u64);
    assert_eq!(layer.blake3, rbk_store::Digest::of(&blob));
    let mut tar = Vec::new();
    zstd::stream::read::Decoder::new(&blob[..]).unwrap().read_to_end(&mut tar).unwrap();
    assert_eq!(layer.diff_id, OciDigest::of(&tar));
    assert_eq!(layer.uncompressed_size, tar.len() as u64);
    assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn same_tree_and_source_date_epoch_give_the_same_layer_bytes() {
    let out = tempfile::tempdir().unwrap();
    let make = || {
        let upper = tempfile::tempdir().unwrap();
        sample_upper(upper.path());
        let opts = LayerOptions { source_date_epoch: Some(1_000_000), ..LayerOptions::new(out.path()) };
        layer_from_upper(upper.path(), &opts).unwrap()
    };
    let a = make();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = make();
    assert_eq!(a.digest, b.digest);
    let mut ar = tar::Archive::new(rbk_image::decompress(std::fs::File::open(a.path()).unwrap()).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mtime().unwrap(), 1_000_000);
        assert_eq!(e.header().username_bytes().unwrap_or_default(), b"");
    }
}

#[test]
fn unpacking_a_layer_gives_back_overlay_whiteouts_and_metadata() {
    let upper = tempfile::tempdir().unwrap();
    sample_upper(upper.path());
    rustix::fs::chown(upper.path().join("a").as_path(), Some(rustix::fs::Uid::from_raw(1000)), Some(rustix::fs::Gid::from_raw(1001))).unwrap();
    std::fs::set_permissions(upper.path().join("a"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions::new(out.path())).unwrap();

    let dest = tempfile::tempdir().unwrap();
    let stats = unpack_layer_file(layer.path(), dest.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.diff_id, layer.diff_id);
    let d = dest.path();
    assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "hi\n");
    let a = std::fs::metadata(d.join("a")).unwrap();
    assert_eq!((a.mode() & 0o7777, a.uid(), a.gid()), (0o4755, 1000, 1001));
    assert_eq!(std::fs::metadata(d.join("a-hard")).unwrap().ino(), a.ino());
    let vi = std::fs::symlink_metadata(d.join("bin/vi")).unwrap();
    assert!(vi.file_type().is_char_device() && vi.rdev() == 0, "bin/vi should be an overlay whiteout");
    assert!(!d.join("bin/.wh.vi").exists());
    let mut v = [0u8; 4];
    let n = rustix::fs::getxattr(d.join("etc/conf.d").as_path(), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!d.join("etc/conf.d/.wh..wh..opq").exists());
    assert_eq!(std::fs::read_link(d.join("bin/link")).unwrap().to_str(), Some("../a"));
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, data) in [(tar::EntryType::Directory, &b""[..]), (tar::EntryType::Regular, &b"file now"[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "x", data).unwrap();
    }
    let t = b.into_inner().unwrap();
    let dest = tempfile::tempdir().unwrap();
    rbk_image::unpack_layer(&t[..], dest.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(dest.path().join("x")).unwrap(), "file now");
}

#[test]
fn zstd_and_uncompressed_layers_unpack_like_gzip_ones() {
    let upper = tempfile::tempdir().unwrap();
    sample_upper(upper.path());
    let out = tempfile::tempdir().unwrap();
    for compression in [Compression::Zstd, Compression::None] {
        let layer = layer_from_upper(upper.path(), &LayerOptions { compression, ..LayerOptions::new(out.path()) }).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let stats = unpack_layer_file(layer.path(), dest.path(), &UnpackOptions::default()).unwrap();
        assert_eq!(stats.diff_id, layer.diff_id, "{compression:?}");
        assert_eq!(std::fs::read_to_string(dest.path().join("etc/conf.d/new")).unwrap(), "n");
    }
}

#[tokio::test]
async fn a_layer_put_into_the_content_store_reads_back_by_its_blake3_digest() {
    use rbk_store::StoreExt;
    let upper = tempfile::tempdir().unwrap();
    sample_upper(upper.path());
    let out = tempfile::tempdir().unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions::new(out.path())).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = rbk_store::FilesystemStore::open(store_dir.path()).await.unwrap();
    layer.put_into(&store).await.unwrap();
    let back = store.get_bytes(layer.blake3).await.unwrap();
    assert_eq!(OciDigest::of(&back), layer.digest);
}

#[test]
fn user_xattrs_survive_the_layer_round_trip_and_overlay_ones_do_not_leak() {
    let upper = tempfile::tempdir().unwrap();
    std::fs::write(upper.path().join("f"), "x").unwrap();
    rustix::fs::setxattr(upper.path().join("f").as_path(), "user.rbk.note", b"hello", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(upper.path().join("f").as_path(), "trusted.overlay.origin", b"junk", rustix::fs::XattrFlags::empty()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let layer = layer_from_upper(upper.path(), &LayerOptions::new(out.path())).unwrap();
    let dest = tempfile::tempdir().unwrap();
    unpack_layer_file(layer.path(), dest.path(), &UnpackOptions::default()).unwrap();
    let f = dest.path().join("f");
    let mut v = [0u8; 16];
    let n = rustix::fs::getxattr(f.as_path(), "user.rbk.note", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"hello");
    assert!(rustix::fs::getxattr(f.as_path(), "trusted.overlay.origin", &mut v[..]).is_err());
}
