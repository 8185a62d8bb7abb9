//! `USER` / `--chown` resolution against the rootfs' own `/etc/passwd` and
//! `/etc/group` (never the host's): names become ids, and a user's
//! supplementary groups come along like they do in Docker.

use std::path::Path;

use crate::error::{Result, WorkerError};
use crate::scope::resolve_in_root;

/// A resolved user: what the OCI spec's `process.user` and `HOME` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_db(root: &Path, path: &str) -> Result<String> {
    let host = resolve_in_root(root, path)?;
    match std::fs::read(&host) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(WorkerError::io(format!("reading {}", host.display()), e)),
    }
}

/// A database line's `:`-separated fields; `None` (the line is skipped, as
/// libc skips it) when it has fewer than `min`.
fn fields(line: &str, min: usize) -> Option<Vec<&str>> {
    let f: Vec<&str> = line.split(':').collect();
    (f.len() >= min).then_some(f)
}

fn passwd(root: &Path) -> Result<Vec<PasswdEntry>> {
    Ok(read_db(root, "/etc/passwd")?
        .lines()
        .filter_map(|l| {
            let f = fields(l, 6)?;
            Some(PasswdEntry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() })
        })
        .collect())
}

fn groups(root: &Path) -> Result<Vec<GroupEntry>> {
    Ok(read_db(root, "/etc/group")?
        .lines()
        .filter_map(|l| {
            let f = fields(l, 3)?;
            let members = f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(String::from).collect()).unwrap_or_default();
            Some(GroupEntry { name: f[0].into(), gid: f[2].parse().ok()?, members })
        })
        .collect())
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`, any mix) in
/// the rootfs at `root`. A numeric uid absent from `/etc/passwd` is fine
/// (gid 0, home `/`), as in Docker; an unknown name is an error.
pub fn resolve_user(root: &Path, spec: Option<&str>) -> Result<ResolvedUser> {
    let spec = spec.unwrap_or("").trim();
    if spec.is_empty() {
        return Ok(ResolvedUser { uid: 0, gid: 0, additional_gids: vec![], home: "/root".into() });
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root)?;
    let groups = groups(root)?;
    let entry = match user.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => Some(users.iter().find(|e| e.name == user).ok_or_else(|| WorkerError::User {
            user: spec.into(),
            reason: format!("no user named {user:?} in the rootfs' /etc/passwd"),
        })?),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user.parse::<u32>().expect("numeric, checked above"),
    };
    let (gid, additional_gids) = match group {
        Some(g) => (resolve_group(&groups, g, spec)?, vec![]),
        None => {
            let gid = entry.map_or(0, |e| e.gid);
            let extra = match entry {
                Some(e) => groups.iter().filter(|g| g.members.contains(&e.name) && g.gid != gid).map(|g| g.gid).collect(),
                None => vec![],
            };
            (gid, extra)
        }
    };
    let home = entry.map_or_else(|| "/".to_owned(), |e| e.home.clone());
    Ok(ResolvedUser { uid, gid, additional_gids, home })
}

fn resolve_group(groups: &[GroupEntry], g: &str, spec: &str) -> Result<u32> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| WorkerError::User {
        user: spec.into(),
        reason: format!("no group named {g:?} in the rootfs' /etc/group"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,other\n").unwrap();
        d
    }

    #[test]
    fn name_resolves_to_ids_home_and_supplementary_groups() {
        let d = rootfs();
        let u = resolve_user(d.path(), Some("app")).unwrap();
        assert_eq!(u, ResolvedUser { uid: 1000, gid: 1001, additional_gids: vec![10], home: "/home/app".into() });
    }

    #[test]
    fn user_and_group_names_or_numbers_mix() {
        let d = rootfs();
        assert_eq!(resolve_user(d.path(), Some("app:wheel")).unwrap().gid, 10);
        assert_eq!(resolve_user(d.path(), Some("1000:5")).unwrap().gid, 5);
        let unknown_uid = resolve_user(d.path(), Some("4242")).unwrap();
        assert_eq!((unknown_uid.uid, unknown_uid.gid, unknown_uid.home.as_str()), (4242, 0, "/"));
    }

    #[test]
    fn unknown_name_is_an_error_naming_it() {
        let d = rootfs();
        let err = resolve_user(d.path(), Some("nobody2")).unwrap_err().to_string();
        assert!(err.contains("nobody2") && err.contains("/etc/passwd"), "{err}");
        let err = resolve_user(d.path(), Some("app:nogroup")).unwrap_err().to_string();
        assert!(err.contains("nogroup") && err.contains("/etc/group"), "{err}");
    }
}
