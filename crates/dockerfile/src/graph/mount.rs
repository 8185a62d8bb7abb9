//! `RUN --mount=` options → a resolved [`Mount`].

use std::collections::BTreeMap;

use super::{Builder, Scope, StageState};
use crate::context::{clean_absolute, clean_relative};
use crate::error::{Pos, RawError};
use crate::expand;
use crate::instruction::*;
use crate::step::*;

impl Builder<'_> {
    pub(super) fn mount(
        &self,
        m: &MountSpec,
        scope: &Scope,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
    ) -> Result<Mount, RawError> {
        let err = |msg: String| RawError::new(pos, Some("RUN"), msg);
        // BuildKit expands every mount option with the step's args and env,
        // then checks the result (the type itself may be a variable).
        let mut o: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &m.opts {
            o.insert(
                k.clone(),
                expand::expand(v, self.escape, &|n| scope.get(n)).map_err(&err)?,
            );
        }
        let spec = crate::parser::expanded_mount(m, o).map_err(&err)?;
        let o = spec.opts;
        let num = |k: &str, def: u32, octal: bool| -> Result<u32, RawError> {
            match o.get(k) {
                None => Ok(def),
                Some(v) => if octal {
                    u32::from_str_radix(v, 8)
                } else {
                    v.parse()
                }
                .map_err(|_| {
                    err(format!(
                        "invalid {k}={v} in --mount; expected {}",
                        if octal {
                            "an octal mode like 0755"
                        } else {
                            "a number"
                        }
                    ))
                }),
            }
        };
        let flag = |k: &str, def: bool| o.get(k).map_or(def, |v| v == "true");
        // Relative targets are relative to the working directory.
        let workdir = st.config.workdir.clone().unwrap_or_else(|| "/".into());
        let target = o.get("target").map(|t| {
            if t.starts_with('/') {
                clean_absolute(t)
            } else {
                clean_absolute(&format!("{workdir}/{t}"))
            }
        });
        // BuildKit: without target=, bind, cache and tmpfs mounts go on the
        // working directory; the root itself cannot be a mount target.
        let dir_target = || -> Result<String, RawError> {
            let t = target.clone().unwrap_or_else(|| workdir.clone());
            if t == "/" {
                return Err(err(format!(
                    "invalid mount target \"/\"; set target=PATH (without it the mount goes on the working directory, here {workdir})"
                )));
            }
            Ok(t)
        };
        let from = match o.get("from") {
            Some(f) => Some(self.resolve_from(f, st, earlier, pos, "RUN")?),
            None => None,
        };
        Ok(match spec.kind {
            MountKind::Bind => {
                let source = o.get("source").cloned().unwrap_or_default();
                let from = from.unwrap_or(FromRef::Context);
                let source = match from {
                    FromRef::Context => clean_relative(&source).ok_or_else(|| {
                        err(format!(
                            "bind mount source '{source}' is outside the build context"
                        ))
                    })?,
                    _ => clean_absolute(&source),
                };
                Mount::Bind {
                    target: dir_target()?,
                    from,
                    source,
                    readonly: flag("readonly", true),
                    paths: Vec::new(),
                }
            }
            MountKind::Cache => {
                let target = dir_target()?;
                // Without from=, BuildKit mounts the `source` subdirectory of
                // the cache. It must stay inside the cache: a relative path
                // without `..` (the worker also opens it without following
                // symlinks).
                let subdir = match (&from, o.get("source")) {
                    (None, Some(src)) => {
                        if src.starts_with('/') || src.split('/').any(|c| c == "..") {
                            return Err(err(format!(
                                "cache mount source={src}: must be a path inside the cache (relative, without '..')"
                            )));
                        }
                        clean_relative(src).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                let id = o.get("id").cloned().unwrap_or_else(|| super::platform::implicit_cache_id(&target, &self.stage_platform(st, earlier)));
                let sharing = match o.get("sharing").map(String::as_str) {
                    Some("private") => Sharing::Private,
                    Some("locked") => Sharing::Locked,
                    _ => Sharing::Shared,
                };
                let source = o
                    .get("source")
                    .map(|s| clean_absolute(s))
                    .unwrap_or_else(|| "/".into());
                Mount::Cache {
                    target,
                    id: format!("{}/{}", self.opts.namespace, id),
                    sharing,
                    from: from.map(|f| (f, source)),
                    subdir,
                    mode: num("mode", 0o755, true)?,
                    uid: num("uid", 0, false)?,
                    gid: num("gid", 0, false)?,
                    readonly: flag("readonly", false),
                }
            }
            MountKind::Tmpfs => Mount::Tmpfs {
                target: dir_target()?,
                size: o.get("size").cloned(),
            },
            MountKind::Secret => {
                let env = o.get("env").cloned();
                let id = match (o.get("id"), &target) {
                    (Some(id), _) => id.clone(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                    (None, None) => {
                        return Err(err("secret mount needs id=ID or target=PATH".into()));
                    }
                };
                let target = match (target, &env) {
                    (Some(t), _) => Some(t),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                Mount::Secret {
                    id,
                    target,
                    env,
                    required: flag("required", false),
                    mode: num("mode", 0o400, true)?,
                    uid: num("uid", 0, false)?,
                    gid: num("gid", 0, false)?,
                }
            }
            MountKind::Ssh => Mount::Ssh {
                id: o.get("id").cloned().unwrap_or_else(|| "default".into()),
                target: target.unwrap_or_else(|| "/run/buildkit/ssh_agent.0".into()),
                required: flag("required", false),
                mode: num("mode", 0o600, true)?,
                uid: num("uid", 0, false)?,
                gid: num("gid", 0, false)?,
            },
        })
    }
}
