//! Base images made by tests, so no test depends on Docker Hub: a busybox
//! rootfs built with rbk's own layer code and pushed with rbk's own push.

use std::path::Path;

use crate::error::IoContext;
use crate::{History, Image, ImageRef, LayerOptions, OciLayout, Platform, PushOptions, RegistryClient, Result, layer_from_upper};

/// Applets linked to `/bin/busybox` in the test rootfs.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "echo", "ls", "cat", "rm", "vi", "mkdir", "cp", "mv", "touch", "chmod", "chown", "ln", "test", "[", "true", "false",
    "sleep", "env", "id", "pwd", "grep", "sed", "head", "tail", "wc", "stat", "find", "sort", "uname", "whoami", "date", "printf",
    "tar", "gzip", "readlink", "du", "df", "dd", "sha256sum", "md5sum", "seq", "tee", "xargs", "which", "hostname", "mount",
];

/// Fixed mtime for the test image, so it has the same digest every run.
const EPOCH: i64 = 1_700_000_000;

/// Writes a minimal rootfs into `dir`: `/bin/busybox` (copied from
/// `busybox`, a static build) with symlinks for [`BUSYBOX_APPLETS`], plus
/// `/etc/passwd`, `/etc/group`, `/tmp`, `/root`.
pub fn busybox_rootfs(dir: &Path, busybox: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d)).ctx(|| format!("creating {}/{d}", dir.display()))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).ctx(|| "chmod /tmp".to_owned())?;
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700)).ctx(|| "chmod /root".to_owned())?;
    std::fs::copy(busybox, dir.join("bin/busybox")).ctx(|| format!("copying {}", busybox.display()))?;
    std::fs::set_permissions(dir.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).ctx(|| "chmod busybox".to_owned())?;
    for applet in BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).ctx(|| format!("linking applet {applet}"))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        .ctx(|| "writing /etc/passwd".to_owned())?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").ctx(|| "writing /etc/group".to_owned())?;
    Ok(())
}

/// Builds a one-layer busybox image into `layout` under `ref_name`
/// (`Cmd ["sh"]`, `PATH` set). The same busybox binary always gives the
/// same image digest.
pub fn busybox_image(layout: &OciLayout, busybox: &Path, ref_name: &str) -> Result<Image> {
    busybox_image_for(layout, busybox, &Platform::linux_amd64(), Some(ref_name), None)
}

/// [`busybox_image`] with the tree `overlay` copied over the rootfs (a
/// test's stand-in tools in `usr/local/bin`, its own `etc/passwd`).
pub fn busybox_image_with(layout: &OciLayout, busybox: &Path, ref_name: &str, overlay: Option<&Path>) -> Result<Image> {
    busybox_image_for(layout, busybox, &Platform::linux_amd64(), Some(ref_name), overlay)
}

/// [`busybox_image_with`] for `platform` (the busybox binary must be one
/// of that platform, e.g. Debian's `busybox-static:arm64`), named
/// `ref_name` when given.
pub fn busybox_image_for(layout: &OciLayout, busybox: &Path, platform: &Platform, ref_name: Option<&str>, overlay: Option<&Path>) -> Result<Image> {
    let root = tempfile::tempdir().ctx(|| "creating a temporary rootfs".to_owned())?;
    busybox_rootfs(root.path(), busybox)?;
    if let Some(o) = overlay {
        copy_tree(o, root.path())?;
    }
    let blobs = layout.root().join("blobs/sha256");
    let layer = layer_from_upper(root.path(), &LayerOptions { source_date_epoch: Some(EPOCH), ..LayerOptions::new(&blobs) })?;
    layer.add_to_layout(layout)?;
    let mut image = Image::scratch(platform);
    image.config.created = Some("2023-11-14T22:13:20Z".into());
    image.config.config.set_env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    image.config.config.cmd = Some(vec!["sh".into()]);
    image.push_layer(&layer, History { created_by: Some("rbk test busybox rootfs".into()), ..Default::default() });
    image.save(layout, ref_name)?;
    Ok(image)
}

/// Copies files, directories (modes kept) and symlinks of `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).ctx(|| format!("listing {}", from.display()))? {
        let e = e.ctx(|| format!("listing {}", from.display()))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let md = std::fs::symlink_metadata(&src).ctx(|| format!("reading {}", src.display()))?;
        if md.is_dir() {
            std::fs::create_dir_all(&dst).ctx(|| format!("creating {}", dst.display()))?;
            copy_tree(&src, &dst)?;
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(&src).ctx(|| format!("reading {}", src.display()))?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst).ctx(|| format!("linking {}", dst.display()))?;
        } else {
            std::fs::copy(&src, &dst).ctx(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// A multi-platform busybox: one [`busybox_image_for`] per
/// `(platform, busybox binary)`, listed in one OCI index saved under
/// `ref_name`. Returns the index's descriptor.
pub fn busybox_index(layout: &OciLayout, binaries: &[(Platform, &Path)], ref_name: &str) -> Result<crate::Descriptor> {
    let mut manifests = Vec::new();
    for (platform, busybox) in binaries {
        manifests.push(busybox_image_for(layout, busybox, platform, None, None)?.manifest_descriptor);
    }
    crate::save_index(layout, manifests, Some(ref_name))
}

/// Builds the busybox image and pushes it to `registry` (`host:port`,
/// plain HTTP) as `<registry>/busybox:latest`; returns its reference,
/// pinned to the pushed manifest digest. Uses a scratch layout in a
/// temporary directory.
pub async fn push_busybox(registry: &str, busybox: &Path) -> Result<ImageRef> {
    let dir = tempfile::tempdir().ctx(|| "creating a temporary layout".to_owned())?;
    let layout = OciLayout::create(dir.path())?;
    let (layout2, busybox2) = (layout.clone(), busybox.to_owned());
    let image = tokio::task::spawn_blocking(move || busybox_image(&layout2, &busybox2, "busybox:latest"))
        .await
        .expect("building the busybox image does not panic")?;
    let dest: ImageRef = format!("{registry}/busybox:latest").parse()?;
    let client = RegistryClient::new()?.with_insecure(registry);
    client.push(&layout, &image.manifest_descriptor, &dest, &PushOptions::default()).await?;
    Ok(dest.with_digest(image.manifest_descriptor.digest))
}
