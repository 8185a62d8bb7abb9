//! A step's root filesystem: the base layers (unpacked directories) as
//! overlayfs lower dirs, plus a fresh upper and work dir that catch every
//! change the step makes. The upper dir is what becomes the step's layer.
//!
//! Long chains: overlayfs takes its options in one page (4096 bytes). Lower
//! dirs are passed as `/proc/self/fd/N` of directories opened for the
//! mount (about 18 bytes each whatever the real path's length), so one
//! mount holds about 200 layers. A chain whose lowerdir list still does
//! not fit is split: the bottom layers are
//! mounted as a read-only overlay of their own, and that mount becomes the
//! bottom lowerdir of the step's overlay ("stacked overlays"). Whiteouts stay
//! correct because every upper layer still sees the bottom group as one
//! merged tree. The kernel allows two levels of overlay stacking, so a chain
//! holds about twice what one mount holds (around 400 layers); a longer
//! chain is refused with an error saying so.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{IoContext, Result, WorkerError};

/// Room for the option string of one overlay mount (a page, minus a margin).
pub const MAX_MOUNT_OPTIONS: usize = 4000;

/// Mount options every rbk overlay uses: `layer_from_upper` needs an upper
/// dir holding complete files and plain directories (no metacopy, no
/// redirects).
const FIXED_OPTIONS: &str = "redirect_dir=off,metacopy=off,index=off";

/// Added to writable mounts where the kernel knows it (see `mount`).
const VOLATILE: &str = ",volatile";

/// A mounted overlay; unmounted and its scratch directory removed on drop.
#[derive(Debug)]
pub struct OverlayRootfs {
    /// The merged view: the container's root.
    pub merged: PathBuf,
    /// The step's changes (None for a read-only mount).
    pub upper: Option<PathBuf>,
    dir: PathBuf,
    /// Mount points, top first (unmount order).
    mounts: Vec<PathBuf>,
}

fn lowerdir_option(lowers_top_first: &[&Path]) -> String {
    let list: Vec<String> = lowers_top_first.iter().map(|p| escape(p)).collect();
    format!("lowerdir={}", list.join(":"))
}

/// Directories held open so the mount can name them `/proc/self/fd/N`.
struct ShortPaths {
    fds: Vec<std::fs::File>,
    names: Vec<PathBuf>,
}

impl ShortPaths {
    fn open(dirs: &[&Path]) -> Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let mut fds = Vec::with_capacity(dirs.len());
        let mut names = Vec::with_capacity(dirs.len());
        for d in dirs {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(d)
                .ctx(|| format!("opening layer dir {}", d.display()))?;
            names.push(PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())));
            fds.push(f);
        }
        Ok(ShortPaths { fds, names })
    }
    fn paths(&self) -> Vec<&Path> {
        let _ = &self.fds;
        self.names.iter().map(PathBuf::as_path).collect()
    }
}

/// overlayfs separates lower dirs with `:` and options with `,`; both are
/// escaped with a backslash.
fn escape(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\").replace(':', "\\:").replace(',', "\\,")
}

fn mount_overlay(target: &Path, options: &str, readonly: bool) -> Result<()> {
    if options.len() > MAX_MOUNT_OPTIONS {
        return Err(WorkerError::path(target, format!("overlay options are {} bytes, more than one mount accepts", options.len())));
    }
    let flags = if readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    nix::mount::mount(Some("overlay"), target, Some("overlay"), flags, Some(options))
        .ctx(|| format!("mounting overlay at {} ({} lower dirs)", target.display(), options.matches(':').count() + 1))
}

