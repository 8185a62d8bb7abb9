//! Logical lines → typed instructions: flag extraction and validation, the
//! argument shapes of each instruction (JSON form, blank-separated words,
//! `name=value` pairs), and ONBUILD's nested instruction.

use std::collections::BTreeMap;

use crate::error::{Pos, RawError, RawResult, did_you_mean};
use crate::instruction::*;
use crate::lexer::{self, LogicalLine, split_word};

/// Parses Dockerfile text. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, crate::Error> {
    parse_raw(text).map_err(|e| e.in_file(file))
}

/// Parses bytes. BuildKit reads a Dockerfile as bytes, so text that is not
/// UTF-8 (a Latin-1 `é` in a comment) builds there; here each byte that is
/// not part of valid UTF-8 is read as the Latin-1 character it encodes
/// (see [`decode`]).
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Dockerfile, crate::Error> {
    parse(&decode(bytes), file)
}

/// Dockerfile bytes as text: valid UTF-8 as is, any other byte as the
/// Latin-1 character of the same value (U+0080..U+00FF), so nothing is lost
/// and no line moves. Values with such bytes reach the image as UTF-8.
pub fn decode(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let mut rest = match std::str::from_utf8(bytes) {
        Ok(t) => return std::borrow::Cow::Borrowed(t),
        Err(_) => bytes,
    };
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 8);
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(t) => {
                out.push_str(t);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len() - good);
                out.extend(rest[good..good + bad].iter().map(|b| char::from(*b)));
                rest = &rest[good + bad..];
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

fn parse_raw(text: &str) -> RawResult<Dockerfile> {
    let lexed = lexer::lex(text)?;
    let escape = lexed.directives.escape;
    let mut instructions = Vec::with_capacity(lexed.lines.len());
    for line in lexed.lines {
        let inst = instruction(&line, escape, false)?;
        instructions.push(Located {
            pos: line.pos,
            inst,
            keyword: line.keyword.clone(),
        });
    }
    Ok(Dockerfile {
        directives: lexed.directives,
        instructions,
    })
}

/// A `--name[=value]` flag as written.
struct Flag {
    name: String,
    value: Option<String>,
    pos: Pos,
}

struct Ctx<'a> {
    kw: &'a str,
    line: &'a LogicalLine,
    escape: char,
}

impl Ctx<'_> {
    fn err(&self, pos: Pos, msg: impl Into<String>) -> RawError {
        RawError::new(pos, Some(self.kw), msg)
    }

    fn args_pos(&self) -> Pos {
        Pos::new(self.line.pos.line, self.line.rest_col)
    }
}

