//! COPY and ADD without a container: files from the build context or
//! another stage's rootfs, local archives (ADD) and fetched URLs (ADD) are
//! written into the step's rootfs (or, with `--link`, into an empty layer).
//!
//! Every destination path is resolved inside the destination root as the
//! container would see it ([`resolve_in_root`]): a symlink in the base
//! image pointing at `/etc` or at `../../../host` leads to the rootfs'
//! `/etc`, never the host's. Source paths are resolved inside their own
//! root the same way, and archive entries are confined to the destination.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobMatcher};
use sha2::{Digest as _, Sha256};

use crate::archive::{is_tar, open_decompressed};
use crate::error::{IoContext, Result, WorkerError};
use crate::mounts::StepInputs;
use crate::scope::{clean_abs, resolve_in_root};
use crate::step::{Chmod, CopySource, CopyStep, Source};
use crate::users::resolve_user;

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// How copied entries are owned and moded.
struct Attrs {
    /// `--chown`; `None` keeps the source's owner (stages) or uses 0:0
    /// (context, URLs), as Docker does.
    chown: Option<(u32, u32)>,
    chmod: Option<Chmod>,
}

impl Attrs {
    /// The mode of an entry whose own mode is `own`.
    fn mode(&self, own: u32, is_dir: bool) -> u32 {
        self.chmod.as_ref().map_or(own, |c| c.apply(own, is_dir))
    }
}

fn glob(pattern: &str, what: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| WorkerError::step(what.to_owned(), format!("bad pattern {pattern:?}: {e}")))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Excluded paths, matched against the path relative to the copied source
/// (`.dockerignore` style: `*.log` is top level, `**/*.log` anywhere).
struct Excludes(Vec<globset::GlobMatcher>);

impl Excludes {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut v = Vec::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| WorkerError::step("exclude", format!("bad pattern {p:?}: {e}")))?;
            v.push(g.compile_matcher());
        }
        Ok(Excludes(v))
    }
    fn excluded(&self, rel: &Path) -> bool {
        self.0.iter().any(|g| g.is_match(rel))
    }
}

/// Expands `pattern` (globs allowed in any component) inside `root`;
/// every result is a host path inside `root`.
fn expand_source(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let cleaned = clean_abs("/", pattern);
    if !has_glob(&cleaned) {
        let host = resolve_in_root(root, &cleaned)?;
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(WorkerError::CopySource { source_path: pattern.into(), reason: "not found".into() });
        }
        return Ok(vec![host]);
    }
    let mut current: Vec<String> = vec![String::new()];
    for part in cleaned.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        if has_glob(part) {
            let m = glob(part, "sources")?;
            for dir in &current {
                let host = resolve_in_root(root, if dir.is_empty() { "/" } else { dir })?;
                let Ok(rd) = std::fs::read_dir(&host) else { continue };
                let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                next.extend(names.into_iter().filter(|n| m.is_match(n)).map(|n| format!("{dir}/{n}")));
            }
        } else {
            next = current.iter().map(|d| format!("{d}/{part}")).collect();
        }
        current = next;
    }
    let found: Vec<PathBuf> = current
        .iter()
        .map(|c| resolve_in_root(root, c))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    if found.is_empty() {
        return Err(WorkerError::CopySource { source_path: pattern.into(), reason: "no file matches".into() });
    }
    Ok(found)
}

