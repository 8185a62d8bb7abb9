//! Today's protocol against the released ones a coordinator still serves
//! (`proto/compat/<major.minor>.binpb`, frozen by
//! `deploy/dev/freeze-proto.sh`; the window is `rbk_proto::version`'s):
//! a caller of such a version must still be understood, so every message,
//! field, enum value and method it knows keeps its number and type, or its
//! number is `reserved`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use rbk_proto::version::Version;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Today's `proto/*.proto` compiled by the vendored protoc.
fn current() -> FileDescriptorSet {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("now.binpb");
    let protos: Vec<PathBuf> = std::fs::read_dir(repo().join("proto"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    let status = std::process::Command::new(protoc_bin_vendored::protoc_bin_path().unwrap())
        .arg(format!("-I{}", repo().join("proto").display()))
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(&protos)
        .status()
        .unwrap();
    assert!(status.success(), "protoc failed on proto/*.proto");
    FileDescriptorSet::decode(&std::fs::read(out).unwrap()[..]).unwrap()
}

/// Frozen protocols of the versions in today's window, by version.
fn frozen_in_window() -> Vec<(String, FileDescriptorSet)> {
    let own = Version::own();
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("proto/compat")).unwrap() {
        let path = e.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".binpb")) else { continue };
        let v = Version::parse(&format!("{name}.0")).unwrap_or_else(|| panic!("{}: not <major>.<minor>.binpb", path.display()));
        if rbk_proto::version::check(v, own).is_ok() {
            out.push((name.to_owned(), FileDescriptorSet::decode(&std::fs::read(&path).unwrap()[..]).unwrap()));
        }
    }
    out
}

/// Every message, enum and method by full name (`.pkg.Outer.Inner`,
/// `.pkg.Service/Method`).
#[derive(Default)]
struct Index<'a> {
    messages: HashMap<String, &'a DescriptorProto>,
    enums: HashMap<String, &'a EnumDescriptorProto>,
    methods: HashMap<String, (String, String, bool, bool)>,
}

fn index(set: &FileDescriptorSet) -> Index<'_> {
    fn walk<'a>(ix: &mut Index<'a>, scope: &str, m: &'a DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for n in &m.nested_type {
            walk(ix, &name, n);
        }
        for e in &m.enum_type {
            ix.enums.insert(format!("{name}.{}", e.name()), e);
        }
        ix.messages.insert(name, m);
    }
    let mut ix = Index::default();
    for f in &set.file {
        let scope = format!(".{}", f.package());
        for m in &f.message_type {
            walk(&mut ix, &scope, m);
        }
        for e in &f.enum_type {
            ix.enums.insert(format!("{scope}.{}", e.name()), e);
        }
        for s in &f.service {
            for m in &s.method {
                let sig = (m.input_type().to_owned(), m.output_type().to_owned(), m.client_streaming(), m.server_streaming());
                ix.methods.insert(format!("{scope}.{}/{}", s.name(), m.name()), sig);
            }
        }
    }
    ix
}

fn type_suffix(type_name: &str) -> String {
    if type_name.is_empty() { String::new() } else { format!(" {type_name}") }
}

