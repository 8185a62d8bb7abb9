//! The coordinator's config file (`rbk coordinator --config FILE`).
//!
//! ```toml
//! listen = "127.0.0.1:7070"
//! token_file = "tokens.toml"      # relative paths are relative to this file
//! token_reload_ms = 5000          # re-read the token file this often (and on
//!                                 # SIGHUP); 0: only on SIGHUP and restart
//! metrics_listen = "127.0.0.1:9464" # optional: Prometheus `GET /metrics` (docs/metrics.md)
//! [store]
//! dir = "/var/lib/rbk/store"      # filesystem store; or any rbk_store::StoreConfig:
//! # type = "s3"                    # bucket, endpoint, region, prefix, ...; credentials
//! # bucket = "rbk"                 # from RBK_S3_ACCESS_KEY_ID / AWS_* (never in the file)
//! [tls]                           # optional: serve https:// (else plain HTTP/2)
//! cert = "tls/tls.crt"            # PEM chain; relative to this file
//! key = "tls/tls.key"             # PEM private key
//! [redis]                         # optional: build events fan out to every node
//! url = "redis://127.0.0.1:6379"  # (default: the store's existence_cache redis_url)
//! [history]                      # kept in memory by the node running a build
//! builds = 100                    # builds whose logs and step times are kept
//! log_bytes_per_build = 1048576   # beyond it a build's oldest lines go
//! [scheduler]
//! heartbeat_ms = 5000
//! worker_timeout_ms = 30000
//! max_attempts = 3
//! readopt_grace_ms = 10000        # after a leader change: how long a step stays
//!                                 # on the worker running it, awaiting its return
//! [gc]                            # the store collector (docs/operations.md)
//! interval = "1h"                 # between runs on the leader; "off": on demand only
//! grace = "1h"                    # blobs written more recently are always kept
//! existence_ttl = "10m"           # the store's existence-cache TTL
//! batch = 1000                    # blobs fenced and deleted together
//! [eviction]                      # per-tenant budgets (docs/operations.md)
//! keep_duration = "14d"           # heads unused this long are dropped; "off"
//! heads_bytes = "20GiB"           # default budget: cache heads of a tenant
//! actions_bytes = "50GiB"         # default budget: its action-cache results
//! [eviction.tenants.big-team]     # a tenant's own budget (unset: the default)
//! heads_bytes = "100GiB"
//! [registries]                    # the farm pulls and pushes (crate::registries)
//! auth_dir = "registry-auth"      # <tenant>.json docker configs; relative to this file
//! insecure = ["registry.internal:5000"]
//! [admin]                         # optional: the Admin service (`rbk store gc`)
//! token_file = "admin-token"      # one token, 16+ characters; relative to this file
//! [dashboard]                     # optional: the web dashboard (docs/dashboard.md)
//! listen = "127.0.0.1:7080"       # HTTP(S): over [tls] when that is set
//! # secure_cookies = true          # default: whether [tls] is set; true behind
//!                                 # an ingress or proxy that ends TLS
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::scheduler::SchedulerConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    /// How often the token file is re-read (it is also re-read on SIGHUP);
    /// 0: only on SIGHUP and at start. See [`crate::token_reload`].
    #[serde(default = "default_token_reload_ms")]
    pub token_reload_ms: u64,
    pub store: StoreSection,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// Where Prometheus scrapes `GET /metrics` (plain HTTP, no token);
    /// absent: no metrics endpoint. See docs/metrics.md.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Replication; see [`crate::raft_config`].
    #[serde(default)]
    pub raft: Option<crate::raft_config::RaftConfig>,
    /// Serve the gRPC port over TLS; absent: plain HTTP/2 (TLS ends at a
    /// proxy or ingress, or a trusted network).
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Redis for fanning build events out to every node (see
    /// [`crate::redis_fanout::RedisSection`]); absent: the store's
    /// existence-cache Redis, if it has one.
    #[serde(default)]
    pub redis: Option<crate::redis_fanout::RedisSection>,
    /// What is kept of finished builds for `rbk builds logs|inspect`
    /// beyond the replicated state (see [`crate::build_history`]).
    #[serde(default)]
    pub history: crate::build_history::HistoryLimits,
    /// The gRPC server's connection limits; see [`crate::server_limits`].
    #[serde(default)]
    pub server: crate::server_limits::ServerLimits,
    /// The store collector; see [`GcSection`].
    #[serde(default)]
    pub gc: GcSection,
    /// Per-tenant budgets; see [`EvictionSection`].
    #[serde(default)]
    pub eviction: EvictionSection,
    /// The Admin service; absent: it refuses every call.
    #[serde(default)]
    pub admin: Option<AdminSection>,
    /// Registries the farm pulls from and pushes to; see
    /// [`crate::registries`].
    #[serde(default)]
    pub registries: crate::registries::RegistriesSection,
    /// The web dashboard; absent: not served.
    #[serde(default)]
    pub dashboard: Option<DashboardSection>,
}

