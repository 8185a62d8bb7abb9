//! Canonical form: one line per instruction (heredoc bodies after it),
//! upper-case keywords, flags as `--name=value` in a fixed order, mount
//! options in a fixed order, comments and continuations gone. Parsing the
//! printed text gives back the same syntax tree; the cache key hashes this
//! text, so cosmetic edits (case, line breaks, comments) keep the cache.

use crate::instruction::*;

/// Prints a whole Dockerfile in canonical form.
pub fn print(df: &Dockerfile) -> String {
    let mut out = String::new();
    let d = &df.directives;
    if let Some(s) = &d.syntax {
        out.push_str(&format!("# syntax={s}\n"));
    }
    if d.escape != '\\' {
        out.push_str(&format!("# escape={}\n", d.escape));
    }
    if let Some(c) = &d.check {
        out.push_str(&format!("# check={c}\n"));
    }
    for l in &df.instructions {
        out.push_str(&instruction(&l.inst));
    }
    out
}

/// One instruction in canonical form, ending with a newline.
pub fn instruction(inst: &Instruction) -> String {
    let mut line = head(inst);
    line.push('\n');
    for h in heredocs(inst) {
        line.push_str(&h.content);
        line.push_str(&h.name);
        line.push('\n');
    }
    line
}

fn heredocs(inst: &Instruction) -> &[Heredoc] {
    match inst {
        Instruction::Run(r) => &r.heredocs,
        Instruction::Copy(c) => &c.heredocs,
        Instruction::Onbuild(i) => heredocs(i),
        _ => &[],
    }
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn cmd(c: &CmdForm) -> String {
    match c {
        CmdForm::Shell(s) => s.clone(),
        CmdForm::Exec(v) => json(v),
    }
}

fn name_values(nv: &NameValues) -> String {
    if nv.legacy {
        let (k, v) = &nv.pairs[0];
        format!("{k} {v}")
    } else {
        nv.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A mount spec as `type=...,key=value,...`.
pub(crate) fn mount(m: &MountSpec) -> String {
    // A type from a variable (`type=$T`) is among the options, as written.
    let mut fields = Vec::new();
    if !m.opts.contains_key("type") {
        fields.push(format!("type={}", m.kind.as_str()));
    }
    for (k, v) in &m.opts {
        let f = format!("{k}={v}");
        // Quote values that the word splitter or the CSV reader would
        // otherwise cut (an escape character before the next field's comma
        // or before the blank after the spec, blanks, quotes, commas).
        if v.contains([',', '"', '\'', '\\', '`']) || v.chars().any(char::is_whitespace) {
            fields.push(format!("\"{}\"", f.replace('"', "\"\"")));
        } else {
            fields.push(f);
        }
    }
    fields.join(",")
}

/// Blank-separated words. If joining them with spaces would read back as
/// JSON (`["a", "b"]` split from `["a",<VT>"b"]`), a vertical tab separates
/// them instead: blank to the word splitter, not to JSON.
fn word_list(items: &[String]) -> String {
    let spaced = items.join(" ");
    if serde_json::from_str::<Vec<serde_json::Value>>(&spaced).is_ok() {
        items.join("\u{b}")
    } else {
        spaced
    }
}

/// Arguments that start with `--` follow a `--` so they are not read as
/// flags (`RUN -- --version`).
fn args(a: String) -> String {
    if a.starts_with("--") {
        format!("-- {a}")
    } else {
        a
    }
}

fn head(inst: &Instruction) -> String {
    let kw = inst.keyword();
    let mut parts: Vec<String> = vec![kw.to_string()];
    match inst {
        Instruction::From(f) => {
            if let Some(p) = &f.platform {
                parts.push(format!("--platform={p}"));
            }
            parts.push(args(f.image.clone()));
            if let Some(a) = &f.alias {
                parts.push(format!("AS {a}"));
            }
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                parts.push(format!("--mount={}", mount(m)));
            }
            if let Some(n) = &r.network {
                parts.push(format!("--network={n}"));
            }
            if let Some(s) = &r.security {
                parts.push(format!("--security={s}"));
            }
            parts.push(args(cmd(&r.cmd)));
        }
        Instruction::Cmd(c) | Instruction::Entrypoint(c) => parts.push(args(cmd(c))),
        Instruction::Label(nv) | Instruction::Env(nv) => parts.push(args(name_values(nv))),
        Instruction::Expose(w) => parts.push(args(w.join(" "))),
        Instruction::Copy(c) => {
            let flag = |parts: &mut Vec<String>, n: &str, v: &Option<String>| {
                if let Some(v) = v {
                    parts.push(format!("--{n}={v}"));
                }
            };
            flag(&mut parts, "from", &c.from);
            flag(&mut parts, "chown", &c.chown);
            flag(&mut parts, "chmod", &c.chmod);
            if c.link {
                parts.push("--link".into());
            }
            if c.parents {
                parts.push("--parents".into());
            }
            for e in &c.exclude {
                parts.push(format!("--exclude={e}"));
            }
            flag(&mut parts, "checksum", &c.checksum);
            if c.keep_git_dir {
                parts.push("--keep-git-dir".into());
            }
            if let Some(u) = c.unpack {
                parts.push(format!("--unpack={u}"));
            }
            let mut all = c.sources.clone();
            all.push(c.dest.clone());
            parts.push(args(if c.json { json(&all) } else { word_list(&all) }));
        }
        Instruction::Volume(l) => parts.push(args(if l.json {
            json(&l.items)
        } else {
            word_list(&l.items)
        })),
        Instruction::User(s)
        | Instruction::Workdir(s)
        | Instruction::Stopsignal(s)
        | Instruction::Maintainer(s) => parts.push(args(s.clone())),
        Instruction::Arg(decls) => {
            let words: Vec<String> = decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            parts.push(args(words.join(" ")));
        }
        Instruction::Onbuild(i) => parts.push(head(i)),
        Instruction::Healthcheck(Healthcheck::None) => parts.push("NONE".into()),
        Instruction::Healthcheck(Healthcheck::Check {
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
            cmd: c,
        }) => {
            for (n, v) in [
                ("interval", interval),
                ("timeout", timeout),
                ("start-period", start_period),
                ("start-interval", start_interval),
                ("retries", retries),
            ] {
                if let Some(v) = v {
                    parts.push(format!("--{n}={v}"));
                }
            }
            parts.push("CMD".into());
            parts.push(cmd(c));
        }
        Instruction::Shell(v) => parts.push(json(v)),
    }
    parts.join(" ")
}
