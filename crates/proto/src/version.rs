//! Which rbk versions may talk to each other, and how a caller says its
//! version on the wire.
//!
//! Every rbk client and worker connects with the HTTP/2 `user-agent`
//! `rbk/<version>` (tonic appends its own product after it). A coordinator
//! serves callers of its own minor version and of the minor version just
//! before it, so a farm is upgraded coordinators first, then workers and
//! clients, one minor version at a time (docs/operations.md, "Version
//! skew"). A caller *newer* than the coordinator is refused: it may send
//! fields the coordinator would silently drop. A caller that says no rbk
//! version (grpcurl, a client from before versions were sent) is served:
//! nothing is known to refuse it for.
//!
//! Within that window the protocol only grows: fields and methods are
//! added, never renumbered, retyped or removed without `reserved` (checked
//! against the frozen copy in `proto/compat/` by the proto crate's tests).

use std::fmt;

/// The version of this build of rbk (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `user-agent` product an rbk caller connects with.
pub fn user_agent() -> String {
    format!("rbk/{VERSION}")
}

/// A `major.minor.patch` version (pre-release and build suffixes ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// `1.2.3`, `1.2.3-rc.1` or `1.2.3+abc`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let v = Version { major: next()?, minor: next()?, patch: next()? };
        parts.next().is_none().then_some(v)
    }

    /// This build's version.
    pub fn own() -> Self {
        Self::parse(VERSION).expect("the workspace version is major.minor.patch")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The rbk version a `user-agent` header names, if it names one
/// (`rbk/0.1.0 tonic/0.14.2` → 0.1.0).
pub fn from_user_agent(header: &str) -> Option<Version> {
    header.split_whitespace().find_map(|product| Version::parse(product.strip_prefix("rbk/")?))
}

/// Why a caller's version is outside the coordinator's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skew {
    /// The caller is newer than the coordinator.
    Newer { caller: Version, coordinator: Version },
    /// The caller is more than one minor version older (or another major).
    TooOld { caller: Version, coordinator: Version },
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Newer { caller, coordinator } => write!(
                f,
                "rbk {caller} is newer than this coordinator (rbk {coordinator}): upgrade the coordinators first, \
                 or use an rbk of version {}.{}.x (see \"Version skew\" in docs/operations.md)",
                coordinator.major, coordinator.minor
            ),
            Skew::TooOld { caller, coordinator } => write!(
                f,
                "rbk {caller} is too old for this coordinator (rbk {coordinator}, which serves {}.{}.x and the minor \
                 version before it): upgrade this rbk (see \"Version skew\" in docs/operations.md)",
                coordinator.major, coordinator.minor
            ),
        }
    }
}

/// Whether a coordinator of version `coordinator` serves a caller of
/// version `caller`: the same major, and the same minor or the one before.
pub fn check(caller: Version, coordinator: Version) -> Result<(), Skew> {
    let (c, k) = ((caller.major, caller.minor), (coordinator.major, coordinator.minor));
    if c > k {
        Err(Skew::Newer { caller, coordinator })
    } else if c.0 != k.0 || k.1 - c.1 > 1 {
        Err(Skew::TooOld { caller, coordinator })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn the_same_minor_version_is_served_whatever_the_patch() {
        assert_eq!(check(v("1.4.9"), v("1.4.0")), Ok(()));
        assert_eq!(check(v("1.4.0"), v("1.4.9")), Ok(()));
    }

    #[test]
    fn a_caller_one_minor_version_older_is_served() {
        assert_eq!(check(v("1.3.7"), v("1.4.0")), Ok(()));
        assert_eq!(check(v("0.0.5"), v("0.1.0")), Ok(()));
    }

    #[test]
    fn a_caller_two_minor_versions_older_is_refused_as_too_old() {
        assert!(matches!(check(v("1.2.0"), v("1.4.0")), Err(Skew::TooOld { .. })));
    }

    #[test]
    fn a_caller_of_an_older_major_version_is_refused_as_too_old() {
        assert!(matches!(check(v("1.9.0"), v("2.0.0")), Err(Skew::TooOld { .. })));
    }

    #[test]
    fn a_newer_caller_is_refused_naming_both_versions_and_what_to_upgrade() {
        let e = check(v("0.2.0"), v("0.1.3")).unwrap_err();
        assert!(matches!(e, Skew::Newer { .. }));
        let m = e.to_string();
        assert!(m.contains("rbk 0.2.0") && m.contains("rbk 0.1.3") && m.contains("upgrade the coordinators first"), "{m}");
    }

    #[test]
    fn the_version_is_read_from_the_rbk_product_of_a_user_agent() {
        assert_eq!(from_user_agent("rbk/0.1.0 tonic/0.14.2"), Some(v("0.1.0")));
        assert_eq!(from_user_agent("grpc-go/1.60 rbk/2.3.4-rc.1"), Some(v("2.3.4")));
        assert_eq!(from_user_agent("tonic/0.14.2"), None);
        assert_eq!(from_user_agent("rbk/latest tonic/0.14.2"), None);
        assert_eq!(from_user_agent("rbk/1.2 tonic/0.14.2"), None);
    }

    #[test]
    fn this_builds_user_agent_names_this_builds_version() {
        assert_eq!(from_user_agent(&user_agent()), Some(Version::own()));
    }
}
