//! Syntax tree + build options + context → the build graph.
//!
//! Two passes. The first walks every stage in file order, expanding
//! variables with the ARG/ENV scope Docker gives each instruction, tracking
//! the image config, and recording which stages each stage needs (its base,
//! `COPY --from`, `--mount=from=`). The second keeps only the stages the
//! target needs (in dependency order, rejecting cycles), resolves context
//! sources against the context and `.dockerignore`, and computes keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::canonical;
use crate::context::{Context, EntryKind, clean_absolute, clean_relative};
use crate::directives::Directives;
use crate::dockerignore::Dockerignore;
use crate::error::{Error, Pos, RawError, did_you_mean};
use crate::expand;
use crate::instruction::*;
use crate::key::{Key, KeyHasher, normalised_mode};
use crate::pattern::{Glob, PathPattern};
use crate::step::*;

/// What the caller decides about a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's name, for error messages.
    pub file_name: String,
    /// `--target`: build this stage (by name) instead of the last one.
    pub target: Option<String>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The platform built for, `os/arch[/variant]` (`TARGETPLATFORM`).
    pub target_platform: String,
    /// The platform building (`BUILDPLATFORM`).
    pub build_platform: String,
    /// Cache mount ids are prefixed with this, so that one project can never
    /// read or poison another's cache.
    pub namespace: String,
    /// The ignore file (see [`Dockerignore::load`]).
    pub dockerignore: Dockerignore,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            file_name: "Dockerfile".into(),
            target: None,
            build_args: BTreeMap::new(),
            target_platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
            namespace: "default".into(),
            dockerignore: Dockerignore::default(),
        }
    }
}

/// Maps a base image reference to its manifest digest, so that keys change
/// when a tag moves. Without one, keys use the reference string.
pub trait BaseResolver {
    fn resolve(&self, reference: &str, platform: Option<&str>) -> Option<String>;

    /// The image config's environment, so that `ENV PATH=/x:$PATH` and the
    /// like expand as Docker expands them, and RUN sees the full env. When
    /// unknown (`None`), image variables expand as unset, except `$PATH`,
    /// which takes Docker's default.
    fn env(&self, _reference: &str, _platform: Option<&str>) -> Option<Vec<(String, String)>> {
        None
    }
}

impl BaseResolver for BTreeMap<String, String> {
    fn resolve(&self, reference: &str, _platform: Option<&str>) -> Option<String> {
        self.get(reference).cloned()
    }
}

/// No resolver: every base image is keyed by its reference.
impl BaseResolver for () {
    fn resolve(&self, _: &str, _: Option<&str>) -> Option<String> {
        None
    }
}

/// The build graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub directives: Directives,
    pub stages: Vec<Stage>,
    /// Steps of the needed stages, dependencies before dependents.
    pub steps: Vec<Step>,
    /// The stage being built.
    pub target: usize,
    /// Build args that no ARG declares (Docker warns about these).
    pub unused_build_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub pos: Pos,
    /// Whether the target needs this stage; unneeded stages have no steps.
    pub needed: bool,
    /// Stages this one needs (base, `COPY --from`, `--mount=from=`).
    pub deps: BTreeSet<usize>,
    pub steps: Vec<StepId>,
    /// The image config at the end of the stage.
    pub config: ImageConfig,
    /// Key of the stage's image: its last step's key and its config.
    pub key: Option<Key>,
}

/// Image config assembled from ENV, WORKDIR, USER, CMD, ENTRYPOINT, LABEL,
/// EXPOSE, VOLUME, HEALTHCHECK, STOPSIGNAL, SHELL, ONBUILD, MAINTAINER —
/// what this Dockerfile sets, on top of the base image's own config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    /// OCI form: `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`, with
    /// interval, timeout, start period, start interval, retries.
    pub healthcheck: Option<HealthConfig>,
    pub stop_signal: Option<String>,
    pub shell: Option<Vec<String>>,
    pub onbuild: Vec<String>,
    pub maintainer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<u32>,
}

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Parses `dockerfile` and builds its graph.
pub fn build_graph(
    dockerfile: &str,
    opts: &BuildOptions,
    context: &dyn Context,
    resolver: &dyn BaseResolver,
) -> Result<Graph, Error> {
    let df = crate::parser::parse(dockerfile, &opts.file_name)?;
    Builder::new(&df, opts)
        .build(context, resolver)
        .map_err(|e| e.in_file(&opts.file_name))
}

/// A step before keys: built in the first pass.
struct Pending {
    pos: Pos,
    text: String,
    /// The instruction as keyed (see [`key_text`]).
    key_text: String,
    kind: StepKind,
    /// ARG values and ENV this step sees, sorted.
    visible: Vec<(String, String)>,
}

struct StageState {
    name: Option<String>,
    pos: Pos,
    base: Base,
    /// Stage deps with the position of the instruction that created them.
    deps: BTreeMap<usize, Pos>,
    pending: Vec<Pending>,
    config: ImageConfig,
    onbuild: Vec<Instruction>,
    /// ENV in scope at the end of the stage (base image env included).
    final_env: Vec<(String, String)>,
    /// Whether the base image's env was known (from the resolver).
    env_known: bool,
}

enum Base {
    Image {
        reference: String,
        platform: Option<String>,
    },
    Scratch,
    Stage(usize),
}

struct Builder<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    escape: char,
    meta: BTreeMap<String, Option<String>>,
    declared: BTreeSet<String>,
}

/// The variable scope inside a stage.
struct Scope {
    args: BTreeMap<String, Option<String>>,
    env: Vec<(String, String)>,
    /// The base image sets no PATH (or its env is unknown): `$PATH` expands
    /// to Docker's default.
    path_fallback: bool,
}

