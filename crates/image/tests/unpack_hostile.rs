//! Layers are untrusted input: every way a tar could write outside the
//! layer directory, or plant something a build must not have, is refused
//! with an error that names the entry.

use std::io::Write;
use std::path::Path;

use rbk_image::{ImageError, UnpackOptions, unpack_layer};

/// Appends an entry with raw (unvalidated) name and link name, as an
/// attacker would write it.
fn raw(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn unpack(tar: &[u8], opts: &UnpackOptions) -> (tempfile::TempDir, Result<rbk_image::UnpackStats, ImageError>) {
    let outer = tempfile::tempdir().unwrap();
    std::fs::create_dir(outer.path().join("layer")).unwrap();
    let r = unpack_layer(tar, &outer.path().join("layer"), opts);
    (outer, r)
}

fn assert_hostile(r: Result<rbk_image::UnpackStats, ImageError>, entry: &str, why: &str) {
    match r {
        Err(ImageError::HostileEntry { entry: e, reason }) => {
            assert_eq!(e, entry);
            assert!(reason.contains(why), "reason {reason:?} should mention {why:?}");
        }
        other => panic!("expected a hostile-entry error for {entry:?}, got {other:?}"),
    }
}

/// Everything under `outer` except the layer directory itself.
fn outside(outer: &Path) -> Vec<String> {
    std::fs::read_dir(outer).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != "layer").collect()
}

#[test]
fn unpack_refuses_absolute_paths() {
    let t = tar_of(|b| raw(b, tar::EntryType::Regular, "/etc/evil", "", b"x"));
    let (_d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "/etc/evil", "absolute");
    assert!(!Path::new("/etc/evil").exists());
}

#[test]
fn unpack_refuses_dotdot_paths() {
    let t = tar_of(|b| raw(b, tar::EntryType::Regular, "a/../../escaped", "", b"x"));
    let (d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "a/../../escaped", "'..'");
    assert!(outside(d.path()).is_empty());
}

#[test]
fn unpack_refuses_paths_through_symlinks() {
    let t = tar_of(|b| {
        raw(b, tar::EntryType::Symlink, "link", "..", b"");
        raw(b, tar::EntryType::Regular, "link/escaped", "", b"x");
    });
    let (d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "link/escaped", "symlink link");
    assert!(outside(d.path()).is_empty());
}

#[test]
fn unpack_refuses_symlink_escape_to_an_absolute_directory() {
    let target = tempfile::tempdir().unwrap();
    let t = tar_of(|b| {
        raw(b, tar::EntryType::Symlink, "etc", target.path().to_str().unwrap(), b"");
        raw(b, tar::EntryType::Regular, "etc/passwd", "", b"x");
    });
    let (_d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "etc/passwd", "symlink etc");
    assert!(!target.path().join("passwd").exists());
}

#[test]
fn unpack_refuses_hardlinks_to_outside() {
    let t = tar_of(|b| raw(b, tar::EntryType::Link, "passwd", "../../../../etc/passwd", b""));
    let (d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "passwd", "outside the layer");
    assert!(outside(d.path()).is_empty());
    let t = tar_of(|b| raw(b, tar::EntryType::Link, "shadow", "/etc/shadow", b""));
    let (_d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "shadow", "outside the layer");
}

#[test]
fn unpack_refuses_hardlinks_through_symlinks() {
    let t = tar_of(|b| {
        raw(b, tar::EntryType::Symlink, "up", "/etc", b"");
        raw(b, tar::EntryType::Link, "passwd", "up/passwd", b"");
    });
    let (_d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "passwd", "symlink up");
}

#[test]
fn unpack_refuses_device_nodes_unless_privileged() {
    let t = tar_of(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
        h.set_mode(0o666);
        h.set_size(0);
        b.append_data(&mut h, "dev/mem", std::io::empty()).unwrap();
    });
    let (d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "dev/mem", "device node 1:1");
    assert!(!d.path().join("layer/dev/mem").exists());

    let (d, r) = unpack(&t, &UnpackOptions { privileged: true, ..Default::default() });
    r.unwrap();
    let m = std::fs::symlink_metadata(d.path().join("layer/dev/mem")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()));
}

#[test]
fn unpack_refuses_decompression_bombs() {
    // 16 MiB of zeros gzip to about 16 KiB.
    let t = tar_of(|b| {
        let mut h = tar::Header::new_gnu();
        h.set_size(16 << 20);
        h.set_mode(0o644);
        b.append_data(&mut h, "bomb", std::io::repeat(0).take_bytes(16 << 20)).unwrap();
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&t).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20);
    let (_d, r) = unpack(&gz, &UnpackOptions { max_uncompressed_bytes: 4 << 20, ..Default::default() });
    match r {
        Err(ImageError::TooLarge { entry, limit }) => assert_eq!((entry.as_str(), limit), ("bomb", 4 << 20)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn unpack_refuses_too_many_entries() {
    let t = tar_of(|b| {
        for i in 0..20 {
            raw(b, tar::EntryType::Regular, &format!("f{i}"), "", b"");
        }
    });
    let (_d, r) = unpack(&t, &UnpackOptions { max_entries: 10, ..Default::default() });
    assert_hostile(r, "f10", "more than 10 entries");
}

#[test]
fn unpack_refuses_whiteouts_of_dot_and_dotdot() {
    for name in ["a/b/.wh...", "a/b/.wh.."] {
        let t = tar_of(|b| {
            raw(b, tar::EntryType::Regular, "a/b/keep", "", b"k");
            raw(b, tar::EntryType::Regular, name, "", b"");
        });
        let (d, r) = unpack(&t, &UnpackOptions::default());
        assert_hostile(r, name, "whiteout must name an entry");
        assert!(d.path().join("layer/a/b/keep").exists(), "{name} must not delete anything");
    }
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

#[test]
fn unpack_refuses_paths_through_a_directory_an_earlier_entry_replaced_with_a_symlink() {
    // The unpacker reuses the last parent directory it opened: replacing
    // that directory must not leave a later entry writing into it.
    let t = tar_of(|b| {
        raw(b, tar::EntryType::Directory, "d", "", b"");
        raw(b, tar::EntryType::Regular, "d/first", "", b"x");
        raw(b, tar::EntryType::Symlink, "d", "..", b"");
        raw(b, tar::EntryType::Regular, "d/escaped", "", b"x");
    });
    let (d, r) = unpack(&t, &UnpackOptions::default());
    assert_hostile(r, "d/escaped", "symlink d");
    assert!(outside(d.path()).is_empty());
}

#[test]
fn entries_after_a_replaced_directory_land_in_its_replacement() {
    let t = tar_of(|b| {
        raw(b, tar::EntryType::Directory, "d", "", b"");
        raw(b, tar::EntryType::Regular, "d/old", "", b"x");
        raw(b, tar::EntryType::Regular, "d", "", b"file now");
        raw(b, tar::EntryType::Directory, "d", "", b"");
        raw(b, tar::EntryType::Regular, "d/new", "", b"y");
    });
    let (d, r) = unpack(&t, &UnpackOptions::default());
    r.unwrap();
    let layer = d.path().join("layer");
    assert!(!layer.join("d/old").exists());
    assert_eq!(std::fs::read(layer.join("d/new")).unwrap(), b"y");
}
