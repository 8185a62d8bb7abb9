//! Registry credentials the way the `docker` CLI keeps them: the
//! `config.json` in `$DOCKER_CONFIG` (default `~/.docker`), with
//!
//! - `auths`: per registry, `auth` (base64 of `user:password`),
//!   `username`/`password`, or an `identitytoken` (an OAuth2 refresh token);
//! - `credHelpers`: per registry, a helper `docker-credential-<name>`;
//! - `credsStore`: the helper for every other registry.
//!
//! A helper is run as Docker runs it: `docker-credential-<name> get` with
//! the registry's server address on stdin, answering
//! `{"ServerURL", "Username", "Secret"}` (`Username` `<token>` means the
//! secret is an identity token). Docker Hub is looked up under
//! `https://index.docker.io/v1/`, as `docker login` stores it.
//!
//! Nothing here prints a secret: errors name the file, the registry and
//! the helper, and [`Credentials`]' Debug redacts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::Credentials;
use crate::{DOCKER_HUB, ImageError, Result};

/// The key `docker login` stores Docker Hub's credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a helper may print (its answer is one small JSON object).
const HELPER_OUTPUT_MAX: u64 = 64 << 10;
/// The largest config file read.
const CONFIG_MAX: u64 = 4 << 20;

/// One `auths` entry.
#[derive(Clone, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// A parsed docker config file (see the module docs).
#[derive(Clone)]
pub struct DockerConfig {
    path: PathBuf,
    /// By registry host (`ghcr.io`, `127.0.0.1:5000`, `docker.io`).
    auths: BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
    /// Where `docker-credential-*` helpers are looked for (`$PATH`).
    search_path: Option<std::ffi::OsString>,
}

impl std::fmt::Debug for DockerConfig {
    // Registries and helpers only: never an `auth` value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &self.auths.keys().collect::<Vec<_>>())
            .field("creds_store", &self.creds_store)
            .field("cred_helpers", &self.cred_helpers)
            .finish()
    }
}

/// The host part of an `auths`/`credHelpers` key: `https://ghcr.io/v2/` →
/// `ghcr.io`; Docker Hub's URL keys → `docker.io`.
fn key_host(key: &str) -> String {
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        h => h.to_owned(),
    }
}

/// What a helper is asked for `registry`.
fn server_url(registry: &str) -> &str {
    if registry == DOCKER_HUB { DOCKER_HUB_KEY } else { registry }
}

