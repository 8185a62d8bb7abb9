//! `rbk graph`: print a Dockerfile's build graph with cache keys, without
//! building anything. For debugging cache misses: run it twice and compare.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rbk_dockerfile::{BuildOptions, Dockerignore, FsContext, build_graph};

#[derive(clap::Args)]
pub struct GraphArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    target: Option<String>,
    /// NAME=VALUE, or NAME to take the value from the environment.
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Target platform (os/arch[/variant]).
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Namespace that cache mount ids are scoped to.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// REF=DIGEST: pin a base image to a manifest digest (repeatable).
    /// Without it, keys of FROM steps use the reference string.
    #[arg(long = "base-digest")]
    base_digests: Vec<String>,
    /// Print the build checks (BuildKit's warnings) instead of the graph.
    #[arg(long)]
    check: bool,
    /// Resolve remote inputs as a build does and key by them: each FROM
    /// image to its manifest digest (asked of its registry; --base-digest
    /// wins) and each `ADD <url>` without --checksum to its content's sha256
    /// (downloaded and hashed; no validators are kept).
    #[arg(long)]
    resolve: bool,
    /// The build context directory.
    context: PathBuf,
}

pub async fn run(args: GraphArgs) -> anyhow::Result<()> {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    // BuildKit reads bytes: text that is not UTF-8 still builds.
    let text = rbk_dockerfile::decode(&bytes).into_owned();
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(a) {
                Ok(v) => build_args.insert(a.clone(), v),
                Err(_) => continue,
            },
        };
    }
    let mut resolver = BTreeMap::new();
    for b in &args.base_digests {
        let Some((r, d)) = b.split_once('=') else {
            bail!("--base-digest {b}: expected REF=DIGEST")
        };
        resolver.insert(r.to_string(), d.to_string());
    }
    let opts = BuildOptions {
        file_name: file.display().to_string(),
        target: args.target,
        build_args,
        target_platform: args.platform,
        namespace: args.namespace,
        dockerignore: Dockerignore::load(&file, &args.context)?.unwrap_or_default(),
        ..BuildOptions::default()
    };
    let ctx = FsContext::new(&args.context);
    let mut graph = build_graph(&text, &opts, &ctx, &resolver)?;
    if args.resolve {
        let client = rbk_image::RegistryClient::new()?;
        for s in &graph.steps {
            if let rbk_dockerfile::StepKind::Image { reference, digest: None, .. } = &s.kind {
                let r: rbk_image::ImageRef = reference.parse().with_context(|| format!("FROM {reference}"))?;
                let (desc, _, _) = client.fetch_manifest(&r).await.with_context(|| format!("resolving FROM {reference}"))?;
                resolver.insert(reference.clone(), desc.digest.to_string());
            }
        }
        let scratch = tempfile::tempdir()?;
        let remote = rbk_plan::remote_sources::resolve(&graph, &opts.file_name, scratch.path()).await?;
        graph = build_graph(&text, &opts, &ctx, &rbk_plan::remote_sources::WithRemote { inner: &resolver, remote: &remote })?;
    }
    if args.check {
        // `docker build --check`'s layout: the rule and its page, then
        // where and what.
        for c in &graph.checks {
            println!("WARNING: {} - {}\n{}:{}: {}", c.rule, c.url(), opts.file_name, c.line, c.message);
        }
        match graph.checks.len() {
            0 => println!("Check complete, no warnings found."),
            n => println!("Check complete, {n} warning{} found.", if n == 1 { "" } else { "s" }),
        }
        // `# check=error=true` makes the warnings fail the check, as they
        // fail a build: CI gates on the exit status.
        if let Some(message) = graph.check_violation() {
            bail!("{}: {message}", opts.file_name);
        }
        return Ok(());
    }
    for c in &graph.checks {
        eprintln!("WARNING: {c}");
    }
    print!("{}", graph.render());
    if let Some(k) = graph.stages[graph.target].key {
        println!("\nimage key: {k}");
    }
    Ok(())
}
