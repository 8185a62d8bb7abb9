//! Pass 1, one instruction: how each instruction changes the stage's
//! variable scope and image config, and which pending step it adds.

use super::validate::{valid_duration, valid_port};
use super::{
    Builder, DEFAULT_SHELL, HealthConfig, PROXY_ARGS, Pending, Scope, StageState, key_text, set_env,
};
use crate::canonical;
use crate::checks::Check;
use crate::context::clean_absolute;
use crate::error::RawError;
use crate::expand;
use crate::instruction::*;
use crate::step::*;

impl Builder<'_> {
    pub(super) fn instruction(
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
                // Docker's reference: every pair of one ENV is expanded with
                // the environment before the instruction (`ENV a=2 b=$a`
                // gives b the old a), so expand all, then set.
                let mut pairs = Vec::with_capacity(nv.pairs.len());
                for (k, v) in &nv.pairs {
                    pairs.push((x(k, scope)?, x(v, scope)?));
                }
                for (k, v) in pairs {
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
                for word in ports {
                    // BuildKit splits EXPOSE's words after expansion.
                    let specs =
                        expand::expand_words(word, self.escape, &|n| scope.get(n)).map_err(&err)?;
                    for spec in specs {
                        for p in self.expose(&spec, pos.line).map_err(&err)? {
                            st.config.exposed_ports.insert(p);
                        }
                    }
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
                if !w.starts_with('/') && st.config.workdir.is_none() {
                    self.checks.push(Check::new(
                        "WorkdirRelativePath",
                        pos.line,
                        format!("Relative workdir \"{w}\" can have unexpected results if the base image changes"),
                    ));
                }
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

    /// One EXPOSE port spec → the ports it exposes, as BuildKit reads it:
    /// `PORT[-PORT][/PROTO]`, protocol lower-cased, a range expanded; an IP
    /// or host port before the container port is ignored with a warning.
    fn expose(&mut self, spec: &str, line: usize) -> Result<Vec<String>, String> {
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p),
            None => (spec, "tcp"),
        };
        let lower = proto.to_ascii_lowercase();
        if lower != proto {
            self.checks.push(Check::new(
                "ExposeProtoCasing",
                line,
                format!("Defined protocol '{spec}' in EXPOSE instruction should be lowercase"),
            ));
        }
        let port = match rest.rsplit_once(':') {
            Some((_, p)) => {
                self.checks.push(Check::new(
                    "ExposeInvalidFormat",
                    line,
                    format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{spec}'"),
                ));
                p
            }
            None => rest,
        };
        let invalid = || format!("invalid port '{spec}'; expected PORT[-PORT][/tcp|/udp|/sctp]");
        if !valid_port(&format!("{port}/{lower}")) {
            return Err(invalid());
        }
        let num = |s: &str| s.parse::<u32>().ok().filter(|n| *n <= 65535);
        let (start, end) = match port.split_once('-') {
            Some((a, b)) => (num(a).ok_or_else(invalid)?, num(b).ok_or_else(invalid)?),
            None => {
                let n = num(port).ok_or_else(invalid)?;
                (n, n)
            }
        };
        if end < start {
            return Err(format!(
                "invalid port range '{spec}': {end} is less than {start}"
            ));
        }
        Ok((start..=end).map(|p| format!("{p}/{lower}")).collect())
    }

    /// The argv for a shell-form RUN, heredocs included.
    pub(super) fn run_script(
        &self,
        s: &str,
        heredocs: &[Heredoc],
        shell: &[String],
    ) -> Vec<String> {
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
}

pub(super) fn is_lone_heredoc(s: &str, escape: char) -> bool {
    let w = crate::parser::words(s, escape);
    w.len() == 1 && crate::lexer::heredoc_marker(&w[0], escape).is_some()
}