/// The PATH Docker uses when an image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Scope {
    fn get(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        match self.args.get(name).cloned().flatten() {
            None if name == "PATH" && self.path_fallback => Some(DEFAULT_PATH.to_string()),
            v => v,
        }
    }

    fn visible(&self) -> Vec<(String, String)> {
        let mut m: BTreeMap<String, String> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        for (k, v) in &self.env {
            m.insert(k.clone(), v.clone());
        }
        m.into_iter().collect()
    }
}

fn set_env(env: &mut Vec<(String, String)>, k: String, v: String) {
    match env.iter_mut().find(|(ek, _)| *ek == k) {
        Some(e) => e.1 = v,
        None => env.push((k, v)),
    }
}

impl<'a> Builder<'a> {
    fn new(df: &'a Dockerfile, opts: &'a BuildOptions) -> Self {
        Builder {
            df,
            opts,
            escape: df.directives.escape,
            meta: BTreeMap::new(),
            declared: BTreeSet::new(),
        }
    }

    fn platform_args(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (prefix, p) in [
            ("TARGET", &self.opts.target_platform),
            ("BUILD", &self.opts.build_platform),
        ] {
            let mut parts = p.split('/');
            m.insert(format!("{prefix}PLATFORM"), p.clone());
            m.insert(
                format!("{prefix}OS"),
                parts.next().unwrap_or_default().to_string(),
            );
            m.insert(
                format!("{prefix}ARCH"),
                parts.next().unwrap_or_default().to_string(),
            );
            m.insert(
                format!("{prefix}VARIANT"),
                parts.next().unwrap_or_default().to_string(),
            );
        }
        m
    }

