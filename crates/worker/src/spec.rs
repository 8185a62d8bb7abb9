//! The OCI runtime spec (`config.json`) for a RUN step, built with the
//! `oci-spec` crate so the field names and shapes are the spec's, not ours.
//! Defaults follow Docker's: its default capabilities (less `NET_RAW`,
//! unless the pool allows it), its seccomp profile ([`crate::seccomp`]), its
//! masked and read-only paths, `/proc`, `/dev`, `/dev/pts`, `/dev/shm`,
//! `/dev/mqueue` and a read-only `/sys`; stricter than Docker, sandboxed
//! steps also get `noNewPrivileges` (a setuid program cannot gain more
//! than the step has).

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::error::{Result, WorkerError};
use crate::seccomp::DEFAULT_CAPABILITIES;
use crate::step::{Limits, Network, Security, Ulimit};
use crate::users::ResolvedUser;


const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's default soft and hard `RLIMIT_NOFILE`, capped by the host's
/// hard limit (a container cannot raise it past that).
const WANTED_NOFILE: u64 = 1_048_576;

/// What the spec is made from: the already-resolved process and the
/// step's mounts (translated by [`crate::mounts`]).
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: ResolvedUser,
    pub cwd: String,
    pub network: Network,
    pub limits: Limits,
    pub security: Security,
    /// Add `CAP_NET_RAW` to a sandboxed step's capabilities (pool policy).
    pub net_raw: bool,
    /// Allow the compatibility ABIs' system calls (32-bit x86, x32) in the
    /// seccomp filter (pool policy; see [`crate::seccomp::for_capabilities`]).
    pub compat_syscall_arches: bool,
    /// The network namespace to join (one the worker set up with its
    /// egress, [`crate::network`]); `None` with [`Network::Private`] or
    /// [`Network::None`] means a new one holding only `lo`.
    pub netns: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    /// `/dev/shm`'s size; default 64 MiB, Docker's.
    pub shm_size_bytes: Option<u64>,
    /// Rlimits besides the default `nofile` (one named `nofile` replaces
    /// it), each capped by the worker's own hard limit.
    pub ulimits: Vec<Ulimit>,
}

/// Docker's default `/dev/shm` size.
const DEFAULT_SHM_BYTES: u64 = 64 << 20;

fn spec_err(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Spec(e.to_string())
}

/// A read-only bind mount of a host file the worker made for the step.
pub fn bind_ro(dest: &str, source: &std::path::Path) -> Result<Mount> {
    mount(dest, "bind", &source.display().to_string(), &["rbind", "ro", "nosuid", "nodev", "noexec"])
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace> {
    LinuxNamespaceBuilder::default().typ(typ).build().map_err(spec_err)
}

/// Capability names by bit number (`linux/capability.h`).
const CAPS_BY_BIT: [&str; 41] = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

/// The worker's capability bounding set (`CapBnd`), all bits when unknown.
fn host_bounding_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok())))
        .unwrap_or(u64::MAX)
}

/// The host's hard `RLIMIT_NOFILE`.
fn host_nofile_hard() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_max } else { 1024 }
}

