//! `cargo xtask test`: formatting, lints, docs and tests, in the order that fails fastest and
//! ends with the tests' results. Installs the rustup components it needs where missing, so
//! it works on a fresh machine.

use std::process::{Command, Stdio};

use crate::cargo;

pub fn run() -> Result<(), String> {
    ensure_components()?;
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // Last, so that the run's closing lines are the tests' results.
    cargo(&["test", "--workspace"], &[])?;
    Ok(())
}

/// `rustup component add rustfmt clippy` when either is missing.
fn ensure_components() -> Result<(), String> {
    let present = |subcommand: &str| {
        Command::new("cargo")
            .args([subcommand, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if present("fmt") && present("clippy") {
        return Ok(());
    }
    eprintln!("$ rustup component add rustfmt clippy");
    let status = Command::new("rustup")
        .args(["component", "add", "rustfmt", "clippy"])
        .status()
        .map_err(|error| format!("rustfmt or clippy is missing and rustup failed: {error}"))?;
    if !status.success() {
        return Err(format!(
            "rustup component add rustfmt clippy failed: {status}"
        ));
    }
    Ok(())
}