impl DockerConfig {
    /// The config file docker reads: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`. `None` when neither variable points
    /// anywhere or the file does not exist.
    pub fn default_path() -> Option<PathBuf> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
        };
        Some(dir.join("config.json"))
    }

    /// Loads [`Self::default_path`]; a missing file is no credentials.
    pub fn load_default() -> Result<Option<DockerConfig>> {
        match Self::default_path() {
            Some(p) if p.exists() => Self::load(&p).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let f = std::fs::File::open(path).map_err(|e| ImageError::io(format!("reading docker config {}", path.display()), e))?;
        let mut bytes = Vec::new();
        f.take(CONFIG_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::io(format!("reading docker config {}", path.display()), e))?;
        if bytes.len() as u64 > CONFIG_MAX {
            return Err(ImageError::invalid(format!("docker config {}", path.display()), format!("larger than {CONFIG_MAX} bytes")));
        }
        Self::parse(&bytes, path)
    }

    /// Parses a config file's bytes (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<DockerConfig> {
        // serde_json's messages name a line and column, never the value.
        let file: ConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::invalid(format!("docker config {}", path.display()), format!("not a docker config.json: {e}")))?;
        for (field, name) in file.creds_store.iter().map(|n| ("credsStore", n)).chain(file.cred_helpers.values().map(|n| ("credHelpers", n))) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return Err(ImageError::invalid(format!("docker config {}: {field}", path.display()), format!("helper name {name:?} is not a plain name")));
            }
        }
        Ok(DockerConfig {
            path: path.to_owned(),
            auths: file.auths.into_iter().map(|(k, v)| (key_host(&k), v)).collect(),
            creds_store: file.creds_store,
            cred_helpers: file.cred_helpers.into_iter().map(|(k, v)| (key_host(&k), v)).collect(),
            search_path: None,
        })
    }

    /// Looks for `docker-credential-*` helpers in `path` (a `$PATH`-style
    /// list) instead of this process's `$PATH`.
    pub fn with_helper_path(mut self, path: impl Into<std::ffi::OsString>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// The registries this file names (in `auths` or `credHelpers`).
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self.auths.keys().chain(self.cred_helpers.keys()).map(String::as_str).collect();
        all.sort();
        all.dedup();
        all.into_iter()
    }

    /// The credentials for `registry` (a host as references write it:
    /// `ghcr.io`, `127.0.0.1:5000`, `docker.io`): its credential helper,
    /// else the `credsStore` helper, else the `auths` entry; anonymous
    /// when none has any. Runs a helper (blocking; at most
    /// [`HELPER_TIMEOUT`]).
    pub fn credentials_for(&self, registry: &str) -> Result<Credentials> {
        let registry = key_host(registry);
        if let Some(helper) = self.cred_helpers.get(&registry) {
            return self.helper_credentials(helper, &registry);
        }
        if let Some(helper) = &self.creds_store {
            let c = self.helper_credentials(helper, &registry)?;
            if !matches!(c, Credentials::Anonymous) {
                return Ok(c);
            }
        }
        match self.auths.get(&registry) {
            Some(entry) => self.entry_credentials(entry, &registry),
            None => Ok(Credentials::Anonymous),
        }
    }

    fn entry_credentials(&self, e: &AuthEntry, registry: &str) -> Result<Credentials> {
        let bad = |why: &str| ImageError::invalid(format!("docker config {}: auths.{registry}", self.path.display()), why.to_owned());
        if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Credentials::IdentityToken { username: e.username.clone().unwrap_or_default(), token: token.clone() });
        }
        if let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad("\"auth\" is not base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("\"auth\" does not decode to UTF-8 text"))?;
            let (username, password) = text.split_once(':').ok_or_else(|| bad("\"auth\" does not decode to user:password"))?;
            return Ok(Credentials::Basic { username: username.to_owned(), password: password.to_owned() });
        }
        match (&e.username, &e.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Credentials::Basic { username: u.clone(), password: p.clone() }),
            _ => Ok(Credentials::Anonymous),
        }
    }

    /// Runs `docker-credential-<helper> get` for `registry`.
    fn helper_credentials(&self, helper: &str, registry: &str) -> Result<Credentials> {
        let program = format!("docker-credential-{helper}");
        let what = format!("credential helper {program} (docker config {}) for {registry}", self.path.display());
        let found = self.find_helper(&program).ok_or_else(|| ImageError::Auth { registry: registry.to_owned(), reason: format!("{what}: not found on PATH") })?;
        let mut child = Command::new(&found)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ImageError::io(format!("running {what}"), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is answered below.
            let _ = stdin.write_all(server_url(registry).as_bytes());
        }
        let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let reader = std::thread::spawn(move || {
            let mut o = Vec::new();
            let _ = (&mut out).take(HELPER_OUTPUT_MAX).read_to_end(&mut o);
            let mut e = Vec::new();
            let _ = (&mut err).take(HELPER_OUTPUT_MAX).read_to_end(&mut e);
            (o, e)
        });
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let status = loop {
            match child.try_wait().map_err(|e| ImageError::io(format!("waiting for {what}"), e))? {
                Some(s) => break s,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ImageError::Auth { registry: registry.to_owned(), reason: format!("{what}: no answer within {}s", HELPER_TIMEOUT.as_secs()) });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let (stdout, stderr) = reader.join().unwrap_or_default();
        if !status.success() {
            let said = String::from_utf8_lossy(&stdout).trim().to_owned() + String::from_utf8_lossy(&stderr).trim();
            // The helper protocol's answer for "nothing stored".
            if said.contains("credentials not found") {
                return Ok(Credentials::Anonymous);
            }
            let said: String = said.chars().take(200).collect();
            return Err(ImageError::Auth { registry: registry.to_owned(), reason: format!("{what} failed ({status}): {said}") });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let a: Answer = serde_json::from_slice(&stdout)
            .map_err(|e| ImageError::Auth { registry: registry.to_owned(), reason: format!("{what} answered something other than its JSON: {e}") })?;
        Ok(match (a.username.as_str(), a.secret.is_empty()) {
            (_, true) => Credentials::Anonymous,
            ("<token>", false) => Credentials::IdentityToken { username: String::new(), token: a.secret },
            (_, false) => Credentials::Basic { username: a.username, password: a.secret },
        })
    }

    fn find_helper(&self, program: &str) -> Option<PathBuf> {
        let path = self.search_path.clone().or_else(|| std::env::var_os("PATH"))?;
        std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DockerConfig {
        DockerConfig::parse(json.as_bytes(), Path::new("/home/u/.docker/config.json")).unwrap()
    }

    #[test]
    fn an_auth_entry_decodes_to_user_and_password() {
        let c = parse(r#"{"auths":{"ghcr.io":{"auth":"dXNlcjpwYTpzcw=="}}}"#);
        match c.credentials_for("ghcr.io").unwrap() {
            Credentials::Basic { username, password } => assert_eq!((username.as_str(), password.as_str()), ("user", "pa:ss")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.credentials_for("quay.io").unwrap(), Credentials::Anonymous));
    }

    #[test]
    fn docker_hub_is_found_under_its_index_url() {
        let c = parse(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#);
        assert!(matches!(c.credentials_for("docker.io").unwrap(), Credentials::Basic { .. }));
    }

    #[test]
    fn url_keys_match_their_host() {
        let c = parse(r#"{"auths":{"https://registry.example:5000/v2/":{"username":"u","password":"p"}}}"#);
        assert!(matches!(c.credentials_for("registry.example:5000").unwrap(), Credentials::Basic { .. }));
    }

    #[test]
    fn an_identity_token_wins_over_auth() {
        let c = parse(r#"{"auths":{"r.example":{"auth":"dTpw","identitytoken":"refresh-me"}}}"#);
        assert!(matches!(c.credentials_for("r.example").unwrap(), Credentials::IdentityToken { .. }));
    }

    #[test]
    fn a_bad_auth_value_names_the_file_and_registry_but_not_the_value() {
        let c = parse(r#"{"auths":{"r.example":{"auth":"!!not-base64-SECRETISH"}}}"#);
        let e = c.credentials_for("r.example").unwrap_err().to_string();
        assert!(e.contains("/home/u/.docker/config.json") && e.contains("r.example"), "{e}");
        assert!(!e.contains("SECRETISH"), "{e}");
    }

    #[test]
    fn a_config_that_is_not_json_names_the_file() {
        let e = DockerConfig::parse(b"{auths", Path::new("/x/config.json")).unwrap_err().to_string();
        assert!(e.contains("/x/config.json"), "{e}");
    }

    #[test]
    fn a_helper_name_with_a_path_is_refused() {
        let e = DockerConfig::parse(br#"{"credsStore":"../../bin/sh"}"#, Path::new("/x/config.json")).unwrap_err().to_string();
        assert!(e.contains("credsStore"), "{e}");
    }

    #[test]
    fn debug_never_shows_an_auth_value() {
        let c = parse(r#"{"auths":{"r.example":{"auth":"dTpzZWNyZXQ="}}}"#);
        let d = format!("{c:?} {:?}", c.credentials_for("r.example").unwrap());
        assert!(!d.contains("dTpzZWNyZXQ") && !d.contains("secret"), "{d}");
    }
}
