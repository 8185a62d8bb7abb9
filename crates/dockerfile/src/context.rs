//! The build context as this crate sees it: a tree of files, directories and
//! symlinks that can be listed and read. A small trait keeps the frontend
//! independent of where the context lives (a checkout on disk here, a
//! snapshot elsewhere).

use std::io;
use std::path::{Path, PathBuf};

/// What a context entry is. Modes are the raw permission bits; the cache key
/// keeps only what survives every checkout (see `key.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { mode: u32, size: u64 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// A child of a directory in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (one path segment).
    pub name: String,
    pub kind: EntryKind,
}

/// A build context. Paths are relative, `/`-separated, without `.` or `..`
/// segments; `""` is the root.
pub trait Context {
    /// The children of directory `dir`.
    fn list(&self, dir: &str) -> io::Result<Vec<Entry>>;
    /// The bytes of file `path`.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
}

/// A context that is a directory on the local filesystem. Symlinks are
/// reported, never followed, so nothing outside the root is read.
#[derive(Debug, Clone)]
pub struct FsContext {
    root: PathBuf,
}

impl FsContext {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsContext { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> io::Result<PathBuf> {
        let mut p = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            if seg == "." || seg == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("context path '{rel}' is not normalised"),
                ));
            }
            p.push(seg);
        }
        Ok(p)
    }
}

impl Context for FsContext {
    fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let p = self.path(dir)?;
        let mut out = Vec::new();
        for de in std::fs::read_dir(&p).map_err(|e| with_path(e, &p))? {
            let de = de.map_err(|e| with_path(e, &p))?;
            let name = de.file_name().into_string().map_err(|n| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {n:?} in {} is not UTF-8", p.display()),
                )
            })?;
            let full = de.path();
            let md = std::fs::symlink_metadata(&full).map_err(|e| with_path(e, &full))?;
            let kind = if md.file_type().is_symlink() {
                let t = std::fs::read_link(&full).map_err(|e| with_path(e, &full))?;
                let target = t.into_os_string().into_string().map_err(|t| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("symlink target {t:?} of {} is not UTF-8", full.display()),
                    )
                })?;
                EntryKind::Symlink { target }
            } else if md.is_dir() {
                EntryKind::Dir { mode: mode_of(&md) }
            } else if md.is_file() {
                EntryKind::File {
                    mode: mode_of(&md),
                    size: md.len(),
                }
            } else {
                // Sockets, fifos and devices cannot be copied into an image.
                continue;
            };
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let p = self.path(path)?;
        std::fs::read(&p).map_err(|e| with_path(e, &p))
    }
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(unix)]
fn mode_of(md: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    md.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(md: &std::fs::Metadata) -> u32 {
    if md.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

/// Normalises a path written in a Dockerfile or `.dockerignore` the way Go's
/// `filepath.Clean` does, then drops leading `/`: `./a/../b/` → `b`, `/` →
/// `""`. Returns `None` if the path climbs above the root.
pub(crate) fn clean_relative(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    Some(out.join("/"))
}

/// Cleans an absolute path inside an image (`..` stops at `/`).
pub(crate) fn clean_absolute(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_relative("./a/../b/").as_deref(), Some("b"));
        assert_eq!(clean_relative("/").as_deref(), Some(""));
        assert_eq!(clean_relative("../x"), None);
        assert_eq!(clean_absolute("/a/../../b/./c/"), "/b/c");
    }
}
