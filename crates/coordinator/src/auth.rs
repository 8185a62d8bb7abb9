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

use crate::state::{Command, CoordinatorState, Principal, StateError, WorkerGrant, query};

/// The token file, for example:
///
/// ```toml
/// [tenants]
/// "s3cr3t-team-a" = "team-a"
/// # A named token: the dashboard shows "ci" as who submitted its builds.
/// "s3cr3t-team-a-ci" = { tenant = "team-a", name = "ci" }
/// [workers]
/// # One worker's own token: its id and labels are the file's, not its own.
/// "s3cr3t-worker-1" = { pool = "default", id = "w1", labels = { gpu = "a100" } }
/// # A pool token shared by many workers: each names its id; labels are the pool's.
/// "s3cr3t-pool" = "default"
/// [pools.default]
/// tenants = ["team-a"]          # default: the tenant named like the pool
/// labels = { zone = "eu-1" }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantToken>,
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerToken>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
}

/// A `[tenants]` entry: the tenant's name, or the tenant and a name for
/// the token itself (shown as who submitted a build; never the token).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TenantToken {
    Tenant(String),
    Named(NamedTenantToken),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTenantToken {
    pub tenant: String,
    pub name: String,
}

impl TenantToken {
    pub fn tenant(&self) -> &str {
        match self {
            TenantToken::Tenant(t) => t,
            TenantToken::Named(n) => &n.tenant,
        }
    }

    /// The token's name: its own, or its tenant's.
    pub fn name(&self) -> &str {
        match self {
            TenantToken::Tenant(t) => t,
            TenantToken::Named(n) => &n.name,
        }
    }
}

impl From<&str> for TenantToken {
    fn from(tenant: &str) -> Self {
        TenantToken::Tenant(tenant.to_owned())
    }
}

