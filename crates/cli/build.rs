//! Stamps the binary with the git commit it was built from, for
//! `rbk_build_info{commit}` and `rbk --version`: `RBK_BUILD_COMMIT` when set
//! (an image build whose context has no `.git`), else `git rev-parse`,
//! else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RBK_BUILD_COMMIT");
    let commit = std::env::var("RBK_BUILD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // A new commit or checkout moves HEAD or the branch it names.
        for path in ["HEAD", "packed-refs"] {
            if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])) {
            println!("cargo:rerun-if-changed={branch}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=RBK_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