/// Fetches `url` into `dir` (ADD of a URL), verifying `checksum`
/// (`sha256:<hex>`) when given; returns the file and the name the URL
/// suggests (its last path component).
pub async fn fetch_url(url: &str, checksum: Option<&str>, dir: &Path) -> Result<(PathBuf, String)> {
    let fetch_err = |reason: String| WorkerError::Fetch { url: url.to_owned(), reason };
    let want = match checksum {
        Some(c) => {
            let hex = c.strip_prefix("sha256:").ok_or_else(|| fetch_err(format!("checksum {c:?}: only sha256:<hex> is supported")))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fetch_err(format!("checksum {c:?}: expected 64 hex digits")));
            }
            Some(hex.to_ascii_lowercase())
        }
        None => None,
    };
    let client = reqwest::Client::builder().build().map_err(|e| fetch_err(e.to_string()))?;
    let mut resp = client.get(url).send().await.map_err(|e| fetch_err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fetch_err(format!("HTTP {}", resp.status())));
    }
    let name = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').find(|s| !s.is_empty()).unwrap_or("download").to_owned();
    let tmp = tempfile::NamedTempFile::new_in(dir).ctx(|| format!("creating a download file in {}", dir.display()))?;
    let mut f = tmp.reopen().ctx(|| "reopening the download file".into())?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(e.to_string()))? {
        hasher.update(&chunk);
        f.write_all(&chunk).ctx(|| format!("writing the download of {url}"))?;
    }
    let got = hex::encode(hasher.finalize());
    if let Some(want) = want
        && got != want {
            return Err(fetch_err(format!(
                "content has sha256:{got}, but the build expects sha256:{want} (its ADD --checksum, or the content planning fetched: the source changed during the build)"
            )));
        }
    let path = tmp.into_temp_path().keep().map_err(|e| fetch_err(e.to_string()))?;
    Ok((path, name))
}

/// The key of a git source's checkout in `fetched` (see [`copy`]).
pub fn git_key(repo: &str, commit: &str) -> String {
    format!("git {repo}@{commit}")
}

/// Performs `step` into `dest_root`. Names in `--chown` are resolved in
/// `users_root` (the destination rootfs). `fetched` holds URL sources
/// already downloaded by [`fetch_url`] (url → (file, name)).
pub fn copy(step: &CopyStep, dest_root: &Path, users_root: &Path, inputs: &StepInputs, fetched: &HashMap<String, (PathBuf, String)>) -> Result<CopyStats> {
    let chown = match &step.chown {
        Some(spec) => {
            let u = resolve_user(users_root, Some(spec))?;
            // Docker: a user without a group gets the same number as gid.
            let gid = if spec.contains(':') { u.gid } else { u.uid };
            Some((u.uid, gid))
        }
        None => None,
    };
    let attrs = Attrs { chown, chmod: step.chmod.clone() };
    let excludes = Excludes::new(&step.exclude)?;
    let workdir = step.workdir.clone().unwrap_or_else(|| "/".into());
    let dest = clean_abs(&workdir, &step.dest);

    // Expand every source first: the count decides whether dest is a dir.
    // Each item: the host path, its source (none for a download), and the
    // name a URL suggests or, with --parents, the path below its root.
    let mut items: Vec<(PathBuf, Option<&Source>, Option<String>)> = Vec::new();
    let mut inline = Vec::new();
    for s in &step.sources {
        match s {
            CopySource::Path { from, path } => {
                let root = inputs.source_root(from)?;
                // --parents: the path below the source's root is kept, or
                // below the pivot (`x/./y/z` keeps `y/z`), as BuildKit does.
                let (pivot, path) = match path.split_once("/./") {
                    Some((above, below)) if step.parents => (resolve_in_root(root, above)?, format!("{above}/{below}")),
                    _ => (root.to_path_buf(), path.clone()),
                };
                for host in expand_source(root, &path)? {
                    let kept = step.parents.then(|| host.strip_prefix(&pivot).or_else(|_| host.strip_prefix(root)).unwrap_or(&host).to_string_lossy().into_owned());
                    items.push((host, Some(from), kept));
                }
            }
            CopySource::Inline { name, content } => inline.push((name.as_str(), content.as_str())),
            CopySource::Url { url, .. } => {
                if !step.add {
                    return Err(WorkerError::step("sources", format!("{url}: URLs are only allowed for ADD")));
                }
                let (file, name) = fetched.get(url).ok_or_else(|| WorkerError::step("sources", format!("{url} was not fetched")))?;
                items.push((file.clone(), None, Some(name.clone())));
            }
            // The checked-out tree, copied as a context directory is (0:0
            // unless --chown).
            CopySource::Git { repo, commit, .. } => {
                let (tree, _) = fetched.get(&git_key(repo, commit)).ok_or_else(|| WorkerError::step("sources", format!("{repo} was not fetched")))?;
                items.push((tree.clone(), None, None));
            }
        }
    }
    let count = items.len() + inline.len();
    let dest_is_dir = step.dest.ends_with('/') || step.dest.ends_with("/.") || step.dest == "." || count > 1 || step.parents || {
        let h = resolve_in_root(dest_root, &dest)?;
        std::fs::metadata(&h).map(|m| m.is_dir()).unwrap_or(false)
    };
    if count > 1 && !step.dest.ends_with('/') && !resolve_in_root(dest_root, &dest)?.is_dir() {
        return Err(WorkerError::step("dest", format!("{:?}: with several sources the destination must be a directory ending in /", step.dest)));
    }

    let mut stats = CopyStats::default();
    for (name, content) in inline {
        let target = if dest_is_dir { format!("{}/{}", dest.trim_end_matches('/'), name) } else { dest.clone() };
        write_inline(dest_root, &target, content, &attrs, &mut stats)?;
    }
    for (host, from, url_name) in items {
        let keep_owner = matches!(from, Some(Source::Stage(_)));
        let md = std::fs::symlink_metadata(&host).ctx(|| format!("reading {}", host.display()))?;
        if let (Some(kept), Some(_)) = (&url_name, from) {
            // --parents: `dest/<path below the root>`, directories too.
            let target = format!("{}/{}", dest.trim_end_matches('/'), kept.trim_start_matches('/'));
            if md.is_dir() {
                ensure_dir(dest_root, &target, &attrs, &mut stats)?;
                copy_tree(&host, Path::new(""), dest_root, &target, &attrs, keep_owner, &excludes, &mut HardLinks::default(), &mut stats)?;
            } else {
                write_entry(&host, dest_root, &target, &attrs, keep_owner, &mut stats)?;
            }
            continue;
        }
        if md.is_dir() {
            ensure_dir(dest_root, &dest, &attrs, &mut stats)?;
            let mut links = HardLinks::default();
            copy_tree(&host, Path::new(""), dest_root, &dest, &attrs, keep_owner, &excludes, &mut links, &mut stats)?;
            continue;
        }
        if let Some(name) = url_name {
            if step.unpack_urls && md.is_file() && is_tar(&host)? {
                ensure_dir(dest_root, &dest, &attrs, &mut stats)?;
                extract_archive(&host, dest_root, &dest, &attrs, &mut stats)?;
                continue;
            }
            let target = if dest_is_dir { format!("{}/{}", dest.trim_end_matches('/'), name) } else { dest.clone() };
            // ADD <url>: mode 0600 unless --chmod, as in Docker.
            let a = Attrs { chown: Some(attrs.chown.unwrap_or((0, 0))), chmod: Some(Chmod::Octal(attrs.mode(0o600, false))) };
            write_entry(&host, dest_root, &target, &a, false, &mut stats)?;
            continue;
        }
        if step.add && md.is_file() && is_tar(&host)? {
            ensure_dir(dest_root, &dest, &attrs, &mut stats)?;
            extract_archive(&host, dest_root, &dest, &attrs, &mut stats)?;
            continue;
        }
        let base = host.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = if dest_is_dir { format!("{}/{}", dest.trim_end_matches('/'), base) } else { dest.clone() };
        write_entry(&host, dest_root, &target, &attrs, keep_owner, &mut stats)?;
    }
    Ok(stats)
}

