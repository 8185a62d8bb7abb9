//! The build-wide container options of a RUN step
//! ([`crate::step::ContainerOptions`]: `--add-host`, `--shm-size`,
//! `--ulimit`), parsed from the flags' text and checked on the worker:
//! an `/etc/hosts` line cannot be smuggled in through a host name, and an
//! rlimit never exceeds the worker's own hard limit.

use oci_spec::runtime::PosixRlimitType;

use crate::step::{HostEntry, Ulimit};

/// The rlimits `docker run --ulimit` names, with their runtime-spec type
/// and `setrlimit` resource.
const ULIMITS: &[(&str, PosixRlimitType, libc::__rlimit_resource_t)] = &[
    ("core", PosixRlimitType::RlimitCore, libc::RLIMIT_CORE),
    ("cpu", PosixRlimitType::RlimitCpu, libc::RLIMIT_CPU),
    ("data", PosixRlimitType::RlimitData, libc::RLIMIT_DATA),
    ("fsize", PosixRlimitType::RlimitFsize, libc::RLIMIT_FSIZE),
    ("locks", PosixRlimitType::RlimitLocks, libc::RLIMIT_LOCKS),
    ("memlock", PosixRlimitType::RlimitMemlock, libc::RLIMIT_MEMLOCK),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue, libc::RLIMIT_MSGQUEUE),
    ("nice", PosixRlimitType::RlimitNice, libc::RLIMIT_NICE),
    ("nofile", PosixRlimitType::RlimitNofile, libc::RLIMIT_NOFILE),
    ("nproc", PosixRlimitType::RlimitNproc, libc::RLIMIT_NPROC),
    ("rss", PosixRlimitType::RlimitRss, libc::RLIMIT_RSS),
    ("rtprio", PosixRlimitType::RlimitRtprio, libc::RLIMIT_RTPRIO),
    ("rttime", PosixRlimitType::RlimitRttime, libc::RLIMIT_RTTIME),
    ("sigpending", PosixRlimitType::RlimitSigpending, libc::RLIMIT_SIGPENDING),
    ("stack", PosixRlimitType::RlimitStack, libc::RLIMIT_STACK),
    ("as", PosixRlimitType::RlimitAs, libc::RLIMIT_AS),
];

/// Entries of one step's `/etc/hosts` at most (each is a line of it).
pub const MAX_EXTRA_HOSTS: usize = 256;

impl HostEntry {
    /// `name:address` (`--add-host`); the address may be IPv6
    /// (`name:::1`, or Docker's `name=address` form).
    pub fn parse(spec: &str) -> Result<HostEntry, String> {
        let (name, address) = spec
            .split_once('=')
            .or_else(|| spec.split_once(':'))
            .ok_or_else(|| format!("--add-host {spec}: expected host:ip"))?;
        let address = address.trim_start_matches('[').trim_end_matches(']');
        let entry = HostEntry {
            name: name.to_owned(),
            address: address.parse().map_err(|_| format!("--add-host {spec}: {address:?} is not an IP address"))?,
        };
        entry.check()?;
        Ok(entry)
    }

    /// A host name is one word of letters, digits, `-`, `_` and `.`:
    /// nothing that could end the line or start another field.
    pub fn check(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 253
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok { Ok(()) } else { Err(format!("--add-host: {:?} is not a host name", self.name)) }
    }
}

/// `/etc/hosts` of a step: `base` (ending in a newline), then one line per
/// extra entry.
pub fn hosts_file(base: &str, extra: &[HostEntry]) -> String {
    let mut out = base.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for h in extra {
        out.push_str(&format!("{}\t{}\n", h.address, h.name));
    }
    out
}

impl Ulimit {
    /// `name=soft[:hard]` (`--ulimit nofile=1024:2048`); `-1` is unlimited.
    pub fn parse(spec: &str) -> Result<Ulimit, String> {
        let (name, values) = spec.split_once('=').ok_or_else(|| format!("--ulimit {spec}: expected name=soft[:hard]"))?;
        let value = |v: &str| -> Result<u64, String> {
            match v {
                "-1" | "unlimited" => Ok(u64::MAX),
                _ => v.parse().map_err(|_| format!("--ulimit {spec}: {v:?} is not a number")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => (value(values)?, value(values)?),
        };
        let u = Ulimit { name: name.to_owned(), soft, hard };
        u.check()?;
        Ok(u)
    }

    /// A known name, and soft not above hard.
    pub fn check(&self) -> Result<(), String> {
        if !ULIMITS.iter().any(|(n, ..)| *n == self.name) {
            let known: Vec<&str> = ULIMITS.iter().map(|(n, ..)| *n).collect();
            return Err(format!("--ulimit {}: unknown limit (one of {})", self.name, known.join(", ")));
        }
        if self.soft > self.hard {
            return Err(format!("--ulimit {}: the soft limit {} is above the hard limit {}", self.name, self.soft, self.hard));
        }
        Ok(())
    }

    /// The runtime-spec type, and the limit capped by the worker's own hard
    /// limit of that resource.
    pub fn capped(&self) -> Result<(PosixRlimitType, u64, u64), String> {
        self.check()?;
        let (_, typ, resource) = ULIMITS.iter().find(|(n, ..)| *n == self.name).expect("checked above");
        let max = host_hard_limit(*resource);
        Ok((*typ, self.soft.min(max), self.hard.min(max)))
    }
}

/// The worker's hard limit of `resource` (`RLIM_INFINITY` is `u64::MAX`).
pub fn host_hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut lim) } == 0 { lim.rlim_max } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_ipv4_and_ipv6_and_refuses_a_name_that_would_break_the_line() {
        assert_eq!(HostEntry::parse("db:10.1.2.3").unwrap().address.to_string(), "10.1.2.3");
        assert_eq!(HostEntry::parse("v6:::1").unwrap().address.to_string(), "::1");
        assert_eq!(HostEntry::parse("v6=fe80::1").unwrap().name, "v6");
        assert!(HostEntry::parse("db:nope").unwrap_err().contains("not an IP address"));
        let smuggled = HostEntry { name: "a\n1.2.3.4 evil".into(), address: "10.0.0.1".parse().unwrap() };
        assert!(smuggled.check().is_err());
    }

    #[test]
    fn hosts_file_appends_one_line_per_entry() {
        let h = [HostEntry { name: "db".into(), address: "10.1.2.3".parse().unwrap() }];
        assert_eq!(hosts_file("127.0.0.1\tlocalhost", &h), "127.0.0.1\tlocalhost\n10.1.2.3\tdb\n");
    }

    #[test]
    fn ulimits_parse_soft_and_hard_and_refuse_unknown_names_and_inverted_limits() {
        assert_eq!(Ulimit::parse("nofile=1024:2048").unwrap(), Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        assert_eq!(Ulimit::parse("core=0").unwrap(), Ulimit { name: "core".into(), soft: 0, hard: 0 });
        assert_eq!(Ulimit::parse("memlock=-1").unwrap().hard, u64::MAX);
        assert!(Ulimit::parse("files=1").unwrap_err().contains("unknown limit"));
        assert!(Ulimit::parse("nofile=10:5").unwrap_err().contains("above the hard limit"));
    }

    #[test]
    fn a_ulimit_never_exceeds_the_workers_hard_limit() {
        let (_, soft, hard) = Ulimit { name: "nofile".into(), soft: u64::MAX, hard: u64::MAX }.capped().unwrap();
        let max = host_hard_limit(libc::RLIMIT_NOFILE);
        assert_eq!((soft, hard), (max, max));
    }
}
