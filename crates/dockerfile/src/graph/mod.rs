//! Syntax tree + build options + context → the build graph.
//!
//! Two passes. The first walks every stage in file order, expanding
//! variables with the ARG/ENV scope Docker gives each instruction, tracking
//! the image config, and recording which stages each stage needs (its base,
//! `COPY --from`, `--mount=from=`). The second keeps only the stages the
//! target needs (in dependency order, rejecting cycles), resolves context
//! sources against the context and `.dockerignore`, and computes keys.
//!
//! This file holds the output types and the two passes' driver; pass 1's
//! per-instruction rules are in `instruction`, `mount`, `copy` and
//! `from_ref`, pass 2's in `order`, `context_index` and `resolve`, the
//! textual form in `describe`, and value syntax checks in `validate`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::canonical;
use crate::check_config::{CHECK_BUILD_ARG, CheckConfig};
use crate::checks::Check;
use crate::context::Context;
use crate::directives::Directives;
use crate::error::{Error, Pos, RawError, did_you_mean};
use crate::expand;
use crate::instruction::*;
use crate::key::{Key, KeyHasher};
use crate::step::*;

mod context_index;
mod copy;
mod describe;
mod from_ref;
mod instruction;
mod mount;
mod onbuild;
mod options;
mod order;
mod platform;
mod resolve;
mod validate;

use context_index::ContextIndex;
pub(crate) use describe::{describe, describe_config};
pub use options::{BaseResolver, BuildOptions};
use order::topo_order;
use resolve::{key_text, resolve_kind};

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
    /// Build checks (BuildKit's warnings), in line order, without those
    /// `check_config` skips.
    pub checks: Vec<Check>,
    /// `# check=` or the `BUILDKIT_DOCKERFILE_CHECK` build arg.
    pub check_config: CheckConfig,
}

impl Graph {
    /// With `check=error=true` and warnings: the error that stops the
    /// build before any step runs (`lint violation found for rules: ...`).
    pub fn check_violation(&self) -> Option<String> {
        self.check_config.violation(self.checks.iter().map(|c| c.rule))
    }
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
/// Build args BuildKit reads itself: never "undefined" (its `nonEnvArgs`).
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];
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

/// The build checks of `dockerfile` (BuildKit's warnings), without
/// building: what `rbk graph --check` prints. Errors are the same as
/// [`build_graph`]'s.
pub fn check(
    dockerfile: &str,
    opts: &BuildOptions,
    context: &dyn Context,
    resolver: &dyn BaseResolver,
) -> Result<Vec<Check>, Error> {
    build_graph(dockerfile, opts, context, resolver).map(|g| g.checks)
}

/// `TARGETSTAGE`: the `--target` stage, else the last stage's name (empty
/// when it has none).
fn target_stage_name(df: &Dockerfile, opts: &BuildOptions) -> String {
    if let Some(t) = &opts.target {
        return t.to_ascii_lowercase();
    }
    df.instructions
        .iter()
        .rev()
        .find_map(|l| match &l.inst {
            Instruction::From(f) => Some(f.alias.clone().unwrap_or_default()),
            _ => None,
        })
        .unwrap_or_default()
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
    /// The stage being built, by name (`TARGETSTAGE`).
    target_stage: String,
    /// Build checks found while walking (those that need expanded values).
    checks: Vec<Check>,
    /// `UndefinedVar` checks with their stage: BuildKit reports them only
    /// for the stages the target needs.
    undefined_vars: Vec<(usize, Check)>,
}

/// The variable scope inside a stage.
struct Scope {
    args: BTreeMap<String, Option<String>>,
    env: Vec<(String, String)>,
    /// The base image sets no PATH (or its env is unknown): `$PATH` expands
    /// to Docker's default.
    path_fallback: bool,
    /// Names looked up and not found since the last instruction, in order
    /// (for `UndefinedVar`).
    missed: RefCell<Vec<String>>,
}