/// Copies the directory `src`'s content into the empty directory `dest`
/// (a cache mount's seed), owners and modes kept; symlinks are copied as
/// links, and nothing is written outside `dest`.
pub fn seed_dir(src: &Path, dest: &Path) -> Result<CopyStats> {
    let md = std::fs::metadata(src).ctx(|| format!("reading {}", src.display()))?;
    if !md.is_dir() {
        return Err(WorkerError::path(src, "a cache is seeded from a directory, and this is not one"));
    }
    let mut stats = CopyStats::default();
    copy_tree(src, Path::new(""), dest, "/", &Attrs { chown: None, chmod: None }, true, &Excludes(vec![]), &mut HardLinks::default(), &mut stats)?;
    Ok(stats)
}

/// Creates the container directory `path` (and missing parents) in `root`.
fn ensure_dir(root: &Path, path: &str, attrs: &Attrs, stats: &mut CopyStats) -> Result<PathBuf> {
    let mut prefix = String::new();
    let mut host = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix = format!("{prefix}/{part}");
        host = resolve_in_root(root, &prefix)?;
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Err(WorkerError::path(&host, format!("{prefix} exists and is not a directory"))),
            Err(_) => {
                // `create_dir_all`: a symlink may have led to a path whose
                // parents do not exist yet (all inside the root).
                std::fs::create_dir_all(&host).ctx(|| format!("creating {}", host.display()))?;
                let (uid, gid) = attrs.chown.unwrap_or((0, 0));
                lchown(&host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(attrs.mode(0o755, true)))
                    .ctx(|| format!("chmod {}", host.display()))?;
                stats.dirs += 1;
            }
        }
    }
    Ok(host)
}