/// What `new` breaks of `old`'s wire, one line each, sorted.
fn breaks(old: &FileDescriptorSet, new: &FileDescriptorSet) -> Vec<String> {
    let (old, new) = (index(old), index(new));
    let mut out = Vec::new();
    for (name, m) in &old.messages {
        let Some(n) = new.messages.get(name) else {
            out.push(format!("message {name} was removed"));
            continue;
        };
        let reserved = |num: i32| n.reserved_range.iter().any(|r| r.start() <= num && num < r.end());
        for f in &m.field {
            match n.field.iter().find(|x| x.number() == f.number()) {
                None if reserved(f.number()) => {}
                None => out.push(format!("{name}: field {} = {} was removed without `reserved {}`", f.name(), f.number(), f.number())),
                Some(x) if (x.r#type(), x.type_name(), x.label()) != (f.r#type(), f.type_name(), f.label()) => out.push(format!(
                    "{name}: field {} = {} changed from {:?} {:?}{} to {:?} {:?}{}",
                    f.name(),
                    f.number(),
                    f.label(),
                    f.r#type(),
                    type_suffix(f.type_name()),
                    x.label(),
                    x.r#type(),
                    type_suffix(x.type_name()),
                )),
                Some(_) => {}
            }
        }
    }
    for (name, e) in &old.enums {
        let Some(n) = new.enums.get(name) else {
            out.push(format!("enum {name} was removed"));
            continue;
        };
        for v in &e.value {
            let kept = n.value.iter().any(|x| x.number() == v.number());
            // Enum reserved ranges are inclusive, message ones are not.
            let reserved = n.reserved_range.iter().any(|r| r.start() <= v.number() && v.number() <= r.end());
            if !kept && !reserved {
                out.push(format!("{name}: value {} = {} was removed without `reserved`", v.name(), v.number()));
            }
        }
    }
    for (name, sig) in &old.methods {
        match new.methods.get(name) {
            None => out.push(format!("method {name} was removed")),
            Some(s) if s != sig => out.push(format!("method {name} changed its signature from {sig:?} to {s:?}")),
            Some(_) => {}
        }
    }
    out.sort();
    out
}

#[test]
fn todays_protocol_keeps_every_number_and_type_of_each_released_one_in_the_skew_window() {
    let frozen = frozen_in_window();
    assert!(!frozen.is_empty(), "proto/compat has no frozen protocol in this version's window: run deploy/dev/freeze-proto.sh");
    let now = current();
    for (version, old) in &frozen {
        let broken = breaks(old, &now);
        assert!(broken.is_empty(), "today's proto/ breaks rbk {version} callers:\n{}", broken.join("\n"));
    }
}

fn submit_request(set: &mut FileDescriptorSet) -> &mut DescriptorProto {
    set.file.iter_mut().flat_map(|f| f.message_type.iter_mut()).find(|m| m.name() == "SubmitRequest").unwrap()
}

#[test]
fn removing_a_field_without_reserving_its_number_is_reported() {
    let old = current();
    let mut new = old.clone();
    submit_request(&mut new).field.retain(|f| f.name() != "context_digest");
    assert_eq!(breaks(&old, &new), [".rbk.build.v1.SubmitRequest: field context_digest = 2 was removed without `reserved 2`"]);
    submit_request(&mut new).reserved_range.push(prost_types::descriptor_proto::ReservedRange { start: Some(2), end: Some(3) });
    assert!(breaks(&old, &new).is_empty());
}

#[test]
fn retyping_a_field_or_a_method_is_reported() {
    let old = current();
    let mut new = old.clone();
    let field = submit_request(&mut new).field.iter_mut().find(|f| f.name() == "context_digest").unwrap();
    field.set_type(prost_types::field_descriptor_proto::Type::Bytes);
    let build = new.file.iter_mut().flat_map(|f| f.service.iter_mut()).find(|s| s.name() == "Build").unwrap();
    build.method.iter_mut().find(|m| m.name() == "Submit").unwrap().server_streaming = Some(false);
    let broken = breaks(&old, &new);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken.iter().any(|b| b.starts_with("method .rbk.build.v1.Build/Submit changed its signature")), "{broken:?}");
    assert!(broken.iter().any(|b| b.contains("SubmitRequest: field context_digest = 2 changed from Optional String")), "{broken:?}");
}

#[test]
fn adding_a_field_or_a_method_breaks_nothing() {
    let old = current();
    let mut new = old.clone();
    let mut f = submit_request(&mut new).field[0].clone();
    f.name = Some("client_hint".into());
    f.number = Some(99);
    submit_request(&mut new).field.push(f);
    assert!(breaks(&old, &new).is_empty());
}