    fn expand_with(
        &self,
        word: &str,
        pos: Pos,
        kw: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, RawError> {
        expand::expand(word, self.escape, lookup).map_err(|m| RawError::new(pos, Some(kw), m))
    }

    fn build(
        mut self,
        context: &dyn Context,
        resolver: &dyn BaseResolver,
    ) -> Result<Graph, RawError> {
        let insts = &self.df.instructions;
        let first_from = insts
            .iter()
            .position(|l| matches!(l.inst, Instruction::From(_)));
        let Some(first_from) = first_from else {
            let pos = insts.first().map_or(Pos::new(1, 1), |l| l.pos);
            return Err(RawError::new(
                pos,
                None,
                "no FROM instruction; a Dockerfile needs at least one stage",
            ));
        };
        // Global ARGs, usable in FROM lines.
        let platform = self.platform_args();
        for l in &insts[..first_from] {
            let Instruction::Arg(decls) = &l.inst else {
                return Err(RawError::new(
                    l.pos,
                    Some(l.inst.keyword()),
                    format!(
                        "{} before the first FROM; only ARG may come before FROM",
                        l.inst.keyword()
                    ),
                ));
            };
            for d in decls {
                self.declared.insert(d.name.clone());
                let value = match (self.opts.build_args.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => {
                        let meta = &self.meta;
                        let lookup = |n: &str| {
                            meta.get(n)
                                .cloned()
                                .flatten()
                                .or_else(|| platform.get(n).cloned())
                        };
                        Some(self.expand_with(def, l.pos, "ARG", &lookup)?)
                    }
                    (None, None) => platform.get(&d.name).cloned(),
                };
                self.meta.insert(d.name.clone(), value);
            }
        }
        // Pass 1: every stage.
        let mut stages: Vec<StageState> = Vec::new();
        let mut i = first_from;
        while i < insts.len() {
            let end = insts[i + 1..]
                .iter()
                .position(|l| matches!(l.inst, Instruction::From(_)))
                .map_or(insts.len(), |p| i + 1 + p);
            let st = self.stage(&insts[i..end], &stages, &platform, resolver)?;
            stages.push(st);
            i = end;
        }
        // Target and the stages it needs.
        let target = match &self.opts.target {
            None => stages.len() - 1,
            Some(t) => match stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            {
                Some(i) => i,
                None => {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    let mut msg = format!("target stage '{t}' not found");
                    match did_you_mean(t, names.iter().copied()) {
                        Some(s) => msg.push_str(&format!("; did you mean '{s}'?")),
                        None if names.is_empty() => {
                            msg.push_str("; the Dockerfile has no named stages")
                        }
                        None => msg.push_str(&format!("; stages are: {}", names.join(", "))),
                    }
                    return Err(RawError::new(Pos::new(1, 1), None, msg));
                }
            },
        };
        let order = topo_order(&stages, target)?;
        // Pass 2: keys for the needed stages.
        let mut ctx = ContextIndex::new(context, &self.opts.dockerignore);
        let mut steps: Vec<Step> = Vec::new();
        let mut stage_steps: Vec<Vec<StepId>> = vec![Vec::new(); stages.len()];
        let mut stage_keys: Vec<Option<Key>> = vec![None; stages.len()];
        for &si in &order {
            let st = &mut stages[si];
            let pending = std::mem::take(&mut st.pending);
            let mut parent: Option<StepId> = match st.base {
                Base::Stage(b) => stage_steps[b].last().copied(),
                _ => None,
            };
            for p in pending {
                let id = steps.len();
                let mut kind = p.kind;
                let mut h = KeyHasher::new("step");
                if let Some(par) = parent {
                    h.key("parent", &steps[par].key);
                }
                h.str("instruction", &p.key_text);
                for (k, v) in &p.visible {
                    h.str("var", &format!("{k}={v}"));
                }
                resolve_kind(
                    &mut kind,
                    &stage_steps,
                    &steps,
                    resolver,
                    &mut ctx,
                    &mut h,
                    p.pos,
                    &self.opts.namespace,
                )?;
                for line in describe(&kind, None) {
                    // Proxy settings reach the command but never the key.
                    if !line.starts_with("proxy-env ") {
                        h.str("spec", &line);
                    }
                }
                let key = h.finish();
                steps.push(Step {
                    id,
                    stage: si,
                    pos: p.pos,
                    instruction: p.text,
                    parent,
                    kind,
                    key,
                });
                stage_steps[si].push(id);
                parent = Some(id);
            }
            let mut h = KeyHasher::new("image");
            if let Some(last) = parent {
                h.key("last", &steps[last].key);
            }
            for line in describe_config(&st.config) {
                h.str("config", &line);
            }
            stage_keys[si] = Some(h.finish());
        }
        let needed: BTreeSet<usize> = order.iter().copied().collect();
        let unused_build_args = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect();
        let stages = stages
            .into_iter()
            .enumerate()
            .map(|(i, s)| Stage {
                index: i,
                name: s.name,
                pos: s.pos,
                needed: needed.contains(&i),
                deps: s.deps.keys().copied().collect(),
                steps: std::mem::take(&mut stage_steps[i]),
                config: s.config,
                key: stage_keys[i],
            })
            .collect();
        Ok(Graph {
            directives: self.df.directives.clone(),
            stages,
            steps,
            target,
            unused_build_args,
        })
    }

    /// Pass 1 for one stage: `insts[0]` is its FROM.
    fn stage(
        &mut self,
        insts: &[Located],
        earlier: &[StageState],
        platform: &BTreeMap<String, String>,
        resolver: &dyn BaseResolver,
    ) -> Result<StageState, RawError> {
        let Instruction::From(from) = &insts[0].inst else {
            return Err(RawError::new(
                insts[0].pos,
                None,
                "internal error: a stage must start with FROM",
            ));
        };
        let pos = insts[0].pos;
        let meta = &self.meta;
        let meta_lookup = |n: &str| {
            meta.get(n)
                .cloned()
                .flatten()
                .or_else(|| platform.get(n).cloned())
        };
        let image = self.expand_with(&from.image, pos, "FROM", &meta_lookup)?;
        if image.is_empty() {
            return Err(RawError::new(
                pos,
                Some("FROM"),
                format!("base image '{}' expands to an empty string", from.image),
            ));
        }
        let from_platform = match &from.platform {
            Some(p) => Some(self.expand_with(p, pos, "FROM", &meta_lookup)?),
            None => None,
        };
        if let Some(a) = &from.alias
            && earlier.iter().any(|s| s.name.as_deref() == Some(a))
        {
            return Err(RawError::new(
                pos,
                Some("FROM"),
                format!("duplicate stage name '{a}'; stage names must be unique"),
            ));
        }
        let lower = image.to_ascii_lowercase();
        let base = if let Some(b) = earlier
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            Base::Stage(b)
        } else if lower == "scratch" {
            Base::Scratch
        } else {
            Base::Image {
                reference: image.clone(),
                platform: from_platform.clone(),
            }
        };
        let mut st = StageState {
            name: from.alias.clone(),
            pos,
            base,
            deps: BTreeMap::new(),
            pending: Vec::new(),
            config: ImageConfig::default(),
            onbuild: Vec::new(),
            final_env: Vec::new(),
            env_known: true,
        };
        let mut scope = Scope {
            args: BTreeMap::new(),
            env: Vec::new(),
            path_fallback: false,
        };
        let mut triggers: Vec<Located> = Vec::new();
        let base_kind = match &st.base {
            Base::Stage(b) => {
                st.deps.insert(*b, pos);
                st.config = earlier[*b].config.clone();
                st.config.onbuild.clear();
                triggers = earlier[*b]
                    .onbuild
                    .iter()
                    .map(|i| Located {
                        pos,
                        inst: i.clone(),
                    })
                    .collect();
                scope.env = earlier[*b].final_env.clone();
                st.env_known = earlier[*b].env_known;
                StepKind::Stage { stage: *b }
            }
            Base::Scratch => StepKind::Scratch,
            Base::Image {
                reference,
                platform,
            } => {
                match resolver.env(reference, platform.as_deref()) {
                    Some(env) => scope.env = env,
                    None => st.env_known = false,
                }
                StepKind::Image {
                    reference: reference.clone(),
                    platform: platform.clone(),
                    digest: None,
                }
            }
        };
        // Docker's rule: an image that sets no PATH gets the default one.
        scope.path_fallback = !scope.env.iter().any(|(k, _)| k == "PATH");
        st.pending.push(Pending {
            pos,
            text: canonical::instruction(&insts[0].inst)
                .trim_end()
                .to_string(),
            key_text: key_text(&insts[0].inst, matches!(st.base, Base::Stage(_))),
            kind: base_kind,
            visible: Vec::new(),
        });
        let mut cmd_set_here = false;
        for l in triggers.iter().chain(&insts[1..]) {
            self.instruction(l, &mut st, &mut scope, earlier, &mut cmd_set_here)?;
        }
        st.final_env = scope.env;
        Ok(st)
    }