/// A `[workers]` entry: a pool name (a token many workers share) or one
/// worker's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WorkerToken {
    Pool(String),
    Worker(WorkerIdentity),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerIdentity {
    pub pool: String,
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WorkerToken {
    pub fn pool(&self) -> &str {
        match self {
            WorkerToken::Pool(p) => p,
            WorkerToken::Worker(w) => &w.pool,
        }
    }
}

/// `[pools.NAME]`: whom a pool's workers serve and the labels they carry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Tenant names; absent: only the tenant named like the pool (a pool
    /// never serves every tenant by default).
    pub tenants: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
            toml::from_str(text).map_err(|e| AuthError::Parse { path: path.display().to_string(), message: redacted(&e, text) })?;
        let bad = |message: String| Err(AuthError::Parse { path: path.display().to_string(), message });
        let workers = file.workers.iter().map(|(t, w)| (t, w.pool()));
        for (token, name) in file.tenants.iter().map(|(t, n)| (t, n.tenant())).chain(workers) {
            if token.len() < 16 {
                // Never echo the token itself.
                return bad(format!("a token for {name:?} is shorter than 16 characters"));
            }
            if !valid_namespace(name) {
                return bad(format!("name {name:?}: use 1-64 characters from [A-Za-z0-9._-]"));
            }
        }
        for t in file.tenants.values() {
            if !valid_token_name(t.name()) {
                return bad(format!("the name {:?} of a token of tenant {:?}: use 1-64 characters from [A-Za-z0-9._@ -]", t.name(), t.tenant()));
            }
        }
        if let Some(t) = file.tenants.keys().find(|t| file.workers.contains_key(*t)) {
            let name = file.tenants[t].tenant();
            return bad(format!("tenant {name:?}'s token is also a worker token"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for w in file.workers.values() {
            if let WorkerToken::Worker(w) = w {
                if !valid_namespace(&w.id) {
                    return bad(format!("[workers] id {:?}: use 1-64 characters from [A-Za-z0-9._-]", w.id));
                }
                if !ids.insert(w.id.as_str()) {
                    return bad(format!("[workers] id {:?} is given to two tokens", w.id));
                }
            }
        }
        let tenant_names: std::collections::BTreeSet<&str> = file.tenants.values().map(TenantToken::tenant).collect();
        for (pool, cfg) in &file.pools {
            for t in cfg.tenants.iter().flatten() {
                if !tenant_names.contains(t.as_str()) {
                    return bad(format!("[pools.{pool}] tenants: {t:?} is not a tenant of [tenants]"));
                }
            }
        }
        Ok(file)
    }

    /// What a worker token grants: its pool's tenants, its identity, and
    /// the pool's labels overlaid with its own.
    pub fn grant(&self, worker: &WorkerToken) -> WorkerGrant {
        let pool = worker.pool().to_owned();
        let cfg = self.pools.get(&pool).cloned().unwrap_or_default();
        let tenants = cfg.tenants.unwrap_or_else(|| vec![pool.clone()]).into_iter().collect();
        let mut labels = cfg.labels;
        let id = match worker {
            WorkerToken::Pool(_) => None,
            WorkerToken::Worker(w) => {
                labels.extend(w.labels.clone());
                Some(w.id.clone())
            }
        };
        WorkerGrant { pool, id, labels, tenants }
    }

    /// The command that makes the replicated token table exactly this
    /// file (by hash): tokens no longer in it are revoked.
    pub fn command(&self, now_ms: u64) -> Command {
        let tenants = self.tenants.iter().map(|(t, n)| (t, Principal::Tenant(n.tenant().to_owned())));
        let workers = self.workers.iter().map(|(t, w)| (t, Principal::BoundWorker(self.grant(w))));
        let tokens = tenants.chain(workers).map(|(t, principal)| (token_hash(t), principal)).collect();
        let names = self.tenants.iter().map(|(t, n)| (token_hash(t), n.name().to_owned())).collect();
        Command::SetTokens { tokens, now_ms, names }
    }
}

/// A TOML error without the source excerpt `toml` prints (that line may be
/// a token) and with any long backquoted part (`duplicate key `...``) cut:
/// the line and column, and what is wrong.
fn redacted(e: &toml::de::Error, text: &str) -> String {
    let mut message = String::new();
    for (i, part) in e.message().split('`').enumerate() {
        if i % 2 == 1 {
            message.push('`');
            message.push_str(if part.len() >= 16 { "<redacted>" } else { part });
            message.push('`');
        } else {
            message.push_str(part);
        }
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A token's name: shown in pages, so printable and short.
fn valid_token_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b' '))
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

    /// Makes the token file the state's token table: its tokens are
    /// accepted, every other one is revoked (on every node, through the
    /// replicated command).
    pub async fn install(&self, file: &TokenFile) -> Result<(), AuthError> {
        self.state.apply(file.command(crate::state::now_ms())).await?;
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
        query(&*self.state, |m| match m.principal(&hash) {
            Some(p) => Ok(p.clone()),
            None if m.token_revoked(&hash) => Err(Status::unauthenticated(REVOKED)),
            None => Err(Status::unauthenticated("unknown token")),
        })
    }

    /// [`Self::principal`] and the [`Credential`] it was presented with.
    fn authenticate<T>(&self, req: &Request<T>) -> Result<(Principal, Credential), Status> {
        let p = self.principal(req)?;
        let token = req.metadata().get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        Ok((p, Credential(token_hash(token.unwrap_or_default().trim()))))
    }

    /// A tonic interceptor that refuses unknown tokens and rbk versions
    /// outside this coordinator's window, and attaches the caller's
    /// [`Principal`] to the request for the handlers.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let auth = self.clone();
        move |mut req: Request<()>| {
            let (p, credential) = auth.authenticate(&req)?;
            check_version(&req)?;
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(credential);
            Ok(req)
        }
    }
}

