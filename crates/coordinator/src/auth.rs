//! Tokens: who is calling, and so which namespace they may touch.
//!
//! A static token file maps each token to one tenant (whose name is the
//! namespace of its cache ids and action-cache entries) or to a worker pool.
//! Tokens are loaded into coordinator state by their blake3 hash, so the
//! state (and, later, the Raft log) never holds a usable token. Every gRPC
//! service is wrapped in [`Auth::interceptor`]: a request without a known
//! token never reaches a handler.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tonic::{Request, Status};

use crate::state::{Command, CoordinatorState, Principal, StateError, query};

/// The token file, for example:
///
/// ```toml
/// [tenants]
/// "s3cr3t-team-a" = "team-a"
/// [workers]
/// "s3cr3t-pool" = "default"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default)]
    pub tenants: BTreeMap<String, String>,
    #[serde(default)]
    pub workers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("token file {path}: {message}")]
    Parse { path: String, message: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let file: TokenFile =
            toml::from_str(text).map_err(|e| AuthError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        let bad = |message: String| Err(AuthError::Parse { path: path.display().to_string(), message });
        for (token, name) in file.tenants.iter().chain(&file.workers) {
            if token.len() < 16 {
                // Never echo the token itself.
                return bad(format!("a token for {name:?} is shorter than 16 characters"));
            }
            if !valid_namespace(name) {
                return bad(format!("name {name:?}: use 1-64 characters from [A-Za-z0-9._-]"));
            }
        }
        if let Some(t) = file.tenants.keys().find(|t| file.workers.contains_key(*t)) {
            let name = &file.tenants[t];
            return bad(format!("tenant {name:?}'s token is also a worker token"));
        }
        Ok(file)
    }

    /// The commands that register these tokens.
    pub fn commands(&self) -> Vec<Command> {
        let tenants = self.tenants.iter().map(|(t, n)| (t, Principal::Tenant(n.clone())));
        let workers = self.workers.iter().map(|(t, n)| (t, Principal::Worker(n.clone())));
        tenants.chain(workers).map(|(t, principal)| Command::PutToken { token_hash: token_hash(t), principal }).collect()
    }
}

fn valid_namespace(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Checks bearer tokens against coordinator state.
#[derive(Clone)]
pub struct Auth {
    state: Arc<dyn CoordinatorState>,
}

impl Auth {
    pub fn new(state: Arc<dyn CoordinatorState>) -> Self {
        Self { state }
    }

    /// Loads a token file into state.
    pub async fn install(&self, file: &TokenFile) -> Result<(), AuthError> {
        for cmd in file.commands() {
            self.state.apply(cmd).await?;
        }
        Ok(())
    }

    /// Who `authorization: Bearer <token>` names.
    pub fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization header must be `Bearer <token>`"))?;
        let hash = token_hash(token.trim());
        query(&*self.state, |m| m.principal(&hash).cloned()).ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// A tonic interceptor that refuses unknown tokens and attaches the
    /// caller's [`Principal`] to the request for the handlers.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let auth = self.clone();
        move |mut req: Request<()>| {
            let p = auth.principal(&req)?;
            req.extensions_mut().insert(p);
            Ok(req)
        }
    }
}

/// The caller's tenant namespace, or refusal for workers.
pub fn tenant_of<T>(req: &Request<T>) -> Result<String, Status> {
    match req.extensions().get::<Principal>() {
        Some(Principal::Tenant(ns)) => Ok(ns.clone()),
        Some(Principal::Worker(_)) => Err(Status::permission_denied("worker tokens cannot use the build service")),
        None => Err(Status::unauthenticated("request was not authenticated")),
    }
}

/// The caller's worker pool, or refusal for tenants.
pub fn worker_pool_of<T>(req: &Request<T>) -> Result<String, Status> {
    match req.extensions().get::<Principal>() {
        Some(Principal::Worker(pool)) => Ok(pool.clone()),
        Some(Principal::Tenant(_)) => Err(Status::permission_denied("tenant tokens cannot serve as workers")),
        None => Err(Status::unauthenticated("request was not authenticated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    const FILE: &str = "[tenants]\n\"aaaaaaaaaaaaaaaa-token\" = \"team-a\"\n[workers]\n\"wwwwwwwwwwwwwwww-token\" = \"pool\"\n";

    fn request(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    async fn auth() -> Auth {
        let a = Auth::new(Arc::new(MemoryState::new()));
        a.install(&TokenFile::parse(FILE, Path::new("tokens.toml")).unwrap()).await.unwrap();
        a
    }

    #[tokio::test]
    async fn known_tokens_map_to_their_principal() {
        let a = auth().await;
        assert_eq!(a.principal(&request(Some("aaaaaaaaaaaaaaaa-token"))).unwrap(), Principal::Tenant("team-a".into()));
        assert_eq!(a.principal(&request(Some("wwwwwwwwwwwwwwww-token"))).unwrap(), Principal::Worker("pool".into()));
    }

    #[tokio::test]
    async fn missing_and_unknown_tokens_are_refused() {
        let a = auth().await;
        assert_eq!(a.principal(&request(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(a.principal(&request(Some("nope-nope-nope-nope"))).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn state_holds_hashes_not_tokens() {
        let f = TokenFile::parse(FILE, Path::new("tokens.toml")).unwrap();
        let text = format!("{:?}", f.commands());
        assert!(!text.contains("aaaaaaaaaaaaaaaa-token"));
    }

    #[test]
    fn short_tokens_and_bad_names_are_refused_naming_the_file() {
        let e = TokenFile::parse("[tenants]\n\"short\" = \"a\"\n", Path::new("/etc/rbk/tokens.toml")).unwrap_err();
        assert!(e.to_string().starts_with("token file /etc/rbk/tokens.toml: a token for \"a\""), "{e}");
        assert!(!e.to_string().contains("short\""));
        let e = TokenFile::parse("[tenants]\n\"aaaaaaaaaaaaaaaaaaaa\" = \"a/b\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("name \"a/b\""), "{e}");
        let e = TokenFile::parse("[tenant]\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
    }
}
