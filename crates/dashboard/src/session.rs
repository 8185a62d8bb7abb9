//! Sign-in: a token is exchanged once (`POST /login`) for a session
//! cookie; the token itself never reaches the browser again.
//!
//! The cookie is HttpOnly (scripts cannot read it), SameSite=Strict (no
//! other site's page can make the browser send it) and Secure when the
//! dashboard is served over TLS. The session remembers the token's hash,
//! and every request checks it against the replicated token table as the
//! gRPC interceptor does, so a token removed from the token file ends its
//! sessions at once. Sessions are bounded in number and lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rbk_coordinator::auth::token_hash;
use rbk_coordinator::state::{CoordinatorState, Principal, query};

use crate::error::DashboardError;

/// The cookie's name.
pub const COOKIE: &str = "rbk_session";
/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// What a session may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A tenant: its own builds, logs and caches, and the workers serving it.
    Tenant(String),
    /// The operator (the `[admin]` token): workers and the cluster.
    Operator,
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// The token for the prune form (compared in constant time).
    pub csrf: String,
    token_hash: String,
    created: Instant,
}

impl Session {
    /// The tenant's namespace, or refusal for the operator.
    pub fn tenant(&self) -> Result<&str, DashboardError> {
        match &self.role {
            Role::Tenant(ns) => Ok(ns),
            Role::Operator => Err(DashboardError::Forbidden("this page shows a tenant's builds and caches: sign in with a tenant token".into())),
        }
    }

    /// Refusal unless the operator.
    pub fn operator(&self) -> Result<(), DashboardError> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Tenant(_) => Err(DashboardError::Forbidden("the cluster page is for operators: sign in with the operator ([admin]) token".into())),
        }
    }

    /// Whether `given` is this session's CSRF token.
    pub fn csrf_matches(&self, given: &str) -> bool {
        let (a, b) = (blake3::hash(self.csrf.as_bytes()), blake3::hash(given.as_bytes()));
        a == b // blake3::Hash compares in constant time
    }
}

/// The signed-in sessions of this dashboard (in memory: a restart signs
/// everyone out). Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    state: Arc<dyn CoordinatorState>,
    /// The operator token's hash, when `[admin]` is configured.
    operator_hash: Option<String>,
    /// By the blake3 hash of the cookie value.
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    pub fn new(state: Arc<dyn CoordinatorState>, operator_token: Option<&str>) -> Self {
        Self { state, operator_hash: operator_token.map(|t| token_hash(t.trim())), inner: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who `token` is, with the gRPC API's rules: a tenant, the operator,
    /// or a clear refusal (unknown, revoked, a worker's).
    fn role_of(&self, hash: &str) -> Result<Role, String> {
        if self.operator_hash.as_deref() == Some(hash) {
            return Ok(Role::Operator);
        }
        query(&*self.state, |m| match m.principal(hash) {
            Some(Principal::Tenant(ns)) => Ok(Role::Tenant(ns.clone())),
            Some(Principal::Worker(_) | Principal::BoundWorker(_)) => Err("worker tokens cannot sign in to the dashboard".to_owned()),
            Some(Principal::Revoked { .. }) => Err(rbk_coordinator::auth::REVOKED.to_owned()),
            None if m.token_revoked(hash) => Err(rbk_coordinator::auth::REVOKED.to_owned()),
            None => Err("unknown token".to_owned()),
        })
    }

    /// Signs `token` in: the new cookie value and the session.
    pub fn sign_in(&self, token: &str) -> Result<(String, Session), String> {
        let hash = token_hash(token.trim());
        let role = self.role_of(&hash)?;
        let cookie = hex::encode(rand::random::<[u8; 32]>());
        let session = Session { role, csrf: hex::encode(rand::random::<[u8; 16]>()), token_hash: hash, created: Instant::now() };
        let mut inner = self.lock();
        if inner.len() >= MAX_SESSIONS {
            inner.retain(|_, s| s.created.elapsed() < LIFETIME);
        }
        if inner.len() >= MAX_SESSIONS
            && let Some(oldest) = inner.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone())
        {
            inner.remove(&oldest);
        }
        inner.insert(cookie_key(&cookie), session.clone());
        Ok((cookie, session))
    }

    /// Ends the session of `headers`' cookie, if any.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(c) = cookie_of(headers) {
            self.lock().remove(&cookie_key(&c));
        }
    }

    /// The live session of `headers`' cookie: not expired, and its token
    /// still names the same tenant (or is still the operator's).
    pub fn check(&self, headers: &HeaderMap) -> Result<Session, DashboardError> {
        let cookie = cookie_of(headers).ok_or(DashboardError::SignIn)?;
        let key = cookie_key(&cookie);
        let session = self.lock().get(&key).cloned().ok_or(DashboardError::SignIn)?;
        let still = session.created.elapsed() < LIFETIME && self.role_of(&session.token_hash).is_ok_and(|r| r == session.role);
        if !still {
            self.lock().remove(&key);
            return Err(DashboardError::SignIn);
        }
        Ok(session)
    }

    /// How many sessions are signed in.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn cookie_key(cookie: &str) -> String {
    blake3::hash(cookie.as_bytes()).to_hex().to_string()
}