impl OverlayRootfs {
    /// Mounts `lowers` (bottom first) under the scratch directory `dir`
    /// (created; must not exist), writable with a fresh upper dir or
    /// read-only. `dir` should be on the same filesystem as the layers
    /// only for speed; correctness does not depend on it.
    pub fn mount(lowers: &[PathBuf], dir: &Path, writable: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut me = OverlayRootfs { merged: dir.join("merged"), upper: None, dir: dir.to_path_buf(), mounts: vec![] };
        std::fs::create_dir(&me.merged).ctx(|| format!("creating {}", me.merged.display()))?;
        let empty = dir.join("empty");
        std::fs::create_dir(&empty).ctx(|| format!("creating {}", empty.display()))?;

        // Top first, as overlayfs wants them; an empty dir at the bottom so
        // there are always at least two (a lower-only overlay needs two).
        // A layer may appear twice in a chain (two identical `RUN true`
        // steps make the same empty layer), and overlayfs refuses a lower
        // dir listed twice. Only the top-most copy matters: it carries the
        // same files and whiteouts as the lower one, over everything the
        // lower one covered.
        let mut seen = std::collections::HashSet::new();
        let mut real: Vec<&Path> = lowers.iter().rev().map(PathBuf::as_path).filter(|p| seen.insert(*p)).collect();
        real.push(&empty);
        let short = ShortPaths::open(&real)?;
        let stack = short.paths();

        let mut upper_opts = String::new();
        if writable {
            let upper = dir.join("upper");
            let work = dir.join("work");
            for d in [&upper, &work] {
                std::fs::create_dir(d).ctx(|| format!("creating {}", d.display()))?;
            }
            upper_opts = format!(",upperdir={},workdir={}", escape(&upper), escape(&work));
            me.upper = Some(upper);
        }
        let volatile = if writable { VOLATILE.len() } else { 0 };
        let fits = |l: &[&Path]| lowerdir_option(l).len() + upper_opts.len() + FIXED_OPTIONS.len() + volatile < MAX_MOUNT_OPTIONS;

        let bottom_mount = dir.join("bottom");
        let bottom_short;
        let mut top: Vec<&Path> = stack.clone();
        if !fits(&top) {
            // As many top layers as fit beside one more lowerdir (the
            // bottom group's mount); the rest form the bottom group.
            let mut n = 0;
            let placeholder = PathBuf::from("/proc/self/fd/99999");
            while n < stack.len() && fits(&[&stack[..=n], &[placeholder.as_path()]].concat()) {
                n += 1;
            }
            let bottom: Vec<&Path> = stack[n..].to_vec();
            let bottom_opts = format!("{},{}", lowerdir_option(&bottom), FIXED_OPTIONS);
            if bottom_opts.len() > MAX_MOUNT_OPTIONS {
                return Err(WorkerError::path(
                    dir,
                    format!("a chain of {} layers is longer than two stacked overlays hold (about {} here); squash the base image", lowers.len(), 2 * n),
                ));
            }
            std::fs::create_dir(&bottom_mount).ctx(|| format!("creating {}", bottom_mount.display()))?;
            mount_overlay(&bottom_mount, &bottom_opts, true)?;
            me.mounts.push(bottom_mount.clone());
            top = stack[..n].to_vec();
            bottom_short = ShortPaths::open(&[bottom_mount.as_path()])?;
            top.push(bottom_short.names[0].as_path());
        }
        let opts = format!("{}{},{}", lowerdir_option(&top), upper_opts, FIXED_OPTIONS);
        if writable {
            // `volatile`: unmounting a writable overlay otherwise syncs the
            // whole upper filesystem (every dirty page on the disk, written
            // by anyone), which cost seconds per step on a busy worker. A
            // step's upper dir is scratch: after a crash it is thrown away,
            // never remounted, so skipping the sync loses nothing. Kernels
            // before 5.10 refuse the option; mount without it there.
            let fast = format!("{opts}{VOLATILE}");
            if mount_overlay(&me.merged, &fast, false).is_err() {
                mount_overlay(&me.merged, &opts, false)?;
            }
        } else {
            mount_overlay(&me.merged, &opts, true)?;
        }
        me.mounts.insert(0, me.merged.clone());
        Ok(me)
    }

    /// The scratch directory holding merged/upper/work.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts (keeping the scratch dir, so the upper dir can still be
    /// read); called by drop as well.
    pub fn unmount(&mut self) -> Result<()> {
        while let Some(m) = self.mounts.first().cloned() {
            if let Err(e) = nix::mount::umount2(&m, MntFlags::empty()) {
                tracing::warn!(mount = %m.display(), error = %e, "unmount failed; detaching");
                nix::mount::umount2(&m, MntFlags::MNT_DETACH).ctx(|| format!("unmounting {}", m.display()))?;
            }
            self.mounts.remove(0);
        }
        Ok(())
    }
}

impl Drop for OverlayRootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::error!(error = %e, "leaving a mounted overlay behind");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