/// Builds the runtime spec for one RUN.
pub fn build_spec(input: &SpecInput) -> Result<Spec> {
    let insecure = input.security == Security::Insecure;
    let caps: HashSet<Capability> = if insecure {
        // Every capability the worker itself holds (its bounding set):
        // `--security=insecure` is a privileged container, and a runtime
        // cannot grant more than it has.
        let bounding = host_bounding_caps();
        serde_json::from_value::<Vec<Capability>>(serde_json::json!(
            CAPS_BY_BIT.iter().enumerate().filter(|(bit, _)| bounding & (1u64 << bit) != 0).map(|(_, n)| *n).collect::<Vec<_>>()
        ))
        .map_err(spec_err)?
        .into_iter()
        .collect()
    } else {
        let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
        if input.net_raw {
            caps.insert(Capability::NetRaw);
        }
        caps
    };
    // `--security=insecure` runs unconfined, like Docker's privileged.
    let seccomp = if insecure { None } else { Some(crate::seccomp::for_capabilities(&caps, input.compat_syscall_arches)?) };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_err)?;
    let nofile = WANTED_NOFILE.min(host_nofile_hard());
    let mut rlimits = Vec::new();
    if !input.ulimits.iter().any(|u| u.name == "nofile") {
        rlimits.push(PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitNofile).soft(nofile).hard(nofile).build().map_err(spec_err)?);
    }
    for u in &input.ulimits {
        let (typ, soft, hard) = u.capped().map_err(WorkerError::Spec)?;
        rlimits.push(PosixRlimitBuilder::default().typ(typ).soft(soft).hard(hard).build().map_err(spec_err)?);
    }
    let mut user = UserBuilder::default().uid(input.user.uid).gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user = user.additional_gids(input.user.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build().map_err(spec_err)?)
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(!insecure)
        .build()
        .map_err(spec_err)?;

    // tmpfs sizes are whole KiB; a size below one KiB is one KiB.
    let shm_kib = input.shm_size_bytes.unwrap_or(DEFAULT_SHM_BYTES).div_ceil(1024).max(1);
    let sys_opts: &[&str] = if insecure { &["nosuid", "noexec", "nodev"] } else { &["nosuid", "noexec", "nodev", "ro"] };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &format!("size={}k", shm_kib)])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", sys_opts)?,
    ];
    if input.network == Network::Host {
        // The host's resolver and hosts file, read-only, as BuildKit does
        // for host networking.
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if std::path::Path::new(f).exists() {
                mounts.push(mount(f, "bind", f, &["rbind", "ro"])?);
            }
        }
    }
    mounts.extend(input.mounts.iter().cloned());

    let mut namespaces =
        vec![namespace(LinuxNamespaceType::Pid)?, namespace(LinuxNamespaceType::Ipc)?, namespace(LinuxNamespaceType::Uts)?, namespace(LinuxNamespaceType::Mount)?];
    match (&input.network, &input.netns) {
        (Network::Host, _) => {}
        (_, Some(path)) => namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(path.clone()).build().map_err(spec_err)?),
        // A fresh network namespace has only `lo`; the runtime brings it up.
        (_, None) => namespaces.push(namespace(LinuxNamespaceType::Network)?),
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(m) = input.limits.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(m).build().map_err(spec_err)?);
    }
    if let Some(p) = input.limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build().map_err(spec_err)?);
    }
    let mut linux = LinuxBuilder::default().namespaces(namespaces).resources(resources.build().map_err(spec_err)?);
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    let (masked, readonly): (&[&str], &[&str]) = if insecure { (&[], &[]) } else { (MASKED_PATHS, READONLY_PATHS) };
    linux = linux
        .masked_paths(masked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(readonly.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(input.rootfs.clone()).readonly(false).build().map_err(spec_err)?)
        .hostname("rbk")
        .process(process)
        .mounts(mounts)
        .linux(linux.build().map_err(spec_err)?)
        .build()
        .map_err(spec_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            rootfs: "/r".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            user: ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![10], home: "/home/u".into() },
            cwd: "/".into(),
            network: Network::None,
            limits: Limits { memory_bytes: Some(64 << 20), pids: Some(100), wall_time_ms: None },
            security: Security::Sandbox,
            net_raw: false,
            compat_syscall_arches: false,
            netns: None,
            mounts: vec![],
            shm_size_bytes: None,
            ulimits: vec![],
        }
    }

    #[test]
    fn default_spec_has_dockers_capabilities_limits_and_masks() {
        let v = serde_json::to_value(build_spec(&input()).unwrap()).unwrap();
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 13);
        assert!(caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE"));
        assert!(!caps.iter().any(|c| c == "CAP_NET_RAW"));
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["additionalGids"][0], 10);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 100);
        assert!(v["linux"]["maskedPaths"].as_array().unwrap().iter().any(|p| p == "/proc/kcore"));
        let nofile = v["process"]["rlimits"][0]["hard"].as_u64().unwrap();
        assert!(nofile <= host_nofile_hard());
        let sys = v["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap();
        assert!(sys["options"].as_array().unwrap().iter().any(|o| o == "ro"));
    }

    #[test]
    fn shm_size_and_ulimits_reach_the_spec() {
        let ulimits = vec![Ulimit { name: "nofile".into(), soft: 100, hard: 200 }, Ulimit { name: "core".into(), soft: 0, hard: 0 }];
        let v = serde_json::to_value(build_spec(&SpecInput { shm_size_bytes: Some(128 << 20), ulimits, ..input() }).unwrap()).unwrap();
        let shm = v["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert!(shm["options"].as_array().unwrap().iter().any(|o| o == "size=131072k"), "{shm}");
        let rl = v["process"]["rlimits"].as_array().unwrap();
        assert_eq!(rl.len(), 2, "{rl:?}");
        assert_eq!((rl[0]["type"].as_str(), rl[0]["soft"].as_u64(), rl[0]["hard"].as_u64()), (Some("RLIMIT_NOFILE"), Some(100), Some(200)));
        assert_eq!(rl[1]["type"], "RLIMIT_CORE");
    }

    #[test]
    fn network_none_gets_a_network_namespace_and_host_does_not() {
        let has_net = |network| {
            let v = serde_json::to_value(build_spec(&SpecInput { network, ..input() }).unwrap()).unwrap();
            v["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "network")
        };
        assert!(has_net(Network::None));
        assert!(has_net(Network::Private));
        assert!(!has_net(Network::Host));
    }

    #[test]
    fn insecure_gets_every_capability_and_no_masks() {
        let v = serde_json::to_value(build_spec(&SpecInput { security: Security::Insecure, ..input() }).unwrap()).unwrap();
        assert!(v["process"]["capabilities"]["bounding"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert!(v["linux"]["maskedPaths"].as_array().is_none_or(|m| m.is_empty()));
        assert!(v["linux"]["seccomp"].is_null());
    }
}