/// `[dashboard]`: where the web dashboard listens (crate `rbk-dashboard`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DashboardSection {
    pub listen: SocketAddr,
    /// Whether the session cookie is `Secure` (sent over HTTPS only);
    /// default: whether `[tls]` is set.
    #[serde(default)]
    pub secure_cookies: Option<bool>,
}

fn default_token_reload_ms() -> u64 {
    5000
}

/// `[gc]`: when and how carefully the leader collects the store.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GcSection {
    /// `"<n>s|m|h|d"` or `"off"`.
    pub interval: String,
    pub grace: String,
    pub existence_ttl: String,
    pub batch: usize,
}

impl Default for GcSection {
    fn default() -> Self {
        Self { interval: "1h".into(), grace: "1h".into(), existence_ttl: "10m".into(), batch: 1000 }
    }
}

impl GcSection {
    /// The collector's config, or the key that is wrong and why.
    pub fn collector_config(&self) -> Result<crate::collector::GcConfig, String> {
        let interval = match self.interval.as_str() {
            "off" | "0" => None,
            s => Some(parse_duration(s).map_err(|e| format!("gc.interval: {e}"))?),
        };
        let grace = parse_duration(&self.grace).map_err(|e| format!("gc.grace: {e}"))?;
        let existence_ttl = parse_duration(&self.existence_ttl).map_err(|e| format!("gc.existence_ttl: {e}"))?;
        if grace < existence_ttl {
            return Err(format!(
                "gc.grace ({}) must be at least gc.existence_ttl ({}): a blob a cached \"present\" answer vouches for must not be young enough to be collected unseen",
                self.grace, self.existence_ttl
            ));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err("gc.batch: between 1 and 10000".into());
        }
        Ok(crate::collector::GcConfig { interval, grace, existence_ttl, batch: self.batch })
    }
}

/// `[eviction]`: what each tenant may keep (sizes like `"10GiB"`; unset:
/// unbounded), applied by the leader before each store collection.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionSection {
    /// `"<n>s|m|h|d"` or `"off"`.
    pub keep_duration: Option<String>,
    pub heads_bytes: Option<String>,
    pub actions_bytes: Option<String>,
    /// Budgets of named tenants; a key left unset takes the default.
    pub tenants: std::collections::BTreeMap<String, BudgetSection>,
}

/// `[eviction.tenants.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub heads_bytes: Option<String>,
    pub actions_bytes: Option<String>,
}

impl EvictionSection {
    /// The policy, or the key that is wrong and why.
    pub fn policy(&self) -> Result<crate::eviction::EvictionPolicy, String> {
        use crate::eviction::{Budget, EvictionPolicy, parse_bytes};
        let bytes = |v: &Option<String>, key: &str| v.as_deref().map(parse_bytes).transpose().map_err(|e| format!("{key}: {e}"));
        let keep_duration = match self.keep_duration.as_deref() {
            None | Some("off") => None,
            Some(s) => Some(parse_duration(s).map_err(|e| format!("eviction.keep_duration: {e}"))?),
        };
        let default = Budget { heads_bytes: bytes(&self.heads_bytes, "eviction.heads_bytes")?, actions_bytes: bytes(&self.actions_bytes, "eviction.actions_bytes")? };
        let mut tenants = std::collections::BTreeMap::new();
        for (name, b) in &self.tenants {
            let heads = bytes(&b.heads_bytes, &format!("eviction.tenants.{name}.heads_bytes"))?;
            let actions = bytes(&b.actions_bytes, &format!("eviction.tenants.{name}.actions_bytes"))?;
            tenants.insert(name.clone(), Budget { heads_bytes: heads.or(default.heads_bytes), actions_bytes: actions.or(default.actions_bytes) });
        }
        Ok(EvictionPolicy { keep_duration, default, tenants })
    }
}

/// `"<n>s|m|h|d"` as a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number followed by s, m, h or d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: expected a number followed by s, m, h or d")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

/// `[admin]`: who may call the Admin service.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub token_file: PathBuf,
}

