//! Remote sources, resolved on every build so that a cache hit never hides
//! a change: `ADD <http(s) url>` → the sha256 of the content it serves now;
//! `ADD <git url>` (`REPO#REF:SUBDIR`) → the commit its ref names now
//! (`crate::git_sources`).
//!
//! As BuildKit's HTTP source does, each build asks the server again: a
//! conditional `GET` with the validators (`ETag`, `Last-Modified`) of the
//! last fetch, so an unchanged source costs one request answered `304 Not
//! Modified` and no body; without validators (first build, or a server that
//! sends none) the body is fetched and hashed (streamed, never held in
//! memory). The step's key then holds the content digest
//! ([`rbk_dockerfile::CopySource::Url`]'s `resolved`), and the worker step
//! carries it as a pin, so a worker fetching different bytes (the source
//! changed during the build) fails the step instead of caching them.
//! `ADD --checksum=sha256:…` is its own key: no request at planning, the
//! worker checks the content when it fetches.
//!
//! Validators are noted in the client's directory (`rbk build`: the state
//! directory's `client/`; `rbk submit`: its client dir), one small JSON file
//! per URL named by the URL's blake3 — the URL itself (which may hold
//! credentials) is not written, and nothing reaches the farm but the digest.
//! A lost or damaged note costs one full download, never a wrong digest: a
//! `304` is trusted only with a note to answer it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rbk_dockerfile as df;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{BuildError, Result};

/// Where a URL's validators are noted, under the client's directory.
const NOTES_DIR: &str = "url-validators";
/// A note is a few hundred bytes; anything longer is not one.
const MAX_NOTE: u64 = 4096;
/// Validators longer than this are not kept (nor sent back).
const MAX_VALIDATOR: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the last full fetch of a URL said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    etag: Option<String>,
    last_modified: Option<String>,
    /// `sha256:<hex>` of the body.
    digest: String,
}

/// One URL's resolution in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlResolution {
    /// `sha256:<hex>` of the content the URL serves now.
    pub digest: String,
    /// Whether the body was downloaded (`false`: the server confirmed the
    /// noted validators with `304 Not Modified`).
    pub downloaded: bool,
}

/// The validators noted in a client directory.
pub struct UrlNotes {
    dir: PathBuf,
}

impl UrlNotes {
    pub fn new(client_dir: &Path) -> Self {
        UrlNotes { dir: client_dir.join(NOTES_DIR) }
    }

    fn path(&self, url: &str) -> PathBuf {
        self.dir.join(blake3::hash(url.as_bytes()).to_hex().as_str())
    }

    fn load(&self, url: &str) -> Option<Note> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(self.path(url)).ok()?.take(MAX_NOTE).read_to_end(&mut bytes).ok()?;
        let note: Note = serde_json::from_slice(&bytes).ok()?;
        valid_digest(&note.digest).then_some(note)
    }

    /// Best effort: a note that could not be written costs the next build a
    /// full download.
    fn save(&self, url: &str, note: &Note) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(note) else { return };
        if let Ok(tmp) = tempfile::NamedTempFile::new_in(&self.dir)
            && std::fs::write(tmp.path(), bytes).is_ok()
        {
            let _ = tmp.persist(self.path(url));
        }
    }
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    let v = resp.headers().get(name)?.to_str().ok()?;
    (v.len() <= MAX_VALIDATOR).then(|| v.to_owned())
}

/// Re-validates `url`: a conditional GET with the noted validators, else a
/// full one; the body (when sent) is hashed as it streams.
pub async fn resolve_url(client: &reqwest::Client, url: &str, notes: &UrlNotes) -> Result<UrlResolution, String> {
    let noted = notes.load(url);
    let mut req = client.get(url);
    if let Some(n) = &noted {
        if let Some(e) = &n.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        if let Some(m) = &n.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
        }
    }
    let mut resp = req.send().await.map_err(|e| format!("fetching: {e}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        // Only asked with validators, so only answered with a note.
        let n = noted.ok_or("the server answered 304 Not Modified to a request without validators")?;
        return Ok(UrlResolution { digest: n.digest, downloaded: false });
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let (etag, last_modified) = (header(&resp, reqwest::header::ETAG), header(&resp, reqwest::header::LAST_MODIFIED));
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the body: {e}"))? {
        hasher.update(&chunk);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    notes.save(url, &Note { etag, last_modified, digest: digest.clone() });
    Ok(UrlResolution { digest, downloaded: true })
}

/// The remote sources of a graph as this build resolved them.
#[derive(Debug, Clone, Default)]
pub struct RemoteSources {
    /// URL → its resolution, for every `ADD <url>` without `--checksum`.
    pub urls: BTreeMap<String, UrlResolution>,
    /// Git URL (as written) → the commit its ref resolved to.
    pub git: BTreeMap<String, String>,
}

impl RemoteSources {
    /// One progress line per URL, BuildKit-style: what it resolved to, and
    /// whether it was downloaded (credentials in a URL are not shown).
    pub fn lines(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|(url, r)| format!("{} -> {}{}", shown(url), r.digest, if r.downloaded { "" } else { " (not modified)" }))
            .chain(self.git.iter().map(|(url, commit)| format!("{} -> {commit}", shown(url))))
            .collect()
    }
}

