//! `cargo xtask msrv`: checks the workspace's `rust-version` claim by type-checking every
//! crate and target with exactly that toolchain. Not part of `cargo xtask test`: it installs
//! and builds with a second toolchain, which costs minutes; CI runs it as its own job.

use crate::cmd::Cmd;
use crate::{project_root, rustup};

pub fn run() -> Result<(), String> {
    let version = rust_version()?;
    rustup::ensure_toolchain(&version, &[])?;
    Cmd::cargo(&[
        &format!("+{version}"),
        "check",
        "--workspace",
        "--all-targets",
    ])
    .run()
}

/// `rust-version` from the root manifest's `[workspace.package]`.
fn rust_version() -> Result<String, String> {
    let manifest = project_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|error| format!("{}: {error}", manifest.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("rust-version"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| format!("{} has no rust-version", manifest.display()))
}