    fn instruction(
        &mut self,
        l: &Located,
        st: &mut StageState,
        scope: &mut Scope,
        earlier: &[StageState],
        cmd_set_here: &mut bool,
    ) -> Result<(), RawError> {
        let pos = l.pos;
        let kw = l.inst.keyword();
        let text = canonical::instruction(&l.inst);
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        let key_text = key_text(&l.inst, false);
        let err = |m: String| RawError::new(pos, Some(kw), m);
        let shell: Vec<String> = st
            .config
            .shell
            .clone()
            .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect());
        let x = |w: &str, scope: &Scope| -> Result<String, RawError> {
            expand::expand(w, self.escape, &|n| scope.get(n))
                .map_err(|m| RawError::new(pos, Some(kw), m))
        };
        let as_argv = |c: &CmdForm| match c {
            CmdForm::Shell(s) => shell
                .iter()
                .cloned()
                .chain(std::iter::once(s.clone()))
                .collect::<Vec<_>>(),
            CmdForm::Exec(v) => v.clone(),
        };
        let workdir = st.config.workdir.clone().unwrap_or_else(|| "/".into());
        match &l.inst {
            Instruction::From(_) => return Err(err("FROM cannot appear here".into())),
            Instruction::Arg(decls) => {
                for d in decls {
                    self.declared.insert(d.name.clone());
                    let value = match (self.opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(x(def, scope)?),
                        (None, None) => match self.meta.get(&d.name) {
                            Some(v) => v.clone(),
                            None => self.platform_args().get(&d.name).cloned(),
                        },
                    };
                    scope.args.insert(d.name.clone(), value);
                }
            }
            Instruction::Env(nv) => {
                for (k, v) in &nv.pairs {
                    let k = x(k, scope)?;
                    let v = x(v, scope)?;
                    set_env(&mut scope.env, k.clone(), v.clone());
                    set_env(&mut st.config.env, k, v);
                }
            }
            Instruction::Label(nv) => {
                for (k, v) in &nv.pairs {
                    let k = x(k, scope)?;
                    let v = x(v, scope)?;
                    st.config.labels.insert(k, v);
                }
            }
            Instruction::Maintainer(m) => {
                st.config.maintainer = Some(m.clone());
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    let p = x(p, scope)?;
                    if !valid_port(&p) {
                        return Err(err(format!(
                            "invalid port '{p}'; expected PORT[-PORT][/tcp|/udp|/sctp]"
                        )));
                    }
                    let p = if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    };
                    st.config.exposed_ports.insert(p);
                }
            }
            Instruction::Volume(list) => {
                for v in &list.items {
                    st.config.volumes.insert(x(v, scope)?);
                }
            }
            Instruction::User(u) => st.config.user = Some(x(u, scope)?),
            Instruction::Stopsignal(s) => st.config.stop_signal = Some(x(s, scope)?),
            Instruction::Shell(v) => st.config.shell = Some(v.clone()),
            Instruction::Cmd(c) => {
                st.config.cmd = Some(as_argv(c));
                *cmd_set_here = true;
            }
            Instruction::Entrypoint(c) => {
                st.config.entrypoint = Some(as_argv(c));
                if !*cmd_set_here {
                    // Docker: a new ENTRYPOINT resets an inherited CMD.
                    st.config.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => {
                st.config.healthcheck = Some(match h {
                    Healthcheck::None => HealthConfig {
                        test: vec!["NONE".into()],
                        interval: None,
                        timeout: None,
                        start_period: None,
                        start_interval: None,
                        retries: None,
                    },
                    Healthcheck::Check {
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                        cmd,
                    } => {
                        for (n, v) in [
                            ("interval", interval),
                            ("timeout", timeout),
                            ("start-period", start_period),
                            ("start-interval", start_interval),
                        ] {
                            if let Some(v) = v
                                && !valid_duration(v)
                            {
                                return Err(err(format!(
                                    "invalid --{n}={v}; expected a duration like 30s or 1m30s"
                                )));
                            }
                        }
                        let retries = match retries {
                            Some(r) => Some(r.parse::<u32>().map_err(|_| {
                                err(format!("invalid --retries={r}; expected a whole number"))
                            })?),
                            None => None,
                        };
                        let test = match cmd {
                            CmdForm::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                            CmdForm::Exec(v) => std::iter::once("CMD".to_string())
                                .chain(v.iter().cloned())
                                .collect(),
                        };
                        HealthConfig {
                            test,
                            interval: interval.clone(),
                            timeout: timeout.clone(),
                            start_period: start_period.clone(),
                            start_interval: start_interval.clone(),
                            retries,
                        }
                    }
                });
            }
            Instruction::Onbuild(inner) => {
                st.config
                    .onbuild
                    .push(canonical::instruction(inner).trim_end().to_string());
                st.onbuild.push((**inner).clone());
            }
            Instruction::Workdir(w) => {
                let w = x(w, scope)?;
                let path = if w.starts_with('/') {
                    clean_absolute(&w)
                } else {
                    clean_absolute(&format!("{workdir}/{w}"))
                };
                st.config.workdir = Some(path.clone());
                st.pending.push(Pending {
                    pos,
                    text,
                    key_text,
                    kind: StepKind::Mkdir {
                        path,
                        user: st.config.user.clone(),
                    },
                    visible: scope.visible(),
                });
            }
            Instruction::Run(r) => {
                let argv = match &r.cmd {
                    CmdForm::Exec(v) => v.clone(),
                    CmdForm::Shell(s) => self.run_script(s, &r.heredocs, &shell),
                };
                let mut mounts = Vec::new();
                for m in &r.mounts {
                    mounts.push(self.mount(m, scope, st, earlier, pos)?);
                }
                if let (CmdForm::Shell(s), [h]) = (&r.cmd, r.heredocs.as_slice())
                    && is_lone_heredoc(s, self.escape)
                    && h.content.starts_with("#!")
                {
                    mounts.push(Mount::File {
                        target: format!("/dev/pipes/{}", h.name),
                        content: h.content.clone(),
                        mode: 0o755,
                    });
                }
                let network = match r.network.as_deref() {
                    Some("none") => Network::None,
                    Some("host") => Network::Host,
                    _ => Network::Default,
                };
                let proxy_env = PROXY_ARGS
                    .iter()
                    .filter(|p| !scope.args.contains_key(**p))
                    .filter_map(|p| {
                        self.opts
                            .build_args
                            .get(*p)
                            .map(|v| (p.to_string(), v.clone()))
                    })
                    .collect();
                let step = RunStep {
                    argv,
                    env: scope.visible(),
                    proxy_env,
                    user: st.config.user.clone(),
                    workdir,
                    mounts,
                    network,
                    insecure: r.security.as_deref() == Some("insecure"),
                };
                st.pending.push(Pending {
                    pos,
                    text,
                    key_text,
                    kind: StepKind::Run(step),
                    visible: scope.visible(),
                });
            }
            Instruction::Copy(c) => {
                let step = self.copy(c, scope, st, earlier, pos, &workdir)?;
                st.pending.push(Pending {
                    pos,
                    text,
                    key_text,
                    kind: StepKind::Copy(step),
                    visible: scope.visible(),
                });
            }
        }
        Ok(())
    }

    /// The argv for a shell-form RUN, heredocs included.
    fn run_script(&self, s: &str, heredocs: &[Heredoc], shell: &[String]) -> Vec<String> {
        if let [h] = heredocs
            && is_lone_heredoc(s, self.escape)
        {
            if h.content.starts_with("#!") {
                return vec![format!("/dev/pipes/{}", h.name)];
            }
            return shell
                .iter()
                .cloned()
                .chain(std::iter::once(h.content.clone()))
                .collect();
        }
        let mut script = s.to_string();
        for h in heredocs {
            script.push('\n');
            script.push_str(&h.content);
            script.push_str(&h.name);
        }
        shell
            .iter()
            .cloned()
            .chain(std::iter::once(script))
            .collect()
    }

    /// Resolves a `--from=` / `from=` value to a stage or an image.
    fn resolve_from(
        &self,
        v: &str,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
        kw: &str,
    ) -> Result<FromRef, RawError> {
        let err = |m: String| RawError::new(pos, Some(kw), m);
        let current = earlier.len();
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
            let idx: usize = v
                .parse()
                .map_err(|_| err(format!("stage index {v} is too large")))?;
            if idx >= current {
                return Err(err(format!(
                    "stage index {idx} does not name an earlier stage (this is stage {current})"
                )));
            }
            st.deps.entry(idx).or_insert(pos);
            return Ok(FromRef::Stage {
                stage: idx,
                step: 0,
            });
        }
        let lower = v.to_ascii_lowercase();
        if st.name.as_deref() == Some(lower.as_str()) {
            return Err(err(format!("stage '{v}' cannot copy or mount from itself")));
        }
        if let Some(i) = earlier
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            st.deps.entry(i).or_insert(pos);
            return Ok(FromRef::Stage { stage: i, step: 0 });
        }
        // A later stage: Docker allows it; the order check finds cycles.
        if let Some(i) = self.later_stage_index(&lower, current) {
            st.deps.entry(i).or_insert(pos);
            return Ok(FromRef::Stage { stage: i, step: 0 });
        }
        if v.contains([':', '/', '@']) {
            return Ok(FromRef::Image {
                reference: v.to_string(),
                digest: None,
            });
        }
        let names: Vec<String> = self.all_stage_names();
        let mut msg = format!("unknown stage '{v}'");
        if let Some(s) = did_you_mean(v, names.iter().map(String::as_str)) {
            msg.push_str(&format!("; did you mean '{s}'?"));
        }
        msg.push_str(&format!(
            " (to use an image, name it with a tag: '{v}:latest')"
        ));
        Err(err(msg))
    }

    fn all_stage_names(&self) -> Vec<String> {
        self.df
            .instructions
            .iter()
            .filter_map(|l| match &l.inst {
                Instruction::From(f) => f.alias.clone(),
                _ => None,
            })
            .collect()
    }

    fn later_stage_index(&self, name: &str, current: usize) -> Option<usize> {
        let mut idx = 0usize;
        for l in &self.df.instructions {
            if let Instruction::From(f) = &l.inst {
                if idx > current && f.alias.as_deref() == Some(name) {
                    return Some(idx);
                }
                idx += 1;
            }
        }
        None
    }

    fn mount(
        &self,
        m: &MountSpec,
        scope: &Scope,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
    ) -> Result<Mount, RawError> {
        let err = |msg: String| RawError::new(pos, Some("RUN"), msg);
        let mut o: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &m.opts {
            o.insert(
                k.clone(),
                expand::expand(v, self.escape, &|n| scope.get(n)).map_err(&err)?,
            );
        }
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
        let from = match o.get("from") {
            Some(f) => Some(self.resolve_from(f, st, earlier, pos, "RUN")?),
            None => None,
        };
        Ok(match m.kind {
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
                    target: target.unwrap_or_default(),
                    from,
                    source,
                    readonly: flag("readonly", true),
                }
            }
            MountKind::Cache => {
                let target = target.unwrap_or_default();
                let id = o.get("id").cloned().unwrap_or_else(|| target.clone());
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
                    mode: num("mode", 0o755, true)?,
                    uid: num("uid", 0, false)?,
                    gid: num("gid", 0, false)?,
                    readonly: flag("readonly", false),
                }
            }
            MountKind::Tmpfs => Mount::Tmpfs {
                target: target.unwrap_or_default(),
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

    fn copy(
        &self,
        c: &Copy,
        scope: &Scope,
        st: &mut StageState,
        earlier: &[StageState],
        pos: Pos,
        workdir: &str,
    ) -> Result<CopyStep, RawError> {
        let kw = if c.add { "ADD" } else { "COPY" };
        let err = |m: String| RawError::new(pos, Some(kw), m);
        let x = |w: &str| expand::expand(w, self.escape, &|n| scope.get(n)).map_err(&err);
        let from = match &c.from {
            Some(f) => self.resolve_from(&x(f)?, st, earlier, pos, kw)?,
            None => FromRef::Context,
        };
        let chown = c.chown.as_deref().map(&x).transpose()?;
        let chmod = c.chmod.as_deref().map(&x).transpose()?;
        if let Some(m) = &chmod
            && !valid_chmod(m)
        {
            return Err(err(format!(
                "invalid --chmod={m}; expected an octal mode like 0755 or a symbolic one like u+x"
            )));
        }
        let exclude: Vec<String> = c.exclude.iter().map(|e| x(e)).collect::<Result<_, _>>()?;
        Dockerignore::from_patterns(&exclude)
            .map_err(|m| err(format!("invalid --exclude: {m}")))?;
        let mut sources = Vec::new();
        for s in &c.sources {
            if let Some((name, _, _)) = crate::lexer::heredoc_marker(s, self.escape)
                && let Some(h) = c.heredocs.iter().find(|h| h.name == name)
            {
                let content = if h.expand {
                    expand::expand_heredoc(&h.content, self.escape, &|n| scope.get(n))
                        .map_err(&err)?
                } else {
                    h.content.clone()
                };
                sources.push(CopySource::Inline { name, content });
                continue;
            }
            let s = x(s)?;
            let is_url = s.starts_with("http://") || s.starts_with("https://");
            let is_git = s.starts_with("git@")
                || s.starts_with("git://")
                || (is_url && (s.ends_with(".git") || s.contains(".git#")));
            if is_url || is_git {
                if !c.add {
                    return Err(err(format!(
                        "COPY cannot fetch '{s}'; use ADD for URLs and git repositories"
                    )));
                }
                if !matches!(from, FromRef::Context) {
                    return Err(err(format!(
                        "a URL source '{s}' cannot be combined with --from"
                    )));
                }
                sources.push(if is_git {
                    CopySource::Git {
                        url: s,
                        keep_git_dir: c.keep_git_dir,
                    }
                } else {
                    CopySource::Url {
                        url: s,
                        checksum: None,
                    }
                });
                continue;
            }
            match from {
                FromRef::Context => {
                    let cleaned = clean_relative(&s)
                        .ok_or_else(|| err(format!("source '{s}' is outside the build context")))?;
                    PathPattern::compile(&cleaned, false)
                        .map_err(|m| err(format!("invalid source pattern: {m}")))?;
                    sources.push(CopySource::Context {
                        pattern: cleaned,
                        paths: Vec::new(),
                    });
                }
                _ => sources.push(CopySource::Path(clean_absolute(&s))),
            }
        }
        if let Some(ck) = &c.checksum {
            let ck = x(ck)?;
            let mut n = 0;
            for s in &mut sources {
                match s {
                    CopySource::Url { checksum, .. } => {
                        *checksum = Some(ck.clone());
                        n += 1;
                    }
                    CopySource::Git { .. } => n += 1,
                    _ => {}
                }
            }
            if n == 0 {
                return Err(err(
                    "--checksum can only be used with HTTP(S) and git sources".into(),
                ));
            }
        }
        let dest_raw = x(&c.dest)?;
        let dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        if sources.len() > 1 && !dir {
            return Err(err(format!(
                "with more than one source the destination must be a directory ending in '/', not '{dest_raw}'"
            )));
        }
        let mut dest = if dest_raw.starts_with('/') {
            clean_absolute(&dest_raw)
        } else {
            clean_absolute(&format!("{workdir}/{dest_raw}"))
        };
        if dir && dest != "/" {
            dest.push('/');
        }
        // Docker extracts local archives, not downloaded ones, unless told.
        let remote = sources
            .iter()
            .any(|s| matches!(s, CopySource::Url { .. } | CopySource::Git { .. }));
        let unpack = c.add && c.unpack.unwrap_or(!remote);
        Ok(CopyStep {
            from,
            sources,
            dest,
            chown,
            chmod,
            link: c.link,
            parents: c.parents,
            exclude,
            unpack,
        })
    }
}