/// The PATH Docker uses when an image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Scope {
    fn get(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        let v = match self.args.get(name).cloned().flatten() {
            None if name == "PATH" && self.path_fallback => Some(DEFAULT_PATH.to_string()),
            v => v,
        };
        if v.is_none() {
            let mut missed = self.missed.borrow_mut();
            // Bounded: one entry per distinct name.
            if !missed.iter().any(|m| m == name) {
                missed.push(name.to_string());
            }
        }
        v
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
            target_stage: target_stage_name(df, opts),
            checks: Vec::new(),
            undefined_vars: Vec::new(),
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
        m.insert("TARGETSTAGE".into(), self.target_stage.clone());
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
            .filter(|k| {
                !self.declared.contains(*k)
                    && !PROXY_ARGS.contains(&k.as_str())
                    && k.as_str() != CHECK_BUILD_ARG
            })
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
        let check_config = match self.opts.build_args.get(CHECK_BUILD_ARG) {
            Some(v) => CheckConfig::parse(v).map_err(|m| {
                RawError::new(
                    Pos::new(1, 1),
                    None,
                    format!("--build-arg {CHECK_BUILD_ARG}={v}: failed to parse check options: {m}"),
                )
            })?,
            None => self.df.directives.check_config(),
        };
        let mut checks = crate::checks::syntax(self.df);
        checks.append(&mut self.checks);
        checks.extend(
            self.undefined_vars
                .drain(..)
                .filter(|(si, _)| needed.contains(si))
                .map(|(_, c)| c),
        );
        checks.retain(|c| check_config.runs(c.rule));
        checks.sort_by_key(|c| c.line);
        Ok(Graph {
            directives: self.df.directives.clone(),
            stages,
            steps,
            target,
            unused_build_args,
            checks,
            check_config,
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
        let from_missed: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let meta_lookup = |n: &str| {
            let v = meta
                .get(n)
                .cloned()
                .flatten()
                .or_else(|| platform.get(n).cloned());
            if v.is_none() && !meta.contains_key(n) && !from_missed.borrow().iter().any(|m| m == n) {
                from_missed.borrow_mut().push(n.to_string());
            }
            v
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
        // BuildKit's UndefinedArgInFrom: FROM sees only global ARGs and the
        // built-in platform args.
        for name in from_missed.into_inner() {
            let known = self.meta.keys().map(String::as_str).chain(platform.keys().map(String::as_str));
            self.checks.push(crate::checks::undefined_arg_in_from(pos.line, &name, crate::checks::suggest(&name, known)));
        }
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
            missed: RefCell::new(Vec::new()),
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
                        keyword: i.keyword().to_string(),
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
                triggers = onbuild::image_triggers(resolver, reference, platform.as_deref(), pos)?;
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
        let stage_index = earlier.len();
        for (i, l) in triggers.iter().chain(&insts[1..]).enumerate() {
            let pending_before = st.pending.len();
            // Suggestions come from the env the instruction expands with
            // (BuildKit's), not the one it leaves.
            let env_before: Vec<String> = match st.env_known {
                true => scope.env.iter().map(|(k, _)| k.clone()).collect(),
                false => Vec::new(),
            };
            let fallback = scope.path_fallback.then_some("PATH");
            self.instruction(l, &mut st, &mut scope, earlier, &mut cmd_set_here)?;
            // A trigger's step says where it came from in progress lines.
            if i < triggers.len()
                && let Some(p) = st.pending.get_mut(pending_before)
            {
                p.text = format!("ONBUILD {}", p.text);
            }
            let missed = std::mem::take(&mut *scope.missed.borrow_mut());
            // Without the base image's env (not resolved), an unknown name
            // may well be the image's: say nothing rather than guess.
            if !st.env_known {
                continue;
            }
            for name in missed {
                if scope.args.contains_key(&name) || NON_ENV_ARGS.contains(&name.as_str()) {
                    continue;
                }
                let env_keys = env_before.iter().map(String::as_str).chain(fallback);
                let suggestion = crate::checks::suggest(&name, env_keys);
                self.undefined_vars.push((
                    stage_index,
                    crate::checks::undefined_var(l.pos.line, &name, suggestion),
                ));
            }
        }
        st.final_env = scope.env;
        Ok(st)
    }
}