/// `[tls]`: the coordinator's certificate and key (PEM files, for example
/// a cert-manager Secret's `tls.crt` / `tls.key`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsSection {
    /// The server's TLS config, reading both files (errors name the file).
    pub fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig, ConfigError> {
        let read = |p: &Path| {
            let pem = std::fs::read(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
                return Err(ConfigError::Invalid { path: p.display().to_string(), message: "tls: not a PEM file".into() });
            }
            Ok(pem)
        };
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
    }
}

/// `[store]`: either `dir = "..."` (a plain filesystem store, the
/// original form) or any stack the store crate's config describes
/// (`type = "s3"`, `"verify"`, `"existence_cache"`, ...; see
/// `rbk_store::StoreConfig`), credentials from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSection {
    pub config: rbk_store::StoreConfig,
}

impl<'de> Deserialize<'de> for StoreSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = toml::Value::deserialize(d)?;
        let t = v.as_table().ok_or_else(|| D::Error::custom("store: expected a table"))?;
        if t.contains_key("type") {
            let config = rbk_store::StoreConfig::deserialize(v).map_err(|e| D::Error::custom(format!("store: {e}")))?;
            return Ok(StoreSection { config });
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Dir {
            dir: PathBuf,
        }
        let Dir { dir } = Dir::deserialize(v)
            .map_err(|e| D::Error::custom(format!("store: {e} (give `dir = ...`, or `type = ...` with the store's keys)")))?;
        Ok(StoreSection { config: rbk_store::StoreConfig::Filesystem { path: dir } })
    }
}