fn instruction(line: &LogicalLine, escape: char, in_onbuild: bool) -> RawResult<Instruction> {
    let kw_upper = line.keyword.to_ascii_uppercase();
    let Some(kw) = KEYWORDS.iter().copied().find(|k| *k == kw_upper) else {
        let mut msg = format!("unknown instruction '{}'", printable(&line.keyword));
        if let Some(s) = did_you_mean(&kw_upper, KEYWORDS.iter().copied()) {
            msg.push_str(&format!("; did you mean {s}?"));
        }
        return Err(RawError::new(line.pos, None, msg));
    };
    let cx = Ctx { kw, line, escape };
    let (flags, args) = extract_flags(&cx)?;
    let mut fl = Flags::new(&cx, flags);
    let inst = match kw {
        "FROM" => {
            let platform = fl.string("platform")?;
            let words = words(args, escape);
            let (image, alias) = match words.as_slice() {
                [image] => (image.clone(), None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    // Stage names are case-insensitive (BuildKit lowercases them).
                    let name = &name.to_ascii_lowercase();
                    if !valid_stage_name(name) {
                        return Err(cx.err(cx.args_pos(), format!("invalid stage name '{}'; expected a letter followed by letters, digits, '-', '_' or '.'", printable(name))));
                    }
                    (image.clone(), Some(name.clone()))
                }
                _ => {
                    return Err(cx.err(
                        cx.args_pos(),
                        "expected 'FROM image' or 'FROM image AS name'",
                    ));
                }
            };
            Instruction::From(From {
                platform,
                image,
                alias,
            })
        }
        "RUN" => {
            let mut mounts = Vec::new();
            for (v, pos) in fl.multi("mount")? {
                mounts.push(mount_spec(&cx, &v, pos)?);
            }
            let network = fl.string("network")?;
            if let Some(n) = &network
                && !matches!(n.as_str(), "default" | "none" | "host")
            {
                return Err(cx.err(
                    cx.line.pos,
                    format!("invalid --network={n}; expected default, none or host"),
                ));
            }
            let security = fl.string("security")?;
            if let Some(s) = &security
                && !matches!(s.as_str(), "sandbox" | "insecure")
            {
                return Err(cx.err(
                    cx.line.pos,
                    format!("invalid --security={s}; expected sandbox or insecure"),
                ));
            }
            let cmd = cmd_form(&cx, args)?;
            if matches!(&cmd, CmdForm::Shell(s) if s.is_empty()) {
                return Err(cx.err(cx.line.pos, "expected a command to run"));
            }
            Instruction::Run(Run {
                mounts,
                network,
                security,
                cmd,
                heredocs: line.heredocs.clone(),
            })
        }
        "CMD" | "ENTRYPOINT" => {
            let cmd = cmd_form(&cx, args)?;
            if matches!(&cmd, CmdForm::Shell(s) if s.is_empty()) {
                return Err(cx.err(
                    cx.line.pos,
                    "expected a command (shell form or a JSON array)",
                ));
            }
            if kw == "CMD" {
                Instruction::Cmd(cmd)
            } else {
                Instruction::Entrypoint(cmd)
            }
        }
        "SHELL" => match json_list(&cx, args)? {
            Some(v) if !v.is_empty() => Instruction::Shell(v),
            _ => {
                return Err(cx.err(
                    cx.args_pos(),
                    "expected a JSON array of strings, e.g. SHELL [\"/bin/bash\", \"-c\"]",
                ));
            }
        },
        "LABEL" | "ENV" => {
            let nv = name_values(&cx, args)?;
            if kw == "ENV" {
                Instruction::Env(nv)
            } else {
                Instruction::Label(nv)
            }
        }
        "EXPOSE" => Instruction::Expose(some_words(&cx, args, escape, "expected at least one port, e.g. EXPOSE 80/tcp")?),
        "VOLUME" => {
            let l = list_form(&cx, args)?;
            if l.items.is_empty() || l.items.iter().any(|i| i.is_empty()) {
                return Err(cx.err(cx.line.pos, "expected at least one non-empty volume path"));
            }
            Instruction::Volume(l)
        }
        "USER" | "WORKDIR" | "STOPSIGNAL" | "MAINTAINER" => {
            if args.is_empty() {
                return Err(cx.err(cx.line.pos, format!("expected an argument for {kw}")));
            }
            let a = args.to_string();
            match kw {
                "USER" => Instruction::User(a),
                "WORKDIR" => Instruction::Workdir(a),
                "STOPSIGNAL" => Instruction::Stopsignal(a),
                _ => Instruction::Maintainer(a),
            }
        }
        "ARG" => {
            let w = some_words(&cx, args, escape, "expected a name, e.g. ARG VERSION or ARG VERSION=1.0")?;
            let mut decls = Vec::new();
            for word in w {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word.clone(), None),
                };
                if !valid_var_name(&name) {
                    return Err(cx.err(
                        cx.args_pos(),
                        format!(
                            "invalid ARG name '{}'; expected letters, digits and '_'",
                            printable(&name)
                        ),
                    ));
                }
                decls.push(ArgDecl { name, default });
            }
            Instruction::Arg(decls)
        }
        "ONBUILD" => {
            if in_onbuild {
                return Err(cx.err(cx.line.pos, "ONBUILD ONBUILD is not allowed"));
            }
            let (sub_kw, sub_rest) = split_word(args, escape);
            let sub_upper = sub_kw.to_ascii_uppercase();
            if sub_upper == "FROM" || sub_upper == "MAINTAINER" {
                return Err(cx.err(
                    cx.args_pos(),
                    format!("{sub_upper} is not allowed as an ONBUILD trigger"),
                ));
            }
            if sub_kw.is_empty() {
                return Err(cx.err(cx.line.pos, "expected an instruction to run on build"));
            }
            let rest_trim = sub_rest.trim_start();
            let sub = LogicalLine {
                pos: cx.args_pos(),
                keyword: sub_kw.to_string(),
                rest: rest_trim.to_string(),
                rest_col: cx.line.rest_col + sub_kw.len() + (sub_rest.len() - rest_trim.len()),
                heredocs: line.heredocs.clone(),
            };
            Instruction::Onbuild(Box::new(instruction(&sub, escape, true)?))
        }
        "HEALTHCHECK" => {
            let (typ, rest) = split_word(args, escape);
            match typ.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if fl.any() || !rest.trim().is_empty() {
                        return Err(cx.err(
                            cx.args_pos(),
                            "HEALTHCHECK NONE takes no flags and no arguments",
                        ));
                    }
                    Instruction::Healthcheck(Healthcheck::None)
                }
                "CMD" => {
                    let cmd = cmd_form(&cx, rest.trim())?;
                    if matches!(&cmd, CmdForm::Shell(s) if s.is_empty()) {
                        return Err(
                            cx.err(cx.args_pos(), "expected a command after HEALTHCHECK CMD")
                        );
                    }
                    Instruction::Healthcheck(Healthcheck::Check {
                        interval: fl.string("interval")?,
                        timeout: fl.string("timeout")?,
                        start_period: fl.string("start-period")?,
                        start_interval: fl.string("start-interval")?,
                        retries: fl.string("retries")?,
                        cmd,
                    })
                }
                _ => {
                    return Err(cx.err(
                        cx.args_pos(),
                        "expected 'HEALTHCHECK [flags] CMD command' or 'HEALTHCHECK NONE'",
                    ));
                }
            }
        }
        _ => {
            // COPY and ADD
            let add = kw == "ADD";
            let mut c = Copy {
                add,
                ..Copy::default()
            };
            if !add {
                c.from = fl.string("from")?;
                c.parents = fl.bool("parents")?;
            } else {
                c.checksum = fl.string("checksum")?;
                c.keep_git_dir = fl.bool("keep-git-dir")?;
                c.unpack = if fl.has("unpack") {
                    Some(fl.bool("unpack")?)
                } else {
                    None
                };
            }
            c.chown = fl.string("chown")?;
            c.chmod = fl.string("chmod")?;
            c.link = fl.bool("link")?;
            c.exclude = fl.multi("exclude")?.into_iter().map(|(v, _)| v).collect();
            let l = list_form(&cx, args)?;
            c.json = l.json;
            let mut items = l.items;
            if items.len() < 2 {
                return Err(cx.err(
                    cx.line.pos,
                    format!("{kw} requires at least two arguments (sources and a destination), but {} given", items.len()),
                ));
            }
            c.dest = items.pop().unwrap_or_default();
            c.sources = items;
            c.heredocs = line.heredocs.clone();
            Instruction::Copy(c)
        }
    };
    fl.finish()?;
    Ok(inst)
}

