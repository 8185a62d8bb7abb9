//! Where a build's context and Dockerfile come from, as `docker buildx
//! build PATH | URL | -` and `-f -` take them:
//!
//! - a directory (the usual case);
//! - a git URL ([`crate::git_context`]), fetched on the client; the
//!   repository's own `.dockerignore` applies as it would in a checkout;
//! - an http(s) URL of a tar archive (plain or gzip), unpacked on the
//!   client, or of a plain Dockerfile (built with an empty context);
//! - `-`: stdin holds a tar archive (the context) or a Dockerfile alone
//!   (an empty context), as `docker build -` reads it;
//! - `-f -`: the Dockerfile from stdin, the context from the argument.
//!
//! For a context that is not a local directory, a relative `-f` names a
//! file inside it (docker's rule). Remote contexts land in stable
//! directories under the client dir, so the next build of the same URL
//! uploads only what changed.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::git_context::{self, GitUrl};

/// A Dockerfile read from stdin is at most this long.
const MAX_STDIN_DOCKERFILE: u64 = 16 << 20;

/// The context directory and the Dockerfile to build, and what keeps them
/// in place while the build runs.
pub struct BuildSource {
    pub context: PathBuf,
    /// `None`: `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    _scratch: Option<tempfile::TempDir>,
    _checkout: Option<git_context::Checkout>,
}

impl BuildSource {
    fn local(context: PathBuf, dockerfile: Option<PathBuf>) -> Self {
        BuildSource { context, dockerfile, _scratch: None, _checkout: None }
    }
}

/// A relative `-f` inside a context that is not a local directory.
fn inside(context: &Path, file: Option<&Path>) -> Option<PathBuf> {
    file.map(|f| if f.is_relative() { context.join(f) } else { f.to_path_buf() })
}

/// Resolves the context argument and `-f` (see the module's doc).
pub async fn resolve(context: &Path, file: Option<&Path>, work_dir: &Path) -> anyhow::Result<BuildSource> {
    let from_stdin = file == Some(Path::new("-"));
    let arg = context.to_str().unwrap_or_default();
    let mut src = if arg == "-" {
        if from_stdin {
            bail!("-f - with the context -: stdin can hold the Dockerfile or the context, not both");
        }
        stdin_context(file, work_dir)?
    } else if git_context::is_git_url(arg) {
        let url = GitUrl::parse(arg)?;
        let checkout = tokio::task::block_in_place(|| git_context::fetch(&url, work_dir))?;
        let dockerfile = inside(&checkout.dir, file);
        BuildSource { context: checkout.dir.clone(), dockerfile, _scratch: None, _checkout: Some(checkout) }
    } else if arg.starts_with("https://") || arg.starts_with("http://") {
        remote_context(arg, file, work_dir).await?
    } else {
        BuildSource::local(context.to_path_buf(), file.map(Path::to_path_buf))
    };
    if from_stdin {
        let scratch = scratch_dir(work_dir)?;
        let path = scratch.path().join("Dockerfile");
        let mut text = Vec::new();
        std::io::stdin().lock().take(MAX_STDIN_DOCKERFILE + 1).read_to_end(&mut text).context("reading the Dockerfile from stdin")?;
        if text.len() as u64 > MAX_STDIN_DOCKERFILE {
            bail!("-f -: the Dockerfile on stdin is longer than {} MiB", MAX_STDIN_DOCKERFILE >> 20);
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        src.dockerfile = Some(path);
        src._scratch = Some(scratch);
    }
    Ok(src)
}

fn scratch_dir(work_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    std::fs::create_dir_all(work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    tempfile::Builder::new().prefix("stdin-").tempdir_in(work_dir).with_context(|| format!("creating a directory in {}", work_dir.display()))
}

/// `archive` unpacked into `dir/context` when it is a tar; otherwise it
/// is the Dockerfile and the context is empty. Returns the source.
fn archive_or_dockerfile(archive: &Path, dir: &Path, file: Option<&Path>, what: &str) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let context = dir.join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    if rbk_worker::copy::unpack_context_archive(archive, &context).with_context(|| format!("unpacking {what}"))? {
        Ok((context.clone(), inside(&context, file)))
    } else {
        let dockerfile = dir.join("Dockerfile");
        std::fs::rename(archive, &dockerfile).with_context(|| format!("moving {what} to {}", dockerfile.display()))?;
        Ok((context, Some(dockerfile)))
    }
}

/// `-`: stdin is a tar archive (the context) or a Dockerfile.
fn stdin_context(file: Option<&Path>, work_dir: &Path) -> anyhow::Result<BuildSource> {
    let scratch = scratch_dir(work_dir)?;
    let archive = scratch.path().join("stdin");
    let mut f = std::fs::File::create(&archive).with_context(|| format!("creating {}", archive.display()))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut f).context("reading the context from stdin")?;
    drop(f);
    let (context, dockerfile) = archive_or_dockerfile(&archive, scratch.path(), file, "the context on stdin")?;
    Ok(BuildSource { context, dockerfile, _scratch: Some(scratch), _checkout: None })
}

/// An http(s) URL: a tar archive or a Dockerfile, fetched into
/// `work_dir/remote/<hash of the URL>`.
async fn remote_context(url: &str, file: Option<&Path>, work_dir: &Path) -> anyhow::Result<BuildSource> {
    let name = blake3::hash(url.as_bytes()).to_hex();
    let dir = work_dir.join("remote").join(&name.as_str()[..32]);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let shown = rbk_plan::remote_sources::shown(url);
    let (archive, _) = rbk_worker::copy::fetch_url(url, None, &dir).await.with_context(|| format!("fetching the context {shown}"))?;
    let (context, dockerfile) = archive_or_dockerfile(&archive, &dir, file, &format!("the context {shown}"))?;
    let _ = std::fs::remove_file(&archive);
    Ok(BuildSource::local(context, dockerfile))
}
