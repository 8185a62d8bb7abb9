//! The resolved graph as text: one fact per line, hashed into keys and
//! printed by `rbk graph`.

use super::{Graph, ImageConfig};
use crate::step::*;

/// How a source is shown; with `names` `None` (for keys) stages are not
/// named or numbered.
fn from_text(f: &FromRef, names: Option<&[Option<String>]>) -> String {
    match f {
        FromRef::Context => "context".into(),
        FromRef::Stage { stage, .. } => match names.map(|n| &n[*stage]) {
            None => "stage".into(),
            Some(Some(n)) => format!("stage {stage} ({n})"),
            Some(None) => format!("stage {stage}"),
        },
        FromRef::Image { reference, digest } => match digest {
            Some(d) => format!("image {reference}@{d}"),
            None => format!("image {reference} (unpinned)"),
        },
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A step's resolved description, one fact per line. Hashed into the key
/// and printed by `rbk graph`, so what is shown is what is keyed.
pub(crate) fn describe(kind: &StepKind, names: Option<&[Option<String>]>) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        StepKind::Image {
            reference,
            platform,
            digest,
        } => {
            out.push(format!("image {reference}"));
            if let Some(p) = platform {
                out.push(format!("platform {p}"));
            }
            out.push(match digest {
                Some(d) => format!("digest {d}"),
                None => "digest unknown: keyed by the reference (no resolver)".into(),
            });
        }
        StepKind::Scratch => out.push("scratch".into()),
        StepKind::Stage { stage } => out.push(format!(
            "from {}",
            from_text(
                &FromRef::Stage {
                    stage: *stage,
                    step: 0
                },
                names
            )
        )),
        StepKind::Mkdir { path, user } => {
            out.push(format!("mkdir {path}"));
            if let Some(u) = user {
                out.push(format!("owner {u}"));
            }
        }
        StepKind::Run(r) => {
            out.push(format!("argv {}", json(&r.argv)));
            for (k, v) in &r.env {
                out.push(format!("env {k}={}", q(v)));
            }
            for (k, _) in &r.proxy_env {
                out.push(format!("proxy-env {k} (not keyed)"));
            }
            out.push(format!("workdir {}", r.workdir));
            if let Some(u) = &r.user {
                out.push(format!("user {u}"));
            }
            if r.network != Network::Default {
                out.push(format!("network {:?}", r.network).to_lowercase());
            }
            if r.insecure {
                out.push("security insecure".into());
            }
            for m in &r.mounts {
                out.push(match m {
                    Mount::Bind { target, from, source, readonly, .. } => {
                        format!("mount bind {target} <- {}:{} {}", from_text(from, names), q(source), if *readonly { "ro" } else { "rw" })
                    }
                    Mount::Cache { target, id, sharing, from, subdir, mode, uid, gid, readonly } => {
                        let mut s = format!("mount cache {target} id={id} sharing={sharing:?} mode={mode:o} uid={uid} gid={gid}").to_string();
                        s = s.replace("Shared", "shared").replace("Private", "private").replace("Locked", "locked");
                        if let Some((f, src)) = from {
                            s.push_str(&format!(" seed={}:{src}", from_text(f, names)));
                        }
                        if !subdir.is_empty() {
                            s.push_str(&format!(" subdir={}", q(subdir)));
                        }
                        if *readonly {
                            s.push_str(" ro");
                        }
                        s
                    }
                    Mount::Tmpfs { target, size } => format!("mount tmpfs {target} size={}", size.as_deref().unwrap_or("default")),
                    Mount::Secret { id, target, env, required, mode, uid, gid } => format!(
                        "mount secret id={id} target={} env={} required={required} mode={mode:o} uid={uid} gid={gid}",
                        target.as_deref().unwrap_or("-"),
                        env.as_deref().unwrap_or("-")
                    ),
                    Mount::Ssh { id, target, required, mode, uid, gid } => {
                        format!("mount ssh id={id} target={target} required={required} mode={mode:o} uid={uid} gid={gid}")
                    }
                    Mount::File { target, content, mode } => format!("mount file {target} mode={mode:o} content={}", q(content)),
                });
            }
        }
        StepKind::Copy(c) => {
            out.push(format!("from {}", from_text(&c.from, names)));
            for s in &c.sources {
                out.push(match s {
                    CopySource::Context { pattern, paths, pivot } => {
                        format!(
                            "source {}{} -> {} path(s): {}",
                            q(pattern),
                            pivot.as_ref().map(|p| format!(" below {}", q(p))).unwrap_or_default(),
                            paths.len(),
                            preview(paths)
                        )
                    }
                    CopySource::Path(p) => format!("source path {p}"),
                    CopySource::Inline { name, content } => {
                        format!("source heredoc {name} {}", q(content))
                    }
                    CopySource::Url { url, checksum, resolved } => {
                        let mut s = format!(
                            "source url {url} checksum={}",
                            checksum.as_deref().unwrap_or("-")
                        );
                        if let Some(d) = resolved {
                            s.push_str(&format!(" content={d}"));
                        }
                        s
                    }
                    CopySource::Git { url, keep_git_dir, checksum, commit } => {
                        let mut s = format!("source git {url} keep-git-dir={keep_git_dir}");
                        if let Some(c) = checksum {
                            s.push_str(&format!(" checksum={c}"));
                        }
                        if let Some(c) = commit {
                            s.push_str(&format!(" commit={c}"));
                        }
                        s
                    }
                });
            }
            out.push(format!("dest {}", c.dest));
            if let Some(o) = &c.chown {
                out.push(format!("chown {o}"));
            }
            if let Some(m) = &c.chmod {
                out.push(format!("chmod {m}"));
            }
            for (flag, on) in [
                ("link", c.link),
                ("parents", c.parents),
                ("unpack", c.unpack),
            ] {
                if on {
                    out.push(flag.to_string());
                }
            }
            for e in &c.exclude {
                out.push(format!("exclude {e}"));
            }
        }
    }
    out
}