/// Refuses a caller whose `user-agent` names an rbk version this
/// coordinator does not serve (`rbk_proto::version::check`); a caller that
/// names none is served.
fn check_version<T>(req: &Request<T>) -> Result<(), Status> {
    use rbk_proto::version::{check, from_user_agent, Version};
    let Some(caller) = req.metadata().get("user-agent").and_then(|h| h.to_str().ok()).and_then(from_user_agent) else {
        return Ok(());
    };
    check(caller, Version::own()).map_err(|skew| {
        tracing::warn!(%caller, "refused a caller outside the version-skew window");
        Status::failed_precondition(skew.to_string())
    })
}

/// What a revoked token is told, on the leader and on followers alike.
pub const REVOKED: &str = "token revoked (removed from the coordinator's token file)";

/// Whether `status` is a refusal that no other node would answer
/// differently (a revoked token), so a follower says it itself rather
/// than "retry".
pub fn is_final_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::Unauthenticated && status.message() == REVOKED
}

/// The caller's tenant namespace, or refusal for workers.
pub fn tenant_of<T>(req: &Request<T>) -> Result<String, Status> {
    match req.extensions().get::<Principal>() {
        Some(Principal::Tenant(ns)) => Ok(ns.clone()),
        Some(Principal::Worker(_) | Principal::BoundWorker(_)) => Err(Status::permission_denied("worker tokens cannot use the build service")),
        Some(Principal::Revoked { .. }) => Err(Status::unauthenticated(REVOKED)),
        None => Err(Status::unauthenticated("request was not authenticated")),
    }
}

/// The blake3 hash of the token a request was authenticated with: tells
/// apart two sessions presenting the same worker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(pub String);