/// Files with several links seen in one copied tree, by (device, inode):
/// the destination of the first, so the others become hard links to it
/// (as BuildKit copies them) instead of copies.
#[derive(Default)]
struct HardLinks(HashMap<(u64, u64), PathBuf>);

impl HardLinks {
    /// Links `target` to the copy of an inode seen before; false when
    /// `md` is the first of its inode (the caller copies it, then
    /// [`noted`](Self::noted)).
    fn link(&self, md: &std::fs::Metadata, root: &Path, target: &str, stats: &mut CopyStats) -> Result<bool> {
        let Some(first) = (md.is_file() && md.nlink() > 1).then(|| self.0.get(&(md.dev(), md.ino()))).flatten() else {
            return Ok(false);
        };
        let host = resolve_in_root(root, target)?;
        if let Ok(existing) = std::fs::symlink_metadata(&host) {
            if existing.is_dir() {
                return Err(WorkerError::path(&host, format!("cannot overwrite directory {target} with a file")));
            }
            std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
        }
        std::fs::hard_link(first, &host).ctx(|| format!("linking {} to {}", host.display(), first.display()))?;
        stats.files += 1;
        Ok(true)
    }

    fn noted(&mut self, md: &std::fs::Metadata, root: &Path, target: &str) -> Result<()> {
        if md.is_file() && md.nlink() > 1 {
            self.0.insert((md.dev(), md.ino()), resolve_in_root(root, target)?);
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn copy_tree(src_root: &Path, rel: &Path, root: &Path, dest: &str, attrs: &Attrs, keep_owner: bool, excludes: &Excludes, links: &mut HardLinks, stats: &mut CopyStats) -> Result<()> {
    let dir = src_root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))?.collect::<std::io::Result<Vec<_>>>().ctx(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel_child = rel.join(e.file_name());
        if excludes.excluded(&rel_child) {
            continue;
        }
        let target = format!("{}/{}", dest.trim_end_matches('/'), rel_child.display());
        let src = e.path();
        let md = std::fs::symlink_metadata(&src).ctx(|| format!("reading {}", src.display()))?;
        if md.is_dir() {
            let host = resolve_in_root(root, &target)?;
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
                    std::fs::create_dir(&host).ctx(|| format!("creating {}", host.display()))?;
                }
                Err(_) => std::fs::create_dir(&host).ctx(|| format!("creating {}", host.display()))?,
            }
            apply_attrs(&host, &md, attrs, keep_owner, false)?;
            stats.dirs += 1;
            copy_tree(src_root, &rel_child, root, dest, attrs, keep_owner, excludes, links, stats)?;
        } else if !links.link(&md, root, &target, stats)? {
            write_entry(&src, root, &target, attrs, keep_owner, stats)?;
            links.noted(&md, root, &target)?;
        }
    }
    Ok(())
}

/// Creates the file a copy or unpack writes: never one that exists, never
/// through a symlink planted at its name, and private (0600) until
/// [`apply_attrs`] gives it its real mode and owner.
fn create_new_file(host: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(host)
        .ctx(|| format!("creating {}", host.display()))
}

