//! A worker pool's sandbox policy, as an operator writes it (JSON, the
//! helm chart's `worker.policy` value, `rbk worker --policy FILE`): the
//! entitlements the pool allows, its per-step limits and log size. Every
//! field is optional; what is absent keeps the safe default (no
//! entitlements, no `CAP_NET_RAW`, [`crate::DEFAULT_POOL_LIMITS`], 2 MiB
//! of log).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::entitlements::Entitlement;
use crate::error::{Result, WorkerError};
use crate::execute::WorkerConfig;
use crate::step::Limits;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerPolicy {
    #[serde(default)]
    pub entitlements: Vec<Entitlement>,
    #[serde(default)]
    pub allow_net_raw: bool,
    /// Steps may make 32-bit x86 / x32 system calls (Docker allows them;
    /// rbk by default does not, see `crate::seccomp::for_capabilities`).
    #[serde(default)]
    pub compat_syscall_arches: bool,
    /// Each limit given replaces the default one.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log_limit_bytes: Option<u64>,
}

impl WorkerPolicy {
    /// Reads a policy file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read(path).map_err(|e| WorkerError::io(format!("reading worker policy {}", path.display()), e))?;
        serde_json::from_slice(&raw).map_err(|e| WorkerError::path(path, format!("worker policy: {e}")))
    }

    /// Applies the policy to `config`.
    pub fn apply(&self, config: &mut WorkerConfig) {
        config.entitlements = self.entitlements.clone();
        config.allow_net_raw = self.allow_net_raw;
        config.compat_syscall_arches = self.compat_syscall_arches;
        let l = &self.limits;
        config.limits.memory_bytes = l.memory_bytes.or(config.limits.memory_bytes);
        config.limits.pids = l.pids.or(config.limits.pids);
        config.limits.wall_time_ms = l.wall_time_ms.or(config.limits.wall_time_ms);
        if let Some(b) = self.log_limit_bytes {
            config.log_limit_bytes = b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_sets_entitlements_and_limits() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("policy.json");
        std::fs::write(&f, r#"{"entitlements": ["network.host"], "limits": {"memory_bytes": 1073741824}, "log_limit_bytes": 1048576}"#).unwrap();
        let mut c = WorkerConfig::new("/tmp/x", crate::RuntimeKind::Runc, "runc");
        WorkerPolicy::load(&f).unwrap().apply(&mut c);
        assert_eq!(c.entitlements, vec![Entitlement::NetworkHost]);
        assert_eq!(c.limits.memory_bytes, Some(1 << 30));
        assert_eq!(c.limits.pids, crate::DEFAULT_POOL_LIMITS.pids);
        assert_eq!(c.log_limit_bytes, 1 << 20);
    }

    #[test]
    fn compat_syscall_arches_is_off_unless_the_policy_turns_it_on() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("policy.json");
        let mut c = WorkerConfig::new("/tmp/x", crate::RuntimeKind::Runc, "runc");
        std::fs::write(&f, "{}").unwrap();
        WorkerPolicy::load(&f).unwrap().apply(&mut c);
        assert!(!c.compat_syscall_arches);
        std::fs::write(&f, r#"{"compat_syscall_arches": true}"#).unwrap();
        WorkerPolicy::load(&f).unwrap().apply(&mut c);
        assert!(c.compat_syscall_arches);
    }

    #[test]
    fn unknown_entitlement_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("policy.json");
        std::fs::write(&f, r#"{"entitlements": ["network.everything"]}"#).unwrap();
        let e = WorkerPolicy::load(&f).unwrap_err().to_string();
        assert!(e.contains("policy.json") && e.contains("network.everything"), "{e}");
    }
}
