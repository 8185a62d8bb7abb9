//! Build-graph steps → worker step descriptions.
//!
//! The graph says what a Dockerfile means; the worker knows nothing of
//! Dockerfiles. Here the two meet: argv, environment (the base image's
//! config under the step's ENV/ARG), user, workdir, mounts and copy
//! sources. What the embedded worker cannot do yet is refused with an error
//! naming the step, never silently dropped.

use rbk_dockerfile as df;
use rbk_image::ContainerConfig;
use rbk_worker as wk;

/// Why a graph step could not be mapped (the caller adds the step's name).
pub type Unsupported = String;

/// The worker's name for a stage's rootfs (`Source::Stage`).
pub fn stage_source(stage: usize) -> String {
    format!("stage-{stage}")
}

fn source_of(from: &df::FromRef) -> Result<wk::Source, Unsupported> {
    match from {
        df::FromRef::Context => Ok(wk::Source::Context),
        df::FromRef::Stage { stage, .. } => Ok(wk::Source::Stage(stage_source(*stage))),
        df::FromRef::Image { reference, .. } => Err(format!(
            "files from image {reference} (--from=<image>) are not supported by rbk yet"
        )),
    }
}

/// The environment a RUN sees: the image's `Env`, then the step's
/// variables over it, then proxy build args.
pub fn run_env(image: &ContainerConfig, run: &df::RunStep) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(k2, _)| k2 != k);
        env.push((k.to_owned(), v.to_owned()));
    };
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in run.env.iter().chain(run.proxy_env.iter()) {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// What the executing side can supply beyond what every worker step gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supports {
    /// `--mount=type=secret`: the farm carries `--secret` values to the
    /// worker (`SubmitRequest.secrets`); `rbk build` has no `--secret` yet.
    pub secrets: bool,
    /// `--mount=type=ssh`: the worker serves an agent socket per ssh id
    /// (relayed to the client's agent, `rbk submit --ssh`).
    pub ssh: bool,
}

/// A RUN's mounts; returns the worker mounts and the scoped cache ids used.
pub fn run_mounts(mounts: &[df::Mount]) -> Result<(Vec<wk::Mount>, Vec<String>), Unsupported> {
    run_mounts_with(mounts, Supports::default())
}