fn is_lone_heredoc(s: &str, escape: char) -> bool {
    let w = crate::parser::words(s, escape);
    w.len() == 1 && crate::lexer::heredoc_marker(&w[0], escape).is_some()
}

fn valid_port(p: &str) -> bool {
    let (range, proto) = match p.split_once('/') {
        Some((r, pr)) => (r, Some(pr)),
        None => (p, None),
    };
    let num = |s: &str| !s.is_empty() && s.len() <= 5 && s.chars().all(|c| c.is_ascii_digit());
    let range_ok = match range.split_once('-') {
        Some((a, b)) => num(a) && num(b),
        None => num(range),
    };
    range_ok
        && proto.is_none_or(|pr| matches!(pr.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp"))
}

fn valid_duration(d: &str) -> bool {
    let mut saw_unit = false;
    let mut digits = false;
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            digits = true;
        } else if matches!(c, 'h' | 'm' | 's' | 'u' | 'n' | 'µ') && digits {
            if (c == 'm' || c == 'u' || c == 'n' || c == 'µ') && chars.peek() == Some(&'s') {
                chars.next();
            }
            saw_unit = true;
            digits = false;
        } else {
            return false;
        }
    }
    saw_unit && !digits
}

fn valid_chmod(m: &str) -> bool {
    if !m.is_empty() && m.len() <= 4 && m.chars().all(|c| ('0'..='7').contains(&c)) {
        return true;
    }
    !m.is_empty()
        && m.split(',').all(|clause| {
            let t = clause.trim_start_matches(['u', 'g', 'o', 'a']);
            let Some(rest) = t.strip_prefix(['+', '-', '=']) else {
                return false;
            };
            rest.chars()
                .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
        })
}