/// A URL as progress shows it: `user:password@` replaced by `***@`.
pub fn shown(url: &str) -> String {
    rbk_worker::git_source::redact_url(url)
}

/// Resolves every unpinned `ADD <http(s) url>` and every `ADD <git url>`
/// of `graph` (each URL once); an error names the Dockerfile line and the
/// URL.
pub async fn resolve(graph: &df::Graph, file: &str, client_dir: &Path) -> Result<RemoteSources> {
    let mut out = RemoteSources::default();
    let mut client = None;
    let notes = UrlNotes::new(client_dir);
    for step in &graph.steps {
        let df::StepKind::Copy(c) = &step.kind else { continue };
        for s in &c.sources {
            if let df::CopySource::Git { url, checksum, .. } = s {
                if !out.git.contains_key(url) {
                    let err = |message: String| BuildError::RemoteSource { file: file.to_owned(), line: step.pos.line, url: shown(url), message };
                    let git = df::GitRef::parse(url).map_err(err)?;
                    let commit = crate::git_sources::resolve_git(&git, checksum.as_deref()).await.map_err(err)?;
                    out.git.insert(url.clone(), commit);
                }
                continue;
            }
            let df::CopySource::Url { url, checksum: None, .. } = s else { continue };
            if out.urls.contains_key(url) {
                continue;
            }
            let err = |message: String| BuildError::RemoteSource { file: file.to_owned(), line: step.pos.line, url: url.clone(), message };
            if client.is_none() {
                client = Some(reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().map_err(|e| err(e.to_string()))?);
            }
            let r = resolve_url(client.as_ref().expect("made above"), url, &notes).await.map_err(err)?;
            out.urls.insert(url.clone(), r);
        }
    }
    Ok(out)
}

/// A resolver answering for bases as `inner` does, and for remote sources
/// from what this build resolved.
pub struct WithRemote<'a> {
    pub inner: &'a dyn df::BaseResolver,
    pub remote: &'a RemoteSources,
}

impl df::BaseResolver for WithRemote<'_> {
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Option<String> {
        self.inner.resolve(reference, platform)
    }

    fn env(&self, reference: &str, platform: Option<&str>) -> Option<Vec<(String, String)>> {
        self.inner.env(reference, platform)
    }

    fn url(&self, url: &str) -> Option<String> {
        self.remote.urls.get(url).map(|r| r.digest.clone())
    }

    fn git(&self, url: &str) -> Option<String> {
        self.remote.git.get(url).cloned().or_else(|| self.inner.git(url))
    }

    fn onbuild(&self, reference: &str, platform: Option<&str>) -> Option<Vec<String>> {
        self.inner.onbuild(reference, platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_names_no_url_and_a_damaged_one_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let notes = UrlNotes::new(dir.path());
        let url = "https://user:pw@example.com/f.txt";
        let note = Note { etag: Some("\"v1\"".into()), last_modified: None, digest: format!("sha256:{}", "a".repeat(64)) };
        notes.save(url, &note);
        assert_eq!(notes.load(url), Some(note));
        let file = std::fs::read_dir(dir.path().join(NOTES_DIR)).unwrap().next().unwrap().unwrap().path();
        assert!(!std::fs::read_to_string(&file).unwrap().contains("pw@"), "the URL (and its credentials) is not written");
        std::fs::write(&file, r#"{"etag":"\"v1\"","last_modified":null,"digest":"sha256:short"}"#).unwrap();
        assert_eq!(notes.load(url), None);
    }

    #[test]
    fn progress_shows_a_url_without_its_credentials() {
        assert_eq!(shown("https://user:pw@example.com/a@b"), "https://***@example.com/a@b");
        assert_eq!(shown("http://127.0.0.1:8000/f.txt"), "http://127.0.0.1:8000/f.txt");
    }
}