fn apply_attrs(host: &Path, src: &std::fs::Metadata, attrs: &Attrs, keep_owner: bool, symlink: bool) -> Result<()> {
    let (uid, gid) = attrs.chown.unwrap_or(if keep_owner { (src.uid(), src.gid()) } else { (0, 0) });
    lchown(host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
    if !symlink {
        let mode = attrs.mode(src.mode() & 0o7777, src.is_dir());
        std::fs::set_permissions(host, std::fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", host.display()))?;
        let mtime = SystemTime::UNIX_EPOCH + Duration::new(src.mtime().max(0) as u64, src.mtime_nsec().clamp(0, 999_999_999) as u32);
        File::open(host).and_then(|f| f.set_modified(mtime)).ctx(|| format!("setting mtime of {}", host.display()))?;
    }
    Ok(())
}

/// Copies one non-directory `src` to the container path `target`.
fn write_entry(src: &Path, root: &Path, target: &str, attrs: &Attrs, keep_owner: bool, stats: &mut CopyStats) -> Result<()> {
    let (parent, name) = target.rsplit_once('/').unwrap_or(("", target));
    let parent_host = ensure_dir(root, parent, &Attrs { chown: attrs.chown, chmod: None }, stats)?;
    let md = std::fs::symlink_metadata(src).ctx(|| format!("reading {}", src.display()))?;
    // The name itself: a symlink there would be followed for a file (as
    // Docker does), but only inside the root. A symlink replaces the one at
    // its name instead: followed, the link would overwrite what that one
    // points to (`COPY --from=stage / /` onto the same base made
    // /bin/busybox a link to itself).
    let host = if md.file_type().is_symlink() { parent_host.join(name) } else { resolve_in_root(root, target)? };
    if !host.starts_with(&parent_host) && host.parent().is_some_and(|p| std::fs::symlink_metadata(p).is_err()) {
        std::fs::create_dir_all(host.parent().expect("checked")).ctx(|| format!("creating parent of {}", host.display()))?;
    }
    if let Ok(existing) = std::fs::symlink_metadata(&host) {
        if existing.is_dir() {
            return Err(WorkerError::path(&host, format!("cannot overwrite directory {target} with a file ({name})")));
        }
        std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
    }
    let ft = md.file_type();
    if ft.is_symlink() {
        let link = std::fs::read_link(src).ctx(|| format!("reading symlink {}", src.display()))?;
        symlink(&link, &host).ctx(|| format!("creating symlink {}", host.display()))?;
        apply_attrs(&host, &md, attrs, keep_owner, true)?;
        stats.symlinks += 1;
    } else if ft.is_file() {
        let mut input = File::open(src).ctx(|| format!("opening {}", src.display()))?;
        let mut out = create_new_file(&host)?;
        stats.bytes += std::io::copy(&mut input, &mut out).ctx(|| format!("copying {} to {}", src.display(), host.display()))?;
        drop(out);
        apply_attrs(&host, &md, attrs, keep_owner, false)?;
        stats.files += 1;
    } else {
        return Err(WorkerError::CopySource { source_path: src.display().to_string(), reason: "is a device, fifo or socket; only files, directories and symlinks are copied".into() });
    }
    Ok(())
}

/// `COPY <<EOF /dest`: a heredoc written as a file, as BuildKit does it
/// (mode 0644 before `--chmod`, root-owned unless `--chown`), through the
/// same confinement as every other copied file.
fn write_inline(root: &Path, target: &str, content: &str, attrs: &Attrs, stats: &mut CopyStats) -> Result<()> {
    let (parent, _) = target.rsplit_once('/').unwrap_or(("", target));
    ensure_dir(root, parent, &Attrs { chown: attrs.chown, chmod: None }, stats)?;
    let host = resolve_in_root(root, target)?;
    if let Ok(existing) = std::fs::symlink_metadata(&host) {
        if existing.is_dir() {
            return Err(WorkerError::path(&host, format!("cannot overwrite directory {target} with a heredoc")));
        }
        std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
    }
    let mut f = create_new_file(&host)?;
    f.write_all(content.as_bytes()).ctx(|| format!("writing {}", host.display()))?;
    drop(f);
    let (uid, gid) = attrs.chown.unwrap_or((0, 0));
    lchown(&host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(attrs.mode(0o644, false))).ctx(|| format!("chmod {}", host.display()))?;
    stats.files += 1;
    stats.bytes += content.len() as u64;
    Ok(())
}

/// Unpacks a local archive into the container directory `dest`. Entries are
/// confined: `..` that would climb above `dest` and device nodes are
/// refused with an error naming the entry; paths are resolved inside the
/// root, so symlinks (from the base or from earlier entries) cannot lead
/// out.
fn extract_archive(archive: &Path, root: &Path, dest: &str, attrs: &Attrs, stats: &mut CopyStats) -> Result<()> {
    let mut ar = tar::Archive::new(open_decompressed(archive)?);
    let what = archive.display().to_string();
    let hostile = |entry: &str, reason: &str| WorkerError::CopySource { source_path: format!("{what}: entry {entry:?}"), reason: reason.into() };
    for entry in ar.entries().ctx(|| format!("reading archive {what}"))? {
        let mut entry = entry.ctx(|| format!("reading archive {what}"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut depth: i32 = 0;
        for part in raw.split('/').filter(|p| !p.is_empty() && *p != ".") {
            depth += if part == ".." { -1 } else { 1 };
            if depth < 0 {
                return Err(hostile(&raw, "climbs above the destination with .."));
            }
        }
        let rel = clean_abs("/", &raw);
        if rel == "/" {
            continue;
        }
        let target = format!("{}{}", dest.trim_end_matches('/'), rel);
        let h = entry.header();
        let (uid, gid) = attrs.chown.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let mode = attrs.mode(h.mode().unwrap_or(0o644) & 0o7777, h.entry_type().is_dir());
        let mtime = h.mtime().unwrap_or(0);
        let kind = h.entry_type();
        let (parent, _) = target.rsplit_once('/').unwrap_or(("", &target));
        ensure_dir(root, parent, &Attrs { chown: attrs.chown, chmod: None }, stats)?;
        let host = resolve_in_root(root, &target)?;
        if let Ok(existing) = std::fs::symlink_metadata(&host)
            && !(existing.is_dir() && kind.is_dir()) {
                if existing.is_dir() {
                    std::fs::remove_dir_all(&host).ctx(|| format!("replacing {}", host.display()))?;
                } else {
                    std::fs::remove_file(&host).ctx(|| format!("replacing {}", host.display()))?;
                }
            }
        match kind {
            tar::EntryType::Directory => {
                if !host.is_dir() {
                    std::fs::create_dir(&host).ctx(|| format!("creating {}", host.display()))?;
                }
                stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = create_new_file(&host)?;
                stats.bytes += std::io::copy(&mut entry, &mut out).ctx(|| format!("unpacking {raw:?} from {what}"))?;
                stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name().ctx(|| format!("reading link of {raw:?}"))?.ok_or_else(|| hostile(&raw, "symlink without a target"))?;
                symlink(&link, &host).ctx(|| format!("creating symlink {}", host.display()))?;
                lchown(&host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
                stats.symlinks += 1;
                continue;
            }
            tar::EntryType::Link => {
                let link = entry.link_name().ctx(|| format!("reading link of {raw:?}"))?.ok_or_else(|| hostile(&raw, "hard link without a target"))?;
                let link_s = link.to_string_lossy();
                if link_s.split('/').filter(|p| *p == "..").count() > 0 {
                    return Err(hostile(&raw, "hard link target climbs with .."));
                }
                let src = resolve_in_root(root, &format!("{}{}", dest.trim_end_matches('/'), clean_abs("/", &link_s)))?;
                std::fs::hard_link(&src, &host).map_err(|e| hostile(&raw, &format!("hard link to {link_s:?}: {e}")))?;
                stats.files += 1;
                continue;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => continue,
            _ => return Err(hostile(&raw, "device nodes, fifos and other special files are not unpacked by ADD")),
        }
        lchown(&host, Some(uid), Some(gid)).ctx(|| format!("chown {}", host.display()))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", host.display()))?;
        if kind != tar::EntryType::Directory {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
            File::open(&host).and_then(|f| f.set_modified(t)).ctx(|| format!("setting mtime of {}", host.display()))?;
        }
    }
    Ok(())
}

/// Unpacks `archive` into the directory `dir` as a build context (a tar
/// context on stdin, a remote tarball context), with ADD's confinement:
/// entries climbing out with `..`, through symlinks, or device nodes are
/// refused naming the entry. Entries belong to the calling user. Returns
/// `false`, unpacking nothing, when `archive` is not a tar (plain or gzip).
pub fn unpack_context_archive(archive: &Path, dir: &Path) -> Result<bool> {
    if !is_tar(archive)? {
        return Ok(false);
    }
    let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    let mut stats = CopyStats::default();
    extract_archive(archive, dir, "/", &Attrs { chown: Some(me), chmod: None }, &mut stats)?;
    Ok(true)
}
