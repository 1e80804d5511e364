//! Records the git commit the binary is built from, for `switchboard --version`.
//!
//! `SWITCHBOARD_COMMIT` in the environment wins (a container build has no `.git`);
//! otherwise `git rev-parse`; `unknown` when neither is there. Never fails the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_COMMIT");
    let commit = std::env::var("SWITCHBOARD_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=SWITCHBOARD_COMMIT={}", commit.as_deref().map(str::trim).unwrap_or("unknown"));
}

/// The short hash of HEAD, and rerun-if-changed on the files that move with it.
fn git_commit() -> Option<String> {
    // In a worktree `.git` is a file: ask git where HEAD and the branch's ref
    // really are. Only this branch's ref is watched, so commits on other
    // branches (other worktrees share the refs) do not rebuild this crate.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch.trim().to_owned());
    }
    for what in &watch {
        if let Some(path) = git(&["rev-parse", "--git-path", what]) {
            let path = Path::new(path.trim());
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(&["rev-parse", "--short=7", "HEAD"]).filter(|hash| !hash.trim().is_empty())
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8(output.stdout).ok()).flatten()
}
