//! The key function, as a property: for random small Dockerfiles over one
//! context, change one input at a time and exactly the steps whose closure
//! holds that input change key — no fewer (a false cache hit), no more (a
//! needless rebuild).
//!
//! A step's closure is what it reads itself (the files its COPY or context
//! bind mount names, the ARG values and ENV visible to it, its base's
//! digest) plus its parent's closure and, for `COPY --from`, the source
//! stage's last step's. The model below computes it from the generated
//! program; the graph computes keys from the Dockerfile text; the two must
//! agree for every mutation.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rbk_dockerfile::{BaseResolver, BuildOptions, Dockerignore, FsContext, Key, build_graph};

/// One input a key may depend on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    /// A byte of a context file.
    Bytes(&'static str),
    /// A file's executable bit.
    Exec(&'static str),
    /// A symlink's target.
    LinkTarget(&'static str),
    /// A `.dockerignore` line that excludes this path.
    Ignored(&'static str),
    /// The value of `--build-arg X`.
    BuildArg,
    /// The value of the `n`th ENV of the Dockerfile.
    Env(usize),
    /// The target platform (the resolver's digests are per platform).
    Platform,
    /// The digest a base image reference resolves to.
    BaseDigest(&'static str),
    /// Inputs no key may hold: a file outside every COPY, permission bits
    /// beyond the owner's x (umask), mtimes.
    Irrelevant,
    Umask(&'static str),
    Mtime(&'static str),
}

const FILES: &[(&str, &[u8], bool)] = &[
    ("src/a.txt", b"alpha\n", false),
    ("src/b.txt", b"bravo\n", false),
    ("src/run.sh", b"#!/bin/sh\necho run\n", true),
    ("doc/readme.md", b"# readme\n", false),
    ("junk.bin", b"never copied\n", false),
];
const LINK: &str = "src/link";
const BASES: &[&str] = &["alpine:3.19", "debian:bookworm"];

/// What one instruction of a generated stage does.
#[derive(Debug, Clone)]
enum Op {
    /// `COPY <pattern> <dest>`, reading these context paths.
    Copy(usize),
    Run,
    /// `ARG X` then `RUN echo $X`.
    ArgRun,
    /// `ENV E<n>=...`
    Env,
    /// `RUN --mount=type=bind,source=src/run.sh,...`
    BindRun,
    /// `COPY --from=<an earlier stage>`.
    CopyFrom(usize),
}

const COPIES: &[(&str, &[&str])] = &[
    ("src/", &["src/a.txt", "src/b.txt", "src/run.sh", LINK]),
    ("src/a.txt", &["src/a.txt"]),
    ("src/link", &[LINK]),
    ("doc", &["doc/readme.md"]),
];

#[derive(Debug, Clone)]
enum Base {
    Image(usize),
    Scratch,
    /// An earlier stage.
    Stage(usize),
}

#[derive(Debug, Clone)]
struct Stage {
    base: Base,
    ops: Vec<Op>,
}

fn stage_strategy(index: usize) -> impl Strategy<Value = Stage> {
    let base = if index == 0 {
        prop_oneof![(0..BASES.len()).prop_map(Base::Image), Just(Base::Scratch)].boxed()
    } else {
        prop_oneof![(0..BASES.len()).prop_map(Base::Image), Just(Base::Scratch), (0..index).prop_map(Base::Stage)].boxed()
    };
    let op = prop_oneof![
        (0..COPIES.len()).prop_map(Op::Copy),
        Just(Op::Run),
        Just(Op::ArgRun),
        Just(Op::Env),
        Just(Op::BindRun),
        (0..index.max(1)).prop_map(move |s| if index == 0 { Op::Run } else { Op::CopyFrom(s) }),
    ];
    (base, proptest::collection::vec(op, 1..5)).prop_map(|(base, ops)| Stage { base, ops })
}

fn program_strategy() -> impl Strategy<Value = Vec<Stage>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(stage_strategy).collect::<Vec<_>>())
}

/// The Dockerfile, and per line that makes a step the inputs it reads
/// itself and the lines whose closure it includes.
struct Model {
    text: String,
    reads: BTreeMap<usize, BTreeSet<Input>>,
    deps: BTreeMap<usize, Vec<usize>>,
    envs: usize,
}

fn model(program: &[Stage], env_values: &[String]) -> Model {
    let mut text = String::new();
    let mut line = 0;
    let mut reads: BTreeMap<usize, BTreeSet<Input>> = BTreeMap::new();
    let mut deps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    // Each stage's last step line, and the ENVs it ends with (inherited by
    // stages built FROM it).
    let mut last_step: Vec<usize> = Vec::new();
    let mut stage_env: Vec<BTreeSet<Input>> = Vec::new();
    let mut envs = 0;
    fn emit(text: &mut String, line: &mut usize, s: String) -> usize {
        text.push_str(&s);
        text.push('\n');
        *line += 1;
        *line
    }
    for (si, st) in program.iter().enumerate() {
        // ENV is inherited by stages built FROM this one; ARG is not.
        let mut env_here: BTreeSet<Input>;
        let (from, mut parent, mut visible) = match &st.base {
            Base::Image(b) => (BASES[*b].to_string(), None, BTreeSet::new()),
            Base::Scratch => ("scratch".to_string(), None, BTreeSet::new()),
            Base::Stage(s) => (format!("s{s}"), Some(last_step[*s]), stage_env[*s].clone()),
        };
        let l = emit(&mut text, &mut line, format!("FROM {from} AS s{si}"));
        env_here = visible.clone();
        // The FROM step itself holds no variables: a stage's inherited ENV
        // reaches the keys of the steps after it.
        let mut own: BTreeSet<Input> = BTreeSet::new();
        if let Base::Image(b) = &st.base {
            own.insert(Input::BaseDigest(BASES[*b]));
            own.insert(Input::Platform);
        }
        reads.insert(l, own);
        deps.insert(l, parent.into_iter().collect());
        parent = Some(l);
        for op in &st.ops {
            let (inst, mut own, extra_dep): (String, BTreeSet<Input>, Option<usize>) = match op {
                Op::Copy(c) => {
                    let (pattern, paths) = COPIES[*c];
                    let mut r = BTreeSet::new();
                    for p in paths {
                        if *p == LINK {
                            r.insert(Input::LinkTarget(LINK));
                        } else {
                            r.insert(Input::Bytes(p));
                            r.insert(Input::Exec(p));
                        }
                        r.insert(Input::Ignored(p));
                    }
                    (format!("COPY {pattern} /c{line}/"), r, None)
                }
                Op::Run => (format!("RUN echo {line}"), BTreeSet::new(), None),
                Op::ArgRun => {
                    emit(&mut text, &mut line, "ARG X".into());
                    visible.insert(Input::BuildArg);
                    ("RUN echo $X".into(), BTreeSet::new(), None)
                }
                Op::Env => {
                    emit(&mut text, &mut line, format!("ENV E{envs}={}", env_values[envs]));
                    visible.insert(Input::Env(envs));
                    env_here.insert(Input::Env(envs));
                    envs += 1;
                    continue;
                }
                Op::BindRun => {
                    let r = [Input::Bytes("src/run.sh"), Input::Exec("src/run.sh")].into_iter().collect();
                    ("RUN --mount=type=bind,source=src/run.sh,target=/r.sh sh /r.sh".into(), r, None)
                }
                Op::CopyFrom(s) => (format!("COPY --from=s{s} /x /from{line}"), BTreeSet::new(), Some(last_step[*s])),
            };
            own.extend(visible.iter().cloned());
            let l = emit(&mut text, &mut line, inst);
            reads.insert(l, own);
            deps.insert(l, parent.into_iter().chain(extra_dep).collect());
            parent = Some(l);
        }
        last_step.push(parent.expect("a FROM at least"));
        stage_env.push(env_here);
    }
    Model { text, reads, deps, envs }
}

impl Model {
    fn closure(&self, l: usize) -> BTreeSet<Input> {
        let mut c = self.reads[&l].clone();
        for d in &self.deps[&l] {
            c.extend(self.closure(*d));
        }
        c
    }
}

/// Digests per (reference, platform), one of them changeable.
struct Resolver {
    platform: String,
    bumped: Option<&'static str>,
}

impl BaseResolver for Resolver {
    fn resolve(&self, reference: &str, _: Option<&str>) -> Option<String> {
        let bump = if self.bumped == Some(reference) { "moved" } else { "" };
        Some(format!("sha256:{}", blake3::hash(format!("{reference}|{}|{bump}", self.platform).as_bytes()).to_hex()))
    }
}

/// The inputs as they stand; each mutation changes one.
#[derive(Clone)]
struct World {
    files: BTreeMap<&'static str, (Vec<u8>, u32)>,
    link_target: String,
    ignore: Vec<String>,
    build_arg: String,
    env_values: Vec<String>,
    platform: String,
    bumped: Option<&'static str>,
    mtime: SystemTime,
}

impl World {
    fn new(envs: usize) -> World {
        World {
            files: FILES.iter().map(|(p, c, x)| (*p, (c.to_vec(), if *x { 0o755 } else { 0o644 }))).collect(),
            link_target: "a.txt".into(),
            ignore: vec!["*.tmp".into()],
            build_arg: "one".into(),
            env_values: (0..envs).map(|i| format!("v{i}")).collect(),
            platform: "linux/amd64".into(),
            bumped: None,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        }
    }

    fn mutate(&mut self, input: &Input, byte: usize) {
        match input {
            Input::Bytes(p) => {
                let c = &mut self.files.get_mut(p).unwrap().0;
                let i = byte % c.len();
                c[i] = c[i].wrapping_add(1);
            }
            Input::Exec(p) => self.files.get_mut(p).unwrap().1 ^= 0o111,
            Input::Umask(p) => self.files.get_mut(p).unwrap().1 &= 0o700,
            Input::LinkTarget(_) => self.link_target = "b.txt".into(),
            Input::Ignored(p) => self.ignore.push(p.to_string()),
            Input::BuildArg => self.build_arg = "two".into(),
            Input::Env(n) => self.env_values[*n].push('!'),
            Input::Platform => self.platform = "linux/arm64".into(),
            Input::BaseDigest(r) => self.bumped = Some(r),
            Input::Irrelevant => self.files.get_mut("junk.bin").unwrap().0.push(b'!'),
            Input::Mtime(_) => self.mtime += Duration::from_secs(3600),
        }
    }

    /// Line → key of the program's graph in this world.
    fn keys(&self, program: &[Stage]) -> BTreeMap<usize, Key> {
        let m = model(program, &self.env_values);
        let dir = tempfile::tempdir().unwrap();
        for (p, (content, mode)) in &self.files {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, content).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).unwrap();
            std::fs::File::options().write(true).open(&f).unwrap().set_modified(self.mtime).unwrap();
        }
        std::os::unix::fs::symlink(&self.link_target, dir.path().join(LINK)).unwrap();
        let opts = BuildOptions {
            build_args: [("X".to_string(), self.build_arg.clone())].into(),
            target_platform: self.platform.clone(),
            dockerignore: Dockerignore::parse(&self.ignore.join("\n"), ".dockerignore").unwrap(),
            ..BuildOptions::default()
        };
        let resolver = Resolver { platform: self.platform.clone(), bumped: self.bumped };
        let g = build_graph(&m.text, &opts, &FsContext::new(dir.path()), &resolver)
            .unwrap_or_else(|e| panic!("{e}\n{}", m.text));
        g.steps.iter().map(|s| (s.pos.line, s.key)).collect()
    }
}

fn every_input(envs: usize) -> Vec<Input> {
    let mut v = vec![Input::BuildArg, Input::Platform, Input::Irrelevant, Input::LinkTarget(LINK), Input::Ignored("src/b.txt")];
    for (p, _, _) in &FILES[..4] {
        v.extend([Input::Bytes(p), Input::Exec(p), Input::Umask(p), Input::Mtime(p)]);
    }
    v.extend(BASES.iter().map(|b| Input::BaseDigest(b)));
    v.extend((0..envs).map(Input::Env));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn one_changed_input_changes_exactly_the_keys_whose_closure_holds_it(program in program_strategy(), byte in 0usize..64) {
        let world = World::new(model(&program, &vec![String::new(); 64]).envs);
        let m = model(&program, &world.env_values);
        let before = world.keys(&program);
        for input in every_input(m.envs) {
            let mut changed_world = world.clone();
            changed_world.mutate(&input, byte);
            let after = changed_world.keys(&program);
            prop_assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
            let changed: BTreeSet<usize> = before.iter().filter(|(l, k)| after[l] != **k).map(|(l, _)| *l).collect();
            let expected: BTreeSet<usize> = before.keys().copied().filter(|l| m.closure(*l).contains(&input)).collect();
            prop_assert_eq!(&changed, &expected, "changing {:?} in\n{}", input, m.text);
        }
    }
}

#[test]
fn the_model_sees_a_copy_from_an_earlier_stage_through_its_last_step() {
    // A hand-checked case of the model itself: s1 copies from s0, whose
    // COPY reads src/a.txt.
    let program = vec![
        Stage { base: Base::Image(0), ops: vec![Op::Copy(1)] },
        Stage { base: Base::Scratch, ops: vec![Op::Run, Op::CopyFrom(0)] },
    ];
    let m = model(&program, &[]);
    assert_eq!(m.text, "FROM alpine:3.19 AS s0\nCOPY src/a.txt /c1/\nFROM scratch AS s1\nRUN echo 3\nCOPY --from=s0 /x /from4\n");
    assert!(m.closure(5).contains(&Input::Bytes("src/a.txt")));
    assert!(!m.closure(4).contains(&Input::Bytes("src/a.txt")));
}