/// [`run_mounts`] for an executor that supports more.
pub fn run_mounts_with(
    mounts: &[df::Mount],
    supports: Supports,
) -> Result<(Vec<wk::Mount>, Vec<String>), Unsupported> {
    let mut out = Vec::new();
    let mut caches = Vec::new();
    for m in mounts {
        match m {
            df::Mount::Cache {
                target,
                id,
                from,
                subdir,
                mode,
                uid,
                gid,
                readonly,
                sharing: _,
            } => {
                if from.is_some() {
                    return Err(format!(
                        "cache mount {target}: seeding a cache from=... is not supported by rbk yet"
                    ));
                }
                caches.push(id.clone());
                out.push(wk::Mount {
                    target: target.clone(),
                    kind: wk::MountKind::Cache {
                        id: id.clone(),
                        subdir: subdir.clone(),
                        readonly: *readonly,
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    },
                });
            }
            df::Mount::Bind {
                target,
                from: df::FromRef::Stage { stage, .. },
                source,
                readonly,
            } => out.push(wk::Mount {
                target: target.clone(),
                kind: wk::MountKind::Bind {
                    from: wk::Source::Stage(stage_source(*stage)),
                    source: source.clone(),
                    rw: !readonly,
                },
            }),
            df::Mount::Bind { target, .. } => {
                return Err(format!(
                    "bind mount {target}: only --mount=type=bind,from=<stage> is supported by rbk yet"
                ));
            }
            df::Mount::Tmpfs { target, size } => {
                let size_bytes = match size {
                    None => None,
                    Some(s) => Some(parse_size(s).ok_or_else(|| {
                        format!("tmpfs mount {target}: size {s:?} is not a byte count")
                    })?),
                };
                out.push(wk::Mount {
                    target: target.clone(),
                    kind: wk::MountKind::Tmpfs { size_bytes },
                });
            }
            df::Mount::Secret {
                id,
                target,
                env: None,
                required,
                mode,
                uid,
                gid,
            } if supports.secrets => out.push(wk::Mount {
                // Empty: the worker's default, /run/secrets/<id>.
                target: target.clone().unwrap_or_default(),
                kind: wk::MountKind::Secret {
                    id: id.clone(),
                    required: *required,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
            }),
            df::Mount::Secret { id, env: Some(v), .. } if supports.secrets => {
                return Err(format!(
                    "secret mount {id:?}: env={v} (a secret as a variable) is not supported yet; mount it as a file"
                ));
            }
            df::Mount::Secret { id, .. } => {
                return Err(format!(
                    "secret mount {id:?}: secrets are not supported by rbk build yet (rbk submit --secret passes them)"
                ));
            }
            df::Mount::Ssh { id, target, required, mode, uid, gid } if supports.ssh => out.push(wk::Mount {
                target: target.clone(),
                kind: wk::MountKind::Ssh { id: id.clone(), required: *required, mode: *mode, uid: *uid, gid: *gid },
            }),
            df::Mount::Ssh { id, .. } => {
                return Err(format!(
                    "ssh mount {id:?}: ssh agents are not supported by rbk build yet (rbk submit --ssh forwards one)"
                ));
            }
            df::Mount::File { target, .. } => {
                return Err(format!(
                    "heredoc file {target}: not supported by rbk yet"
                ));
            }
        }
    }
    Ok((out, caches))
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => (
            &s[..i],
            match s[i..].to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return None,
            },
        ),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A RUN step.
pub fn run_step(
    image: &ContainerConfig,
    run: &df::RunStep,
) -> Result<(wk::RunStep, Vec<String>), Unsupported> {
    run_step_with(image, run, Supports::default())
}

/// [`run_step`] for an executor that supports more.
pub fn run_step_with(
    image: &ContainerConfig,
    run: &df::RunStep,
    supports: Supports,
) -> Result<(wk::RunStep, Vec<String>), Unsupported> {
    let (mounts, caches) = run_mounts_with(&run.mounts, supports)?;
    let step = wk::RunStep {
        command: wk::Command::Exec(run.argv.clone()),
        shell: wk::step::default_shell(),
        env: run_env(image, run),
        user: run
            .user
            .clone()
            .or_else(|| image.user.clone())
            .filter(|u| !u.is_empty()),
        workdir: Some(run.workdir.clone()),
        mounts,
        network: match run.network {
            df::Network::Default => wk::Network::Private,
            df::Network::Host => wk::Network::Host,
            df::Network::None => wk::Network::None,
        },
        limits: wk::Limits::default(),
        security: if run.insecure {
            wk::Security::Insecure
        } else {
            wk::Security::Sandbox
        },
        container: wk::ContainerOptions::default(),
    };
    Ok((step, caches))
}

/// A COPY or ADD step.
pub fn copy_step(c: &df::CopyStep) -> Result<wk::CopyStep, Unsupported> {
    if c.parents {
        return Err("COPY --parents is not supported by rbk yet".into());
    }
    let from = source_of(&c.from)?;
    let mut sources = Vec::new();
    let mut add = c.unpack;
    for s in &c.sources {
        sources.push(match s {
            df::CopySource::Context { pattern, .. } => wk::CopySource::Path {
                from: wk::Source::Context,
                path: pattern.clone(),
            },
            df::CopySource::Path(p) => wk::CopySource::Path {
                from: from.clone(),
                path: p.clone(),
            },
            df::CopySource::Url { url, checksum } => {
                add = true;
                wk::CopySource::Url {
                    url: url.clone(),
                    checksum: checksum.clone(),
                }
            }
            df::CopySource::Inline { name, .. } => {
                return Err(format!(
                    "heredoc source {name:?}: not supported by rbk yet"
                ));
            }
            df::CopySource::Git { url, .. } => {
                return Err(format!("git source {url}: not supported by rbk yet"));
            }
        });
    }
    let chmod = match &c.chmod {
        None => None,
        Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
            format!("--chmod={m}: only octal modes are supported by rbk yet")
        })?),
    };
    Ok(wk::CopyStep {
        sources,
        dest: c.dest.clone(),
        workdir: None,
        chown: c.chown.clone(),
        chmod,
        link: c.link,
        exclude: c.exclude.clone(),
        add,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(env: &[(&str, &str)]) -> df::RunStep {
        df::RunStep {
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            proxy_env: vec![],
            user: None,
            workdir: "/".into(),
            mounts: vec![],
            network: df::Network::Default,
            insecure: false,
        }
    }

    #[test]
    fn step_env_overrides_the_image_env() {
        let image = ContainerConfig {
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            ..Default::default()
        };
        assert_eq!(
            run_env(&image, &run(&[("A", "2")])),
            vec!["PATH=/bin", "A=2"]
        );
    }

    #[test]
    fn image_user_applies_when_the_step_sets_none() {
        let image = ContainerConfig {
            user: Some("nobody".into()),
            ..Default::default()
        };
        assert_eq!(
            run_step(&image, &run(&[])).unwrap().0.user.as_deref(),
            Some("nobody")
        );
    }

    #[test]
    fn secret_mounts_are_refused_not_dropped() {
        let mut r = run(&[]);
        r.mounts.push(df::Mount::Secret {
            id: "tok".into(),
            target: None,
            env: None,
            required: true,
            mode: 0o400,
            uid: 0,
            gid: 0,
        });
        assert!(
            run_step(&ContainerConfig::default(), &r)
                .unwrap_err()
                .contains("secret mount \"tok\"")
        );
    }

    #[test]
    fn tmpfs_sizes_parse_with_units() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
    }
}