fn preview(paths: &[String]) -> String {
    let mut s: Vec<String> = paths.iter().take(8).cloned().collect();
    if paths.len() > 8 {
        s.push(format!("... ({} more)", paths.len() - 8));
    }
    s.join(" ")
}

/// The image config, one fact per line (hashed into the image key).
pub(crate) fn describe_config(c: &ImageConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in &c.env {
        out.push(format!("env {k}={}", q(v)));
    }
    if let Some(w) = &c.workdir {
        out.push(format!("workdir {w}"));
    }
    if let Some(u) = &c.user {
        out.push(format!("user {u}"));
    }
    if let Some(v) = &c.entrypoint {
        out.push(format!("entrypoint {}", json(v)));
    }
    if let Some(v) = &c.cmd {
        out.push(format!("cmd {}", json(v)));
    }
    for (k, v) in &c.labels {
        out.push(format!("label {}={}", q(k), q(v)));
    }
    for p in &c.exposed_ports {
        out.push(format!("expose {p}"));
    }
    for v in &c.volumes {
        out.push(format!("volume {v}"));
    }
    if let Some(h) = &c.healthcheck {
        out.push(format!(
            "healthcheck {} interval={} timeout={} start-period={} start-interval={} retries={}",
            json(&h.test),
            h.interval.as_deref().unwrap_or("-"),
            h.timeout.as_deref().unwrap_or("-"),
            h.start_period.as_deref().unwrap_or("-"),
            h.start_interval.as_deref().unwrap_or("-"),
            h.retries.map_or("-".to_string(), |r| r.to_string())
        ));
    }
    if let Some(s) = &c.stop_signal {
        out.push(format!("stopsignal {s}"));
    }
    if let Some(s) = &c.shell {
        out.push(format!("shell {}", json(s)));
    }
    for o in &c.onbuild {
        out.push(format!("onbuild {o}"));
    }
    if let Some(m) = &c.maintainer {
        out.push(format!("maintainer {m}"));
    }
    out
}

impl Graph {
    /// A readable listing of stages, steps and keys (what `rbk graph` prints
    /// and what the corpus snapshots hold).
    pub fn render(&self) -> String {
        let names: Vec<Option<String>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let mut out = String::new();
        let t = &self.stages[self.target];
        out.push_str(&format!(
            "target: stage {}{}\n",
            t.index,
            t.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ));
        if !self.unused_build_args.is_empty() {
            out.push_str(&format!(
                "unused build args: {}\n",
                self.unused_build_args.join(", ")
            ));
        }
        for s in &self.stages {
            out.push_str(&format!(
                "\nstage {}{} (line {}){}\n",
                s.index,
                s.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default(),
                s.pos.line,
                if s.needed {
                    ""
                } else {
                    " — not needed by the target, not built"
                }
            ));
            if !s.needed {
                continue;
            }
            if !s.deps.is_empty() {
                let d: Vec<String> = s.deps.iter().map(|d| d.to_string()).collect();
                out.push_str(&format!("  needs stages: {}\n", d.join(", ")));
            }
            for id in &s.steps {
                let st = &self.steps[*id];
                out.push_str(&format!(
                    "  #{} {} L{}: {}\n",
                    st.id,
                    st.key.short(),
                    st.pos.line,
                    first_line(&st.instruction)
                ));
                for line in describe(&st.kind, Some(&names)) {
                    out.push_str(&format!("      {line}\n"));
                }
            }
            let cfg = describe_config(&s.config);
            if !cfg.is_empty() {
                out.push_str("  config:\n");
                for line in cfg {
                    out.push_str(&format!("      {line}\n"));
                }
            }
            if let Some(k) = &s.key {
                out.push_str(&format!("  image key: {}\n", k.short()));
            }
        }
        out
    }
}

fn first_line(s: &str) -> String {
    let mut l = s.lines().next().unwrap_or_default().to_string();
    if s.lines().count() > 1 {
        l.push_str(" [+heredoc]");
    }
    if l.chars().count() > 160 {
        l = l.chars().take(157).collect::<String>() + "...";
    }
    l
}

/// A list as JSON in a description line (argv, and the lists Docker
/// writes as JSON: ENTRYPOINT, CMD, SHELL, the healthcheck's test).
fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
