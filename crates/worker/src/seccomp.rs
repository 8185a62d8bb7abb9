//! The seccomp filter of a sandboxed RUN step: Docker's default profile,
//! kept as data (`crates/worker/seccomp/default.json`, see the README next
//! to it for its origin and licence), resolved for this machine's
//! architecture and the step's capabilities into the OCI spec's
//! `linux.seccomp`, the way Docker resolves it for a container.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Result, WorkerError};

/// Docker's default capability set for containers (and BuildKit's for RUN)
/// without `CAP_NET_RAW`: no raw or packet sockets, so a step can neither
/// sniff nor forge other traffic on the host's or its own network. A pool
/// that needs `ping` in steps allows it (`WorkerConfig::allow_net_raw`).
pub const DEFAULT_CAPABILITIES: [Capability; 13] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The profile, in Docker's format.
pub const DEFAULT_PROFILE: &str = include_str!("../seccomp/default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// Docker's name for this machine's architecture, and libseccomp's.
fn arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "x86" => ("x86", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

/// The OCI seccomp section for a step holding `caps`.
///
/// `compat_arches`: also allow the machine's compatibility ABIs (on x86_64,
/// 32-bit x86 and x32), as Docker's profile does. Off by default, which is
/// stricter than Docker and BuildKit: a 32-bit system call from a step is
/// refused (the process gets `SIGSYS`). The runtime compiles the profile
/// once per architecture listed on every step's start, and each extra
/// architecture costs this machine ~7 ms a step (docs/benchmarks.md,
/// "what the RUN sandbox costs"); a pool that builds 32-bit code turns
/// them on (`compat_syscall_arches` in its policy).
pub fn for_capabilities(caps: &HashSet<Capability>, compat_arches: bool) -> Result<LinuxSeccomp> {
    resolve(DEFAULT_PROFILE, caps, arch(), compat_arches)
}

fn resolve(profile: &str, caps: &HashSet<Capability>, (arch, scmp_arch): (&str, &str), compat_arches: bool) -> Result<LinuxSeccomp> {
    let err = |e: String| WorkerError::Spec(format!("seccomp profile: {e}"));
    let p: Profile = serde_json::from_str(profile).map_err(|e| err(e.to_string()))?;
    let cap_names: HashSet<String> = caps.iter().map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()).collect();
    let architectures: Vec<String> = p
        .arch_map
        .iter()
        .find(|a| a.architecture == scmp_arch)
        .map(|a| std::iter::once(a.architecture.clone()).chain(a.sub_architectures.iter().cloned().filter(|_| compat_arches)).collect())
        .unwrap_or_default();
    let mut syscalls = Vec::new();
    for r in &p.syscalls {
        if !r.includes.arches.is_empty() && !r.includes.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !r.includes.caps.is_empty() && !r.includes.caps.iter().all(|c| cap_names.contains(c)) {
            continue;
        }
        if r.excludes.arches.iter().any(|a| a == arch) || r.excludes.caps.iter().any(|c| cap_names.contains(c)) {
            continue;
        }
        let mut s = json!({"names": r.names, "action": r.action});
        if let Some(e) = r.errno_ret {
            s["errnoRet"] = json!(e);
        }
        if let Some(args) = r.args.as_ref().filter(|a| !a.is_empty()) {
            s["args"] = json!(args);
        }
        syscalls.push(s);
    }
    let mut v = json!({"defaultAction": p.default_action, "architectures": architectures, "syscalls": syscalls});
    if let Some(e) = p.default_errno_ret {
        v["defaultErrnoRet"] = json!(e);
    }
    serde_json::from_value(v).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        let v = serde_json::to_value(s).unwrap();
        v["syscalls"].as_array().unwrap().iter().any(|r| r["action"] == "SCMP_ACT_ALLOW" && r["args"].is_null() && r["names"].as_array().unwrap().iter().any(|n| n == name))
    }

    #[test]
    fn default_caps_get_no_namespace_syscalls() {
        let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
        let s = for_capabilities(&caps, false).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(allowed(&s, "read") && allowed(&s, "openat"));
        for name in ["unshare", "mount", "setns", "keyctl", "bpf"] {
            assert!(!allowed(&s, name), "{name} allowed");
        }
    }

    #[test]
    fn sys_admin_gets_the_namespace_syscalls() {
        let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
        caps.insert(Capability::SysAdmin);
        let s = for_capabilities(&caps, false).unwrap();
        assert!(allowed(&s, "unshare") && allowed(&s, "mount"));
    }

    #[test]
    fn arch_specific_rules_follow_the_architecture() {
        let caps = HashSet::new();
        let amd = resolve(DEFAULT_PROFILE, &caps, ("amd64", "SCMP_ARCH_X86_64"), false).unwrap();
        let arm = resolve(DEFAULT_PROFILE, &caps, ("arm64", "SCMP_ARCH_AARCH64"), false).unwrap();
        assert!(allowed(&amd, "arch_prctl") && !allowed(&arm, "arch_prctl"));
        assert_eq!(serde_json::to_value(&amd).unwrap()["architectures"][0], "SCMP_ARCH_X86_64");
    }

    #[test]
    fn only_the_native_architecture_is_allowed_unless_the_pool_asks_for_compat_arches() {
        let caps = HashSet::new();
        let arches = |compat| serde_json::to_value(resolve(DEFAULT_PROFILE, &caps, ("amd64", "SCMP_ARCH_X86_64"), compat).unwrap()).unwrap()["architectures"].clone();
        assert_eq!(arches(false), serde_json::json!(["SCMP_ARCH_X86_64"]));
        assert_eq!(arches(true), serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
    }
}