/// The caller's worker grant, or refusal for tenants.
pub fn worker_pool_of<T>(req: &Request<T>) -> Result<WorkerGrant, Status> {
    match req.extensions().get::<Principal>() {
        Some(Principal::BoundWorker(grant)) => Ok(grant.clone()),
        Some(Principal::Worker(pool)) => Ok(WorkerGrant { pool: pool.clone(), id: None, labels: Default::default(), tenants: Default::default() }),
        Some(Principal::Tenant(_)) => Err(Status::permission_denied("tenant tokens cannot serve as workers")),
        Some(Principal::Revoked { .. }) => Err(Status::unauthenticated(REVOKED)),
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
        let Principal::BoundWorker(grant) = a.principal(&request(Some("wwwwwwwwwwwwwwww-token"))).unwrap() else { panic!("not a worker") };
        assert_eq!(grant.pool, "pool");
    }

    fn grant_of(file: &str, token: &str) -> WorkerGrant {
        let f = TokenFile::parse(file, Path::new("tokens.toml")).unwrap();
        f.grant(&f.workers[token])
    }

    #[test]
    fn a_pool_serves_only_the_tenant_named_like_it_unless_it_lists_its_tenants() {
        let g = grant_of(FILE, "wwwwwwwwwwwwwwww-token");
        assert_eq!(g.tenants, ["pool".to_string()].into(), "no [pools.pool]: only a tenant named pool");
        let listed = format!("{FILE}[pools.pool]\ntenants = [\"team-a\"]\n");
        assert_eq!(grant_of(&listed, "wwwwwwwwwwwwwwww-token").tenants, ["team-a".to_string()].into());
    }

    #[test]
    fn a_worker_token_fixes_the_workers_id_and_labels() {
        let file = "[tenants]\n\"aaaaaaaaaaaaaaaa-token\" = \"team-a\"\n\
                    [workers]\n\"wwwwwwwwwwwwwwww-w1\" = { pool = \"gpu\", id = \"w1\", labels = { slot = \"1\" } }\n\
                    [pools.gpu]\ntenants = [\"team-a\"]\nlabels = { gpu = \"a100\", slot = \"0\" }\n";
        let g = grant_of(file, "wwwwwwwwwwwwwwww-w1");
        assert_eq!(g.id.as_deref(), Some("w1"));
        let labels: BTreeMap<String, String> = [("gpu", "a100"), ("slot", "1")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        assert_eq!(g.labels, labels, "the pool's labels overlaid with the worker's own");
    }

    #[test]
    fn a_pool_listing_an_unknown_tenant_or_two_tokens_for_one_id_are_refused_naming_the_key() {
        let e = TokenFile::parse(&format!("{FILE}[pools.pool]\ntenants = [\"team-z\"]\n"), Path::new("t.toml")).unwrap_err();
        assert_eq!(e.to_string(), "token file t.toml: [pools.pool] tenants: \"team-z\" is not a tenant of [tenants]");
        let twice = "[workers]\n\"wwwwwwwwwwwwwwww-1\" = { pool = \"p\", id = \"w\" }\n\"wwwwwwwwwwwwwwww-2\" = { pool = \"p\", id = \"w\" }\n";
        let e = TokenFile::parse(twice, Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("[workers] id \"w\" is given to two tokens"), "{e}");
    }

    #[tokio::test]
    async fn missing_and_unknown_tokens_are_refused() {
        let a = auth().await;
        assert_eq!(a.principal(&request(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(a.principal(&request(Some("nope-nope-nope-nope"))).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_tenant_token_may_carry_a_name_which_the_state_keeps_by_the_tokens_hash() {
        let file = "[tenants]\n\"aaaaaaaaaaaaaaaa-token\" = \"team-a\"\n\"cccccccccccccccc-token\" = { tenant = \"team-a\", name = \"ci bot\" }\n";
        let f = TokenFile::parse(file, Path::new("t.toml")).unwrap();
        let Command::SetTokens { tokens, names, .. } = f.command(0) else { panic!("not SetTokens") };
        let ci = token_hash("cccccccccccccccc-token");
        assert_eq!(tokens.get(&ci), Some(&Principal::Tenant("team-a".into())));
        assert_eq!(names.get(&ci).map(String::as_str), Some("ci bot"));
        assert_eq!(names.get(&token_hash("aaaaaaaaaaaaaaaa-token")).map(String::as_str), Some("team-a"), "unnamed: the tenant's name");
        assert!(!format!("{names:?}").contains("cccccccccccccccc"), "names are keyed by hash");
    }

    #[test]
    fn a_token_name_that_is_empty_or_has_markup_is_refused_naming_the_tenant() {
        let file = "[tenants]\n\"cccccccccccccccc-token\" = { tenant = \"team-a\", name = \"<b>\" }\n";
        let e = TokenFile::parse(file, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("\"<b>\"") && e.contains("team-a") && !e.contains("cccccccccccccccc"), "{e}");
    }

    #[test]
    fn state_holds_hashes_not_tokens() {
        let f = TokenFile::parse(FILE, Path::new("tokens.toml")).unwrap();
        let text = format!("{:?}", f.command(0));
        assert!(!text.contains("aaaaaaaaaaaaaaaa-token"));
    }

    #[tokio::test]
    async fn a_token_removed_from_the_file_is_refused_as_revoked_once_the_file_is_installed_again() {
        let a = auth().await;
        let without_a = "[workers]\n\"wwwwwwwwwwwwwwww-token\" = \"pool\"\n";
        a.install(&TokenFile::parse(without_a, Path::new("tokens.toml")).unwrap()).await.unwrap();
        let refused = a.principal(&request(Some("aaaaaaaaaaaaaaaa-token"))).unwrap_err();
        assert!(is_final_refusal(&refused), "{refused:?}");
        assert!(a.principal(&request(Some("wwwwwwwwwwwwwwww-token"))).is_ok());
    }

    #[test]
    fn a_token_file_error_never_shows_the_token() {
        let dup = "[tenants]\n\"aaaaaaaaaaaaaaaa-token\" = \"a\"\n\"aaaaaaaaaaaaaaaa-token\" = \"b\"\n";
        let e = TokenFile::parse(dup, Path::new("t.toml")).unwrap_err().to_string();
        assert!(!e.contains("aaaaaaaaaaaaaaaa"), "{e}");
        assert!(e.starts_with("token file t.toml: line 3"), "{e}");
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
