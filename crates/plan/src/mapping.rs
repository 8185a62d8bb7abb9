//! Build-graph steps → worker step descriptions.
//!
//! The graph says what a Dockerfile means; the worker knows nothing of
//! Dockerfiles. Here the two meet: argv, environment (the base image's
//! config under the step's ENV/ARG), user, workdir, mounts and copy
//! sources. What the worker cannot do is refused with an error naming the
//! step, never silently dropped.

use rbk_dockerfile as df;
use rbk_image::ContainerConfig;
use rbk_worker as wk;

/// Why a graph step could not be mapped (the caller adds the step's name).
pub type Unsupported = String;

/// The worker's name for a stage's rootfs (`Source::Stage`).
pub fn stage_source(stage: usize) -> String {
    format!("stage-{stage}")
}

/// Where `--from` files come from, as the worker names it: the context,
/// a stage's rootfs, or an image's (mounted like a stage's).
pub fn source_of(from: &df::FromRef) -> Result<wk::Source, Unsupported> {
    match from {
        df::FromRef::Context => Ok(wk::Source::Context),
        df::FromRef::Stage { stage, .. } => Ok(wk::Source::Stage(stage_source(*stage))),
        df::FromRef::Image { reference, digest } => Ok(wk::Source::Stage(
            crate::image_sources::source_name(reference, digest.as_deref()),
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

/// A RUN's mounts; returns the worker mounts and the scoped cache ids used.
/// Secret and ssh mounts name ids only: the values and agents reach the
/// worker beside the step (`SubmitRequest.secrets`, the ssh relay).
pub fn run_mounts(mounts: &[df::Mount]) -> Result<(Vec<wk::Mount>, Vec<String>), Unsupported> {
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
                let seed = match from {
                    None => None,
                    Some((f, path)) => Some(wk::CacheSeed { from: source_of(f)?, path: path.clone() }),
                };
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
                        seed,
                    },
                });
            }
            df::Mount::Bind { target, from, source, readonly, .. } => out.push(wk::Mount {
                target: target.clone(),
                kind: wk::MountKind::Bind { from: source_of(from)?, source: source.clone(), rw: !readonly },
            }),
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
            df::Mount::Secret { id, target, env, required, mode, uid, gid } => out.push(wk::Mount {
                // Empty: the worker's default, /run/secrets/<id> (none
                // when the secret is only a variable).
                target: target.clone().unwrap_or_default(),
                kind: wk::MountKind::Secret {
                    id: id.clone(),
                    env: env.clone(),
                    required: *required,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
            }),
            df::Mount::Ssh { id, target, required, mode, uid, gid } => out.push(wk::Mount {
                target: target.clone(),
                kind: wk::MountKind::Ssh { id: id.clone(), required: *required, mode: *mode, uid: *uid, gid: *gid },
            }),
            df::Mount::File { target, content, mode } => out.push(wk::Mount {
                target: target.clone(),
                kind: wk::MountKind::File { content: content.clone(), mode: *mode },
            }),
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
    let (mounts, caches) = run_mounts(&run.mounts)?;
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
    let from = source_of(&c.from)?;
    let mut sources = Vec::new();
    let mut add = c.unpack;
    for s in &c.sources {
        sources.push(match s {
            // `--parents` with a pivot: `above/./below`, as the worker
            // splits it.
            df::CopySource::Context { pattern, pivot, .. } => wk::CopySource::Path {
                from: wk::Source::Context,
                path: match pivot {
                    Some(p) => format!("{p}/./{}", pattern.strip_prefix(p.as_str()).unwrap_or(pattern).trim_start_matches('/')),
                    None => pattern.clone(),
                },
            },
            df::CopySource::Path(p) => wk::CopySource::Path {
                from: from.clone(),
                path: p.clone(),
            },
            // The pin, else the digest planning resolved: a worker fetching
            // other bytes fails the step rather than cache them under a key
            // that names this content.
            df::CopySource::Url { url, checksum, resolved } => {
                add = true;
                wk::CopySource::Url {
                    url: url.clone(),
                    checksum: checksum.clone().or_else(|| resolved.clone()),
                }
            }
            df::CopySource::Inline { name, content } => wk::CopySource::Inline {
                name: name.clone(),
                content: content.clone(),
            },
            // The commit planning resolved: the step's key holds it, and
            // the worker fetches exactly it.
            df::CopySource::Git { url, keep_git_dir, commit, .. } => {
                let shown = crate::remote_sources::shown(url);
                let g = df::GitRef::parse(url).map_err(|m| format!("git source {shown}: {m}"))?;
                let commit = commit.clone().ok_or_else(|| format!("git source {shown}: its ref was not resolved to a commit"))?;
                add = true;
                wk::CopySource::Git { repo: g.remote, reference: g.reference, commit, subdir: g.subdir, keep_git_dir: *keep_git_dir }
            }
        });
    }
    let chmod = c.chmod.as_deref().map(wk::Chmod::parse).transpose()?;
    Ok(wk::CopyStep {
        sources,
        dest: c.dest.clone(),
        workdir: None,
        chown: c.chown.clone(),
        chmod,
        link: c.link,
        parents: c.parents,
        exclude: c.exclude.clone(),
        add,
        unpack_urls: c.unpack && c.sources.iter().any(|s| matches!(s, df::CopySource::Url { .. })),
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
    fn a_secret_variable_names_the_id_and_variable_never_a_value() {
        let mut r = run(&[]);
        r.mounts.push(df::Mount::Secret {
            id: "tok".into(),
            target: None,
            env: Some("TOKEN".into()),
            required: true,
            mode: 0o400,
            uid: 0,
            gid: 0,
        });
        let (step, _) = run_step(&ContainerConfig::default(), &r).unwrap();
        assert_eq!(step.mounts[0].target, "", "no file: the secret is only a variable");
        assert!(matches!(&step.mounts[0].kind, wk::MountKind::Secret { id, env: Some(e), .. } if id == "tok" && e == "TOKEN"));
        assert!(!step.env.iter().any(|e| e.starts_with("TOKEN=")), "the value is the worker's to set: {:?}", step.env);
    }

    #[test]
    fn tmpfs_sizes_parse_with_units() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
    }
}