/// Makes control characters visible in messages.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(|c| c.escape_debug()).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.')
        })
}

pub(crate) fn valid_var_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Splits leading `--flag[=value]` words off the arguments.
fn extract_flags<'a>(cx: &Ctx<'a>) -> RawResult<(Vec<Flag>, &'a str)> {
    let rest = cx.line.rest.as_str();
    let mut r = rest;
    let mut flags = Vec::new();
    loop {
        let trimmed = r.trim_start();
        if !trimmed.starts_with("--") {
            return Ok((flags, trimmed));
        }
        let col = cx.line.rest_col + (rest.len() - trimmed.len());
        let (word, after) = split_word(trimmed, cx.escape);
        r = after;
        if word == "--" {
            return Ok((flags, r.trim_start()));
        }
        let body = &word[2..];
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        flags.push(Flag {
            name,
            value,
            pos: Pos::new(cx.line.pos.line, col),
        });
    }
}

/// The flags of one instruction; each accessor consumes what it reads and
/// `finish` reports whatever is left as unknown.
struct Flags<'a, 'b> {
    cx: &'b Ctx<'a>,
    flags: Vec<Option<Flag>>,
}

impl<'a, 'b> Flags<'a, 'b> {
    fn new(cx: &'b Ctx<'a>, flags: Vec<Flag>) -> Self {
        Flags {
            cx,
            flags: flags.into_iter().map(Some).collect(),
        }
    }