/// Stages the target needs, dependencies first; a cycle is an error that
/// names the stages in it.
fn topo_order(stages: &[StageState], target: usize) -> Result<Vec<usize>, RawError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    let label = |i: usize| {
        stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage {i}"))
    };
    // Iterative DFS: deep dependency chains must not overflow the stack.
    let mut stack: Vec<(usize, Vec<(usize, Pos)>)> = Vec::new();
    mark[target] = Mark::Active;
    stack.push((
        target,
        stages[target]
            .deps
            .iter()
            .map(|(d, p)| (*d, *p))
            .rev()
            .collect(),
    ));
    while let Some((node, todo)) = stack.last_mut() {
        let node = *node;
        match todo.pop() {
            Some((dep, pos)) => match mark[dep] {
                Mark::Done => {}
                Mark::Active => {
                    let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|(n, _)| label(*n)).collect();
                    cycle.push(label(dep));
                    return Err(RawError::new(
                        pos,
                        None,
                        format!("circular dependency between stages: {}", cycle.join(" -> ")),
                    ));
                }
                Mark::New => {
                    mark[dep] = Mark::Active;
                    stack.push((
                        dep,
                        stages[dep]
                            .deps
                            .iter()
                            .map(|(d, p)| (*d, *p))
                            .rev()
                            .collect(),
                    ));
                }
            },
            None => {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// The context, walked once, with `.dockerignore` applied; file digests are
/// computed on first use.
struct ContextIndex<'a> {
    ctx: &'a dyn Context,
    ignore: &'a Dockerignore,
    entries: Option<BTreeMap<String, EntryKind>>,
    digests: HashMap<String, [u8; 32]>,
}

const MAX_CONTEXT_DEPTH: usize = 256;

impl<'a> ContextIndex<'a> {
    fn new(ctx: &'a dyn Context, ignore: &'a Dockerignore) -> Self {
        ContextIndex {
            ctx,
            ignore,
            entries: None,
            digests: HashMap::new(),
        }
    }

    fn entries(&mut self, pos: Pos, kw: &str) -> Result<&BTreeMap<String, EntryKind>, RawError> {
        if self.entries.is_none() {
            let mut out = BTreeMap::new();
            let mut todo = vec![(String::new(), 0usize)];
            while let Some((dir, depth)) = todo.pop() {
                if depth > MAX_CONTEXT_DEPTH {
                    return Err(RawError::new(
                        pos,
                        Some(kw),
                        format!(
                            "build context is nested deeper than {MAX_CONTEXT_DEPTH} directories at '{dir}'"
                        ),
                    ));
                }
                let list = self.ctx.list(&dir).map_err(|e| {
                    RawError::new(pos, Some(kw), format!("cannot read the build context: {e}"))
                })?;
                for e in list {
                    let path = if dir.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{dir}/{}", e.name)
                    };
                    let excluded = self.ignore.excludes(&path);
                    if let EntryKind::Dir { .. } = e.kind
                        && (!excluded || self.ignore_has_exceptions())
                    {
                        todo.push((path.clone(), depth + 1));
                    }
                    if !excluded {
                        out.insert(path, e.kind);
                    }
                }
            }
            self.entries = Some(out);
        }
        Ok(self.entries.as_ref().expect("just filled"))
    }

    fn ignore_has_exceptions(&self) -> bool {
        // Walk an excluded directory only if a `!` rule could re-include
        // something inside it (node_modules is never read otherwise).
        self.ignore.has_exceptions()
    }

    /// Paths matched by `pattern`, with directory contents, after `exclude`.
    fn select(
        &mut self,
        pattern: &str,
        exclude: &Dockerignore,
        pos: Pos,
        kw: &str,
    ) -> Result<Vec<String>, RawError> {
        let entries = self.entries(pos, kw)?;
        let mut roots: Vec<String> = Vec::new();
        if pattern.is_empty() {
            roots.push(String::new());
        } else if Glob::has_magic(pattern) {
            let p = PathPattern::compile(pattern, false)
                .map_err(|m| RawError::new(pos, Some(kw), m))?;
            roots.extend(entries.keys().filter(|k| p.matches(k)).cloned());
        } else if entries.contains_key(pattern) {
            roots.push(pattern.to_string());
        }
        if roots.is_empty() {
            return Err(RawError::new(
                pos,
                Some(kw),
                format!(
                    "source '{pattern}' not found in the build context (or excluded by .dockerignore)"
                ),
            ));
        }
        let mut out = BTreeSet::new();
        for root in roots {
            let is_dir =
                root.is_empty() || matches!(entries.get(&root), Some(EntryKind::Dir { .. }));
            if !is_dir {
                let name = root.rsplit('/').next().unwrap_or(&root);
                if !exclude.excludes(name) {
                    out.insert(root);
                }
                continue;
            }
            if !root.is_empty() {
                out.insert(root.clone());
            }
            let prefix = if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            };
            for k in entries
                .range(prefix.clone()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(&prefix))
            {
                if !exclude.excludes(&k[prefix.len()..]) {
                    out.insert(k.clone());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Hashes names, kinds, normalised modes, contents and symlink targets.
    fn content_key(&mut self, paths: &[String], pos: Pos, kw: &str) -> Result<Key, RawError> {
        let mut h = KeyHasher::new("context");
        for p in paths {
            let kind = self.entries(pos, kw)?.get(p).cloned();
            h.str("path", p);
            match kind {
                Some(EntryKind::File { mode, .. }) => {
                    let d = match self.digests.get(p) {
                        Some(d) => *d,
                        None => {
                            let bytes = self.ctx.read(p).map_err(|e| {
                                RawError::new(
                                    pos,
                                    Some(kw),
                                    format!("cannot read context file: {e}"),
                                )
                            })?;
                            let d = *blake3::hash(&bytes).as_bytes();
                            self.digests.insert(p.clone(), d);
                            d
                        }
                    };
                    h.field("file", &d);
                    h.field("mode", &normalised_mode(mode).to_le_bytes());
                }
                Some(EntryKind::Dir { .. }) => {
                    h.field("dir", &[]);
                }
                Some(EntryKind::Symlink { target }) => {
                    h.str("symlink", &target);
                }
                None => {
                    h.field("missing", &[]);
                }
            }
        }
        Ok(h.finish())
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve_kind(
    kind: &mut StepKind,
    stage_steps: &[Vec<StepId>],
    steps: &[Step],
    resolver: &dyn BaseResolver,
    ctx: &mut ContextIndex<'_>,
    h: &mut KeyHasher,
    pos: Pos,
    _namespace: &str,
) -> Result<(), RawError> {
    let fix_from = |f: &mut FromRef, h: &mut KeyHasher| match f {
        FromRef::Stage { stage, step } => {
            // Stages are processed dependencies first; a stage with no steps
            // cannot exist (every stage has its base step).
            *step = stage_steps[*stage].last().copied().unwrap_or_default();
            h.key("from-stage", &steps[*step].key);
        }
        FromRef::Image { reference, digest } => {
            *digest = resolver.resolve(reference, None);
            h.opt("from-image-digest", digest.as_deref());
        }
        FromRef::Context => {}
    };
    match kind {
        StepKind::Image {
            reference,
            platform,
            digest,
        } => {
            *digest = resolver.resolve(reference, platform.as_deref());
            h.opt("image-digest", digest.as_deref());
        }
        StepKind::Run(r) => {
            for m in &mut r.mounts {
                match m {
                    Mount::Bind { from, source, .. } => {
                        if let FromRef::Context = from {
                            let paths = ctx.select(source, &Dockerignore::default(), pos, "RUN")?;
                            let k = ctx.content_key(&paths, pos, "RUN")?;
                            h.key("bind-content", &k);
                        }
                        fix_from(from, h);
                    }
                    Mount::Cache {
                        from: Some((f, _)), ..
                    } => fix_from(f, h),
                    _ => {}
                }
            }
        }
        StepKind::Copy(c) => {
            let kw = if c.unpack { "ADD" } else { "COPY" };
            fix_from(&mut c.from, h);
            let exclude = Dockerignore::from_patterns(&c.exclude)
                .map_err(|m| RawError::new(pos, Some(kw), m))?;
            for s in &mut c.sources {
                if let CopySource::Context { pattern, paths } = s {
                    *paths = ctx.select(pattern, &exclude, pos, kw)?;
                    let k = ctx.content_key(paths, pos, kw)?;
                    h.key("copy-content", &k);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The instruction as hashed into keys: canonical, but without stage names
/// and `--from` values (the source stage's key or image digest is hashed
/// instead), so renaming or reordering stages keeps the cache.
fn key_text(inst: &Instruction, base_is_stage: bool) -> String {
    let mut i = inst.clone();
    match &mut i {
        Instruction::From(f) => {
            f.alias = None;
            if base_is_stage {
                f.image = "<stage>".into();
            }
        }
        Instruction::Copy(c) if c.from.is_some() => c.from = Some("<source>".into()),
        Instruction::Run(r) => {
            for m in &mut r.mounts {
                if let Some(f) = m.opts.get_mut("from") {
                    *f = "<source>".into();
                }
            }
        }
        _ => {}
    }
    canonical::instruction(&i).trim_end().to_string()
}

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
            out.push(format!(
                "argv {}",
                serde_json::to_string(&r.argv).unwrap_or_default()
            ));
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
                    Mount::Bind { target, from, source, readonly } => {
                        format!("mount bind {target} <- {}:{} {}", from_text(from, names), q(source), if *readonly { "ro" } else { "rw" })
                    }
                    Mount::Cache { target, id, sharing, from, mode, uid, gid, readonly } => {
                        let mut s = format!("mount cache {target} id={id} sharing={sharing:?} mode={mode:o} uid={uid} gid={gid}").to_string();
                        s = s.replace("Shared", "shared").replace("Private", "private").replace("Locked", "locked");
                        if let Some((f, src)) = from {
                            s.push_str(&format!(" seed={}:{src}", from_text(f, names)));
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
                    CopySource::Context { pattern, paths } => {
                        format!(
                            "source {} -> {} path(s): {}",
                            q(pattern),
                            paths.len(),
                            preview(paths)
                        )
                    }
                    CopySource::Path(p) => format!("source path {p}"),
                    CopySource::Inline { name, content } => {
                        format!("source heredoc {name} {}", q(content))
                    }
                    CopySource::Url { url, checksum } => format!(
                        "source url {url} checksum={}",
                        checksum.as_deref().unwrap_or("-")
                    ),
                    CopySource::Git { url, keep_git_dir } => {
                        format!("source git {url} keep-git-dir={keep_git_dir}")
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
        out.push(format!(
            "entrypoint {}",
            serde_json::to_string(v).unwrap_or_default()
        ));
    }
    if let Some(v) = &c.cmd {
        out.push(format!(
            "cmd {}",
            serde_json::to_string(v).unwrap_or_default()
        ));
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
            serde_json::to_string(&h.test).unwrap_or_default(),
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
        out.push(format!(
            "shell {}",
            serde_json::to_string(s).unwrap_or_default()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ports_and_modes() {
        assert!(valid_duration("30s"));
        assert!(valid_duration("1m30s"));
        assert!(valid_duration("500ms"));
        assert!(!valid_duration("30"));
        assert!(valid_port("80"));
        assert!(valid_port("8000-8010/udp"));
        assert!(!valid_port("http"));
        assert!(valid_chmod("0755"));
        assert!(valid_chmod("u+x,g-w"));
        assert!(!valid_chmod("999"));
    }
}