/// The session cookie's value in a request's `Cookie` headers.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value for a new session (`secure`: HTTPS only).
pub fn set_cookie(value: &str, secure: bool) -> String {
    let max_age = LIFETIME.as_secs();
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}", if secure { "; Secure" } else { "" })
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbk_coordinator::{MemoryState, TokenFile};

    async fn sessions() -> Sessions {
        let state: Arc<dyn CoordinatorState> = Arc::new(MemoryState::new());
        let file = TokenFile::parse(
            "[tenants]\n\"tenant-a-token-0123456789\" = \"team-a\"\n[workers]\n\"worker-token-0123456789\" = \"pool\"\n[pools.pool]\ntenants = [\"team-a\"]\n",
            std::path::Path::new("tokens.toml"),
        )
        .unwrap();
        state.apply(file.command(1)).await.unwrap();
        Sessions::new(state, Some("operator-token-0123456789"))
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, format!("other=1; {COOKIE}={cookie}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_tenant_token_signs_in_as_its_tenant_and_the_cookie_finds_the_session() {
        let s = sessions().await;
        let (cookie, session) = s.sign_in("tenant-a-token-0123456789\n").unwrap();
        assert_eq!(session.role, Role::Tenant("team-a".into()));
        assert_eq!(s.check(&headers(&cookie)).unwrap().role, Role::Tenant("team-a".into()));
    }

    #[tokio::test]
    async fn the_operator_token_signs_in_as_operator() {
        let s = sessions().await;
        assert_eq!(s.sign_in("operator-token-0123456789").unwrap().1.role, Role::Operator);
    }

    #[tokio::test]
    async fn worker_and_unknown_tokens_are_refused_with_a_reason() {
        let s = sessions().await;
        assert!(s.sign_in("worker-token-0123456789").unwrap_err().contains("worker tokens"));
        assert_eq!(s.sign_in("nobody").unwrap_err(), "unknown token");
    }

    #[tokio::test]
    async fn a_made_up_cookie_is_not_a_session() {
        let s = sessions().await;
        s.sign_in("tenant-a-token-0123456789").unwrap();
        assert!(matches!(s.check(&headers("00ff")), Err(DashboardError::SignIn)));
        assert!(matches!(s.check(&HeaderMap::new()), Err(DashboardError::SignIn)));
    }

    #[tokio::test]
    async fn revoking_the_token_ends_its_sessions() {
        let s = sessions().await;
        let (cookie, _) = s.sign_in("tenant-a-token-0123456789").unwrap();
        let empty = TokenFile::parse("", std::path::Path::new("tokens.toml")).unwrap();
        s.state.apply(empty.command(2)).await.unwrap();
        assert!(matches!(s.check(&headers(&cookie)), Err(DashboardError::SignIn)));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn signing_out_ends_the_session() {
        let s = sessions().await;
        let (cookie, _) = s.sign_in("tenant-a-token-0123456789").unwrap();
        s.sign_out(&headers(&cookie));
        assert!(matches!(s.check(&headers(&cookie)), Err(DashboardError::SignIn)));
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict_and_secure_over_tls() {
        let c = set_cookie("v", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"), "{c}");
        assert!(!set_cookie("v", false).contains("Secure"));
    }

    #[tokio::test]
    async fn the_csrf_token_matches_only_itself() {
        let s = sessions().await;
        let (_, session) = s.sign_in("tenant-a-token-0123456789").unwrap();
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
    }
}