    fn any(&self) -> bool {
        self.flags.iter().any(Option::is_some)
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().flatten().any(|f| f.name == name)
    }

    fn take(&mut self, name: &str) -> Vec<Flag> {
        let mut out = Vec::new();
        for slot in &mut self.flags {
            if slot.as_ref().is_some_and(|f| f.name == name) {
                out.extend(slot.take());
            }
        }
        out
    }

    fn single(&mut self, name: &str) -> RawResult<Option<Flag>> {
        let mut v = self.take(name);
        if v.len() > 1 {
            return Err(self.cx.err(
                v[1].pos,
                format!("flag --{name} given twice; it may be given once"),
            ));
        }
        Ok(v.pop())
    }

    fn string(&mut self, name: &str) -> RawResult<Option<String>> {
        match self.single(name)? {
            None => Ok(None),
            Some(Flag { value: Some(v), .. }) => Ok(Some(v)),
            Some(f) => Err(self.cx.err(
                f.pos,
                format!("flag --{name} needs a value: --{name}=VALUE"),
            )),
        }
    }

    fn bool(&mut self, name: &str) -> RawResult<bool> {
        match self.single(name)? {
            None => Ok(false),
            Some(Flag { value: None, .. }) => Ok(true),
            Some(Flag {
                value: Some(v),
                pos,
                ..
            }) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.cx.err(
                    pos,
                    format!("flag --{name}={v} is not a boolean; expected true or false"),
                )),
            },
        }
    }

    fn multi(&mut self, name: &str) -> RawResult<Vec<(String, Pos)>> {
        let mut out = Vec::new();
        for f in self.take(name) {
            match f.value {
                Some(v) => out.push((v, f.pos)),
                None => {
                    return Err(self.cx.err(
                        f.pos,
                        format!("flag --{name} needs a value: --{name}=VALUE"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn finish(self) -> RawResult<()> {
        let kw = self.cx.kw;
        let known = known_flags(kw);
        if let Some(f) = self.flags.into_iter().flatten().next() {
            let mut msg = format!("unknown flag --{} for {kw}", printable(&f.name));
            if let Some(s) = did_you_mean(&f.name, known.iter().copied()) {
                msg.push_str(&format!("; did you mean --{s}?"));
            } else if known.is_empty() {
                msg.push_str(&format!("; {kw} takes no flags"));
            }
            return Err(self.cx.err(f.pos, msg));
        }
        Ok(())
    }
}

fn known_flags(kw: &str) -> &'static [&'static str] {
    match kw {
        "FROM" => &["platform"],
        "RUN" => &["mount", "network", "security"],
        "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" => &[
            "chown",
            "chmod",
            "link",
            "checksum",
            "keep-git-dir",
            "exclude",
            "unpack",
        ],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

/// How an argument reads as JSON. BuildKit: text that is not a JSON array
/// is shell form (or words); a JSON array with an item that is not a string
/// is an error, not shell form.
enum Json {
    Not,
    Strings(Vec<String>),
    NotStrings,
}

fn json_array(args: &str) -> Json {
    if !args.starts_with('[') {
        return Json::Not;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(args) {
        Err(_) => Json::Not,
        Ok(items) => {
            let strings: Option<Vec<String>> = items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Some(s),
                    _ => None,
                })
                .collect();
            strings.map_or(Json::NotStrings, Json::Strings)
        }
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// Exec form if the arguments are a JSON array of strings, else shell form.
fn cmd_form(cx: &Ctx<'_>, args: &str) -> RawResult<CmdForm> {
    match json_array(args) {
        Json::Strings(v) => Ok(CmdForm::Exec(v)),
        Json::Not => Ok(CmdForm::Shell(args.to_string())),
        Json::NotStrings => Err(cx.err(cx.args_pos(), NOT_STRINGS)),
    }
}

fn json_list(cx: &Ctx<'_>, args: &str) -> RawResult<Option<Vec<String>>> {
    match json_array(args) {
        Json::Strings(v) => Ok(Some(v)),
        Json::Not => Ok(None),
        Json::NotStrings => Err(cx.err(cx.args_pos(), NOT_STRINGS)),
    }
}

/// The whitespace-separated words of `args`; an instruction that needs
/// at least one refuses none with `expected` at the line.
fn some_words(cx: &Ctx<'_>, args: &str, escape: char, expected: &str) -> RawResult<Vec<String>> {
    let w = words(args, escape);
    if w.is_empty() {
        return Err(cx.err(cx.line.pos, expected));
    }
    Ok(w)
}

fn list_form(cx: &Ctx<'_>, args: &str) -> RawResult<ListForm> {
    Ok(match json_list(cx, args)? {
        Some(items) => ListForm { items, json: true },
        None => ListForm {
            items: args.split_whitespace().map(str::to_string).collect(),
            json: false,
        },
    })
}

/// Blank-separated words; quotes keep blanks inside a word (and stay in it).
pub(crate) fn words(s: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut r = s.trim_start();
    while !r.is_empty() {
        let (w, after) = lexer::split_arg_word(r, escape);
        out.push(w.to_string());
        r = after.trim_start();
    }
    out
}

fn name_values(cx: &Ctx<'_>, args: &str) -> RawResult<NameValues> {
    let w = words(args, cx.escape);
    let Some(first) = w.first() else {
        return Err(cx.err(cx.line.pos, format!("expected {} name=value", cx.kw)));
    };
    if !first.contains('=') {
        // Legacy form: NAME value with spaces
        let (_, value) = lexer::split_arg_word(args, cx.escape);
        let value = value.trim_start();
        if value.is_empty() {
            return Err(cx.err(
                cx.args_pos(),
                format!(
                    "expected a value after '{}'; use {} name=value",
                    printable(first),
                    cx.kw
                ),
            ));
        }
        return Ok(NameValues {
            pairs: vec![(first.clone(), value.to_string())],
            legacy: true,
        });
    }
    let mut pairs = Vec::new();
    for word in w {
        let Some((k, v)) = word.split_once('=') else {
            return Err(cx.err(
                cx.args_pos(),
                format!(
                    "expected name=value, found '{}' without '='",
                    printable(&word)
                ),
            ));
        };
        if k.is_empty() {
            return Err(cx.err(
                cx.args_pos(),
                format!("expected a name before '=' in '{}'", printable(&word)),
            ));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(NameValues {
        pairs,
        legacy: false,
    })
}

/// Parses a `--mount=` value (comma-separated, CSV-style quotes).
fn mount_spec(cx: &Ctx<'_>, v: &str, pos: Pos) -> RawResult<MountSpec> {
    let fields = csv_fields(v)
        .into_iter()
        .map(|field| match field.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.to_string())),
            None => (field.trim().to_string(), None),
        });
    mount_fields(fields, true).map_err(|m| cx.err(pos, m))
}

/// A mount spec after its values were expanded: checked as BuildKit checks
/// it then (type, option names and boolean values may come from variables).
pub(crate) fn expanded_mount(
    spec: &MountSpec,
    expanded: BTreeMap<String, String>,
) -> Result<MountSpec, String> {
    let mut fields = vec![("type".to_string(), Some(spec.kind.as_str().to_string()))];
    if let Some(t) = expanded.get("type") {
        fields[0].1 = Some(t.clone());
    }
    fields.extend(
        expanded
            .into_iter()
            .filter(|(k, _)| k != "type")
            .map(|(k, v)| (k, Some(v))),
    );
    mount_fields(fields.into_iter(), false)
}

/// Does `v` use a variable (BuildKit's test: a `$` followed by anything)?
pub(crate) fn has_variable(v: &str) -> bool {
    v.find('$').is_some_and(|i| i + 1 < v.len())
}

/// The options of one mount, names made canonical. With `unexpanded`, a
/// value holding `$` is kept as written (under its own name for `type`,
/// `readwrite`) and checked after expansion by [`expanded_mount`].
fn mount_fields(
    fields: impl Iterator<Item = (String, Option<String>)>,
    unexpanded: bool,
) -> Result<MountSpec, String> {
    let mut kind = None;
    let mut type_seen = false;
    let mut opts = BTreeMap::new();
    for (key, val) in fields {
        let key = key.to_ascii_lowercase();
        if key == "type" {
            // One type per mount: with a literal and a variable one, which
            // wins would depend on expansion order.
            if std::mem::replace(&mut type_seen, true) {
                return Err("mount option 'type' given twice".into());
            }
        }
        let deferred = unexpanded && val.as_deref().is_some_and(|v| v.contains('$'));
        if key == "from" && unexpanded && val.as_deref().is_some_and(has_variable) {
            return Err(
                "'from' doesn't support variable expansion, define alias stage instead".into(),
            );
        }
        let (key, val) = match (key.as_str(), val) {
            ("type", Some(t)) if deferred => ("type".to_string(), t),
            ("type", Some(t)) => {
                kind = Some(mount_kind(&t)?);
                continue;
            }
            ("target" | "dst" | "destination", Some(v)) => ("target".to_string(), v),
            ("source" | "src", Some(v)) => ("source".to_string(), v),
            ("readonly" | "ro", None) => ("readonly".to_string(), "true".to_string()),
            ("readonly" | "ro", Some(v)) if deferred => ("readonly".to_string(), v),
            ("readonly" | "ro", Some(v)) => {
                ("readonly".to_string(), bool_value(&key, &v)?.to_string())
            }
            ("readwrite" | "rw", None) => ("readonly".to_string(), "false".to_string()),
            ("readwrite" | "rw", Some(v)) if deferred => ("readwrite".to_string(), v),
            ("readwrite" | "rw", Some(v)) => {
                ("readonly".to_string(), (!bool_value(&key, &v)?).to_string())
            }
            ("required", None) => ("required".to_string(), "true".to_string()),
            ("required", Some(v)) if deferred => ("required".to_string(), v),
            ("required", Some(v)) => ("required".to_string(), bool_value(&key, &v)?.to_string()),
            (k, Some(v)) => (k.to_string(), v),
            (k, None) => {
                return Err(format!(
                    "mount option '{}' needs a value: {}=VALUE",
                    printable(k),
                    printable(k)
                ));
            }
        };
        if opts.insert(key.clone(), val).is_some() {
            let key = if key == "readwrite" { "readonly" } else { &key };
            return Err(format!("mount option '{key}' given twice"));
        }
    }
    if opts.contains_key("readwrite") && opts.contains_key("readonly") {
        return Err("mount option 'readonly' given twice".into());
    }
    let kind = kind.unwrap_or(MountKind::Bind);
    if opts.contains_key("type") {
        // The type comes from a variable: whether a name fits the type is
        // checked after expansion; a name no mount type has is wrong now.
        let all = [
            MountKind::Bind,
            MountKind::Cache,
            MountKind::Tmpfs,
            MountKind::Secret,
            MountKind::Ssh,
        ];
        for k in opts.keys() {
            let known = matches!(k.as_str(), "type" | "readwrite")
                || all.iter().any(|m| m.options().contains(&k.as_str()));
            if !known {
                return Err(format!("unknown mount option '{}'", printable(k)));
            }
        }
        return Ok(MountSpec { kind, opts });
    }
    for k in opts.keys() {
        let k = if k == "readwrite" {
            "readonly"
        } else {
            k.as_str()
        };
        if !kind.options().contains(&k) {
            let mut msg = format!(
                "unknown option '{}' for a {} mount",
                printable(k),
                kind.as_str()
            );
            let names = std::iter::once("type").chain(kind.options().iter().copied());
            if let Some(s) = did_you_mean(k, names) {
                msg.push_str(&format!("; did you mean '{s}'?"));
            } else {
                msg.push_str(&format!(
                    "; expected one of type, {}",
                    kind.options().join(", ")
                ));
            }
            return Err(msg);
        }
    }
    if let Some(s) = opts.get("sharing")
        && !s.contains('$')
        && !matches!(s.as_str(), "shared" | "private" | "locked")
    {
        return Err(format!(
            "invalid sharing={s}; expected shared, private or locked"
        ));
    }
    Ok(MountSpec { kind, opts })
}

fn mount_kind(t: &str) -> Result<MountKind, String> {
    Ok(match t.to_ascii_lowercase().as_str() {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        _ => {
            return Err(format!(
                "unknown mount type '{}'; expected bind, cache, tmpfs, secret or ssh",
                printable(t)
            ));
        }
    })
}

fn bool_value(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "mount option {key}={v} is not a boolean; expected true or false"
        )),
    }
}

fn csv_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|f| !f.is_empty()).collect()
}
