//! Entitlements: what a RUN step may only do when both the worker pool's
//! policy allows it and the build asked for it (`--allow`, the spelling of
//! `docker buildx build --allow`), as in BuildKit. A step that needs one it
//! was not granted fails before anything of it runs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::step::{Network, RunStep, Security};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Entitlement {
    /// `RUN --network=host`: the worker's own network namespace (its
    /// loopback, its services, everyone's traffic on it).
    #[serde(rename = "network.host")]
    NetworkHost,
    /// `RUN --security=insecure`: every capability, no seccomp, no masked
    /// paths, writable `/sys`: root on the worker host.
    #[serde(rename = "security.insecure")]
    SecurityInsecure,
}

impl Entitlement {
    pub const ALL: [Entitlement; 2] = [Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    pub fn name(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }

    /// The Dockerfile flag that asks for it.
    pub fn flag(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "--network=host",
            Entitlement::SecurityInsecure => "--security=insecure",
        }
    }
}

impl fmt::Display for Entitlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Entitlement {
    type Err = UnknownEntitlement;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Entitlement::ALL.into_iter().find(|e| e.name() == s).ok_or_else(|| UnknownEntitlement(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0:?} (known: network.host, security.insecure)")]
pub struct UnknownEntitlement(pub String);

/// The entitlements `run` needs.
pub fn required(run: &RunStep) -> Vec<Entitlement> {
    let mut out = Vec::new();
    if run.network == Network::Host {
        out.push(Entitlement::NetworkHost);
    }
    if run.security == Security::Insecure {
        out.push(Entitlement::SecurityInsecure);
    }
    out
}

/// Why a step may not have `e`: `None` when both the pool's policy and the
/// build's `--allow` grant it.
pub fn refusal(e: Entitlement, pool: &[Entitlement], build: &[Entitlement]) -> Option<String> {
    match (pool.contains(&e), build.contains(&e)) {
        (true, true) => None,
        (false, _) => Some(format!("RUN {} needs the entitlement {e}, which this worker pool's policy does not allow", e.flag())),
        (true, false) => Some(format!("RUN {} needs the entitlement {e}; run the build with --allow {e}", e.flag())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for e in Entitlement::ALL {
            assert_eq!(e.name().parse::<Entitlement>().unwrap(), e);
        }
        assert!("network.none".parse::<Entitlement>().is_err());
    }

    #[test]
    fn both_pool_and_build_must_grant() {
        let e = Entitlement::NetworkHost;
        assert!(refusal(e, &[], &[e]).unwrap().contains("worker pool's policy"));
        assert!(refusal(e, &[e], &[]).unwrap().contains("--allow network.host"));
        assert!(refusal(e, &[e], &[e]).is_none());
    }
}