impl StoreSection {
    /// The `[store]` table of any rbk TOML file — a coordinator's config
    /// (`dir = ...` or a full stack) or a worker's store file — with paths
    /// relative to the file resolved, as the coordinator itself reads it
    /// (`rbk store selftest --config` tests exactly that store).
    pub fn load(path: &Path) -> Result<rbk_store::StoreConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        #[derive(Deserialize)]
        struct File {
            store: Option<StoreSection>,
        }
        let file: File = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut section = file.store.ok_or_else(|| invalid("no [store] table".into()))?;
        section.resolve(path.parent().unwrap_or(Path::new(".")));
        Ok(section.config)
    }

    /// Makes filesystem paths relative to `base` (the config file's dir).
    fn resolve(&mut self, base: &Path) {
        fn walk(c: &mut rbk_store::StoreConfig, base: &Path) {
            use rbk_store::StoreConfig as S;
            match c {
                S::Filesystem { path } => *path = base.join(&*path),
                S::S3(_) => {}
                S::Compress { inner, .. } | S::Verify { inner } | S::ExistenceCache { inner, .. } => walk(inner, base),
            }
        }
        walk(&mut self.config, base);
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    pub heartbeat_ms: u64,
    pub worker_timeout_ms: u64,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub readopt_grace_ms: u64,
    /// See [`SchedulerConfig::server_action_keys`].
    pub server_action_keys: bool,
    /// See [`SchedulerConfig::unschedulable_timeout`].
    pub unschedulable_timeout_ms: u64,
    /// See [`SchedulerConfig::max_builds_per_tenant`].
    pub max_builds_per_tenant: usize,
    /// See [`SchedulerConfig::max_steps_per_tenant`].
    pub max_steps_per_tenant: usize,
    /// See [`SchedulerConfig::max_step_log_bytes`].
    pub max_step_log_bytes: u64,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        let d = SchedulerConfig::default();
        Self {
            heartbeat_ms: d.heartbeat_interval.as_millis() as u64,
            worker_timeout_ms: d.worker_timeout.as_millis() as u64,
            max_attempts: d.max_attempts,
            lease_ttl_ms: d.lease_ttl.as_millis() as u64,
            readopt_grace_ms: d.readopt_grace.as_millis() as u64,
            server_action_keys: d.server_action_keys,
            unschedulable_timeout_ms: d.unschedulable_timeout.as_millis() as u64,
            max_builds_per_tenant: d.max_builds_per_tenant,
            max_steps_per_tenant: d.max_steps_per_tenant,
            max_step_log_bytes: d.max_step_log_bytes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading coordinator config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("coordinator config {path}: {message}")]
    Invalid { path: String, message: String },
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path`; relative paths in it are
    /// resolved against `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.display().to_string(), message };
        let mut c: CoordinatorConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let s = &c.scheduler;
        if s.heartbeat_ms == 0 || s.worker_timeout_ms <= s.heartbeat_ms {
            return Err(invalid("scheduler.worker_timeout_ms must exceed scheduler.heartbeat_ms (> 0)".into()));
        }
        if s.max_attempts == 0 {
            return Err(invalid("scheduler.max_attempts must be at least 1".into()));
        }
        c.server.validate().map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.token_file = base.join(&c.token_file);
        c.store.resolve(base);
        c.registries.resolve_paths(base);
        if let Some(t) = &mut c.tls {
            t.cert = base.join(&t.cert);
            t.key = base.join(&t.key);
        }
        if let Some(r) = &mut c.raft {
            r.resolve(base).map_err(invalid)?;
        }
        c.gc.collector_config().map_err(invalid)?;
        c.eviction.policy().map_err(invalid)?;
        if let Some(a) = &mut c.admin {
            a.token_file = base.join(&a.token_file);
        }
        Ok(c)
    }

    /// The periodic re-read of the token file; `None`: only on SIGHUP.
    pub fn token_reload(&self) -> Option<Duration> {
        (self.token_reload_ms > 0).then(|| Duration::from_millis(self.token_reload_ms))
    }

    pub fn scheduler_config(&self) -> SchedulerConfig {
        let s = &self.scheduler;
        SchedulerConfig {
            heartbeat_interval: Duration::from_millis(s.heartbeat_ms),
            worker_timeout: Duration::from_millis(s.worker_timeout_ms),
            max_attempts: s.max_attempts,
            lease_ttl: Duration::from_millis(s.lease_ttl_ms),
            readopt_grace: Duration::from_millis(s.readopt_grace_ms),
            server_action_keys: s.server_action_keys,
            unschedulable_timeout: Duration::from_millis(s.unschedulable_timeout_ms),
            max_builds_per_tenant: s.max_builds_per_tenant,
            max_steps_per_tenant: s.max_steps_per_tenant,
            max_step_log_bytes: s.max_step_log_bytes,
            ..SchedulerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let c = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:7070\"\ntoken_file = \"tokens.toml\"\n[store]\ndir = \"store\"\n",
            Path::new("/etc/rbk/coordinator.toml"),
        )
        .unwrap();
        assert_eq!(c.token_file, Path::new("/etc/rbk/tokens.toml"));
        assert_eq!(c.store.config, rbk_store::StoreConfig::Filesystem { path: "/etc/rbk/store".into() });
        assert_eq!(c.scheduler.max_attempts, 3);
    }

    #[test]
    fn the_store_section_takes_a_full_store_stack() {
        let c = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:7070\"\ntoken_file = \"t\"\n[store]\ntype = \"verify\"\n[store.inner]\ntype = \"s3\"\nbucket = \"rbk\"\nendpoint = \"http://127.0.0.1:9000\"\n",
            Path::new("/etc/rbk/c.toml"),
        )
        .unwrap();
        assert_eq!(c.store.config.describe(), "verify > s3(rbk)");
    }

    #[test]
    fn a_bad_store_section_names_the_key() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:7070\"\ntoken_file = \"t\"\n[store]\ndirectory = \"s\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_file_and_key() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:7070\"\ntoken_file = \"t\"\nlisten_addr = 1\n[store]\ndir = \"s\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("coordinator config c.toml:") && msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn the_dashboard_is_off_unless_its_section_names_an_address() {
        let base = "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n";
        assert_eq!(CoordinatorConfig::parse(base, Path::new("/c.toml")).unwrap().dashboard, None);
        let on = CoordinatorConfig::parse(&format!("{base}[dashboard]\nlisten = \"127.0.0.1:7080\"\n"), Path::new("/c.toml")).unwrap();
        assert_eq!(on.dashboard, Some(DashboardSection { listen: "127.0.0.1:7080".parse().unwrap(), secure_cookies: None }));
        let bad = CoordinatorConfig::parse(&format!("{base}[dashboard]\nlisten = \"nowhere\"\n"), Path::new("/c.toml")).unwrap_err();
        assert!(bad.to_string().contains("/c.toml") && bad.to_string().contains("listen"), "{bad}");
    }

    #[test]
    fn metrics_listen_is_optional_and_must_be_an_address() {
        let base = "listen = \"127.0.0.1:7070\"\ntoken_file = \"t\"\n";
        let without = CoordinatorConfig::parse(&format!("{base}[store]\ndir = \"s\"\n"), Path::new("c.toml")).unwrap();
        assert_eq!(without.metrics_listen, None);
        let with = CoordinatorConfig::parse(
            &format!("{base}metrics_listen = \"0.0.0.0:9464\"\n[store]\ndir = \"s\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(with.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        let bad = CoordinatorConfig::parse(&format!("{base}metrics_listen = \"9464\"\n[store]\ndir = \"s\"\n"), Path::new("c.toml"))
            .unwrap_err();
        assert!(bad.to_string().contains("metrics_listen"), "{bad}");
    }

    #[test]
    fn tls_is_optional_and_its_paths_resolve_against_the_config_file() {
        let base = "listen = \"127.0.0.1:7070\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n";
        assert_eq!(CoordinatorConfig::parse(base, Path::new("/etc/rbk/c.toml")).unwrap().tls, None);
        let c = CoordinatorConfig::parse(&format!("{base}[tls]\ncert = \"tls/tls.crt\"\nkey = \"/keys/tls.key\"\n"), Path::new("/etc/rbk/c.toml"))
            .unwrap();
        assert_eq!(c.tls, Some(TlsSection { cert: "/etc/rbk/tls/tls.crt".into(), key: "/keys/tls.key".into() }));
    }

    #[test]
    fn a_missing_tls_cert_is_named() {
        let t = TlsSection { cert: "/nonexistent/rbk/tls.crt".into(), key: "/nonexistent/rbk/tls.key".into() };
        let e = t.server_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/rbk/tls.crt"), "{e}");
    }

    #[test]
    fn a_timeout_shorter_than_the_heartbeat_is_refused() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[scheduler]\nheartbeat_ms = 100\nworker_timeout_ms = 50\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("worker_timeout_ms"), "{e}");
    }

    #[test]
    fn history_limits_default_and_can_be_set() {
        let parse = |extra: &str| {
            let text = format!("listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n{extra}");
            CoordinatorConfig::parse(&text, Path::new("c.toml")).map(|c| c.history)
        };
        assert_eq!(parse("").unwrap(), crate::build_history::HistoryLimits::default());
        let set = parse("[history]\nbuilds = 5\n").unwrap();
        assert_eq!((set.builds, set.log_bytes_per_build), (5, 1 << 20));
        let e = parse("[history]\nlines = 5\n").unwrap_err().to_string();
        assert!(e.contains("lines"), "{e}");
    }

    #[test]
    fn gc_defaults_to_hourly_runs_with_an_hour_of_grace() {
        let c = CoordinatorConfig::parse("listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n", Path::new("c.toml")).unwrap();
        let g = c.gc.collector_config().unwrap();
        assert_eq!((g.interval, g.grace, g.existence_ttl), (Some(Duration::from_secs(3600)), Duration::from_secs(3600), Duration::from_secs(600)));
    }

    #[test]
    fn a_gc_grace_shorter_than_the_existence_ttl_is_refused_naming_both_keys() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[gc]\ninterval = \"off\"\ngrace = \"1m\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("coordinator config c.toml:") && e.contains("gc.grace") && e.contains("gc.existence_ttl"), "{e}");
    }

    #[test]
    fn eviction_budgets_default_per_tenant_and_a_named_tenant_overrides_only_what_it_sets() {
        let c = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[eviction]\nkeep_duration = \"7d\"\nheads_bytes = \"1GiB\"\nactions_bytes = \"500MB\"\n[eviction.tenants.big]\nheads_bytes = \"2GiB\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let p = c.eviction.policy().unwrap();
        assert_eq!(p.keep_duration, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!((p.budget("small").heads_bytes, p.budget("small").actions_bytes), (Some(1 << 30), Some(500_000_000)));
        assert_eq!((p.budget("big").heads_bytes, p.budget("big").actions_bytes), (Some(2 << 30), Some(500_000_000)));
    }

    #[test]
    fn a_bad_budget_is_named_with_its_tenant() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[eviction.tenants.big]\nactions_bytes = \"lots\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("eviction.tenants.big.actions_bytes") && e.contains("lots"), "{e}");
    }

    #[test]
    fn a_bad_gc_interval_is_named() {
        let e = CoordinatorConfig::parse(
            "listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[gc]\ninterval = \"hourly\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gc.interval") && e.contains("hourly"), "{e}");
    }

    #[test]
    fn the_readopt_grace_period_defaults_to_ten_seconds_and_can_be_set() {
        let parse = |extra: &str| {
            let text = format!("listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n[store]\ndir = \"s\"\n[scheduler]\n{extra}");
            CoordinatorConfig::parse(&text, Path::new("c.toml")).unwrap().scheduler_config().readopt_grace
        };
        assert_eq!(parse(""), Duration::from_secs(10));
        assert_eq!(parse("readopt_grace_ms = 2500\n"), Duration::from_millis(2500));
    }
}
