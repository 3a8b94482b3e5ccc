//! `cargo xtask test`: formatting, lints (for Linux and, type-checked, for FreeBSD and macOS),
//! docs, then every test, and the dispatch-core suite again under each forced backend. Ends
//! with the tests' results. Installs the rustup components and targets it needs where
//! missing, so it works on a fresh machine.

use std::process::{Command, Stdio};

use crate::cargo;

/// Targets whose kqueue code is type-checked and linted here (no machine of either kind).
const CHECK_TARGETS: [&str; 2] = ["x86_64-unknown-freebsd", "aarch64-apple-darwin"];

/// The backends the dispatch-core suite runs under on Linux, besides the automatic choice.
const FORCED_BACKENDS: [&str; 2] = ["epoll", "kqueue-fake"];

const CLIPPY: [&str; 6] = [
    "clippy",
    "--workspace",
    "--all-targets",
    "--",
    "-D",
    "warnings",
];

pub fn run() -> Result<(), String> {
    let has_rustup = succeeds("rustup", &["--version"]);
    if has_rustup {
        ensure_toolchain()?;
    } else {
        // FreeBSD's packaged Rust: no other target's std can be installed; that host checks
        // its own kqueue code for real instead.
        eprintln!("rustup not found: skipping the cross-target checks");
    }
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(&CLIPPY, &[])?;
    let check_targets: &[&str] = if has_rustup { &CHECK_TARGETS } else { &[] };
    for &target in check_targets {
        let mut args = vec!["clippy", "--target", target, "--all-targets"];
        args.extend([
            "-p",
            "sys-kqueue",
            "-p",
            "dispatch-core",
            "--",
            "-D",
            "warnings",
        ]);
        cargo(&args, &[])?;
    }
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    // Last, so that the run's closing lines are the tests' results.
    if cfg!(target_os = "linux") {
        for backend in FORCED_BACKENDS {
            let args = ["test", "-p", "dispatch-core", "--test", "it"];
            cargo(&args, &[("DISPATCH_BACKEND", backend)])?;
        }
    }
    Ok(())
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `rustup component add rustfmt clippy` and `rustup target add` for the check targets, when
/// missing.
fn ensure_toolchain() -> Result<(), String> {
    if !(succeeds("cargo", &["fmt", "--version"]) && succeeds("cargo", &["clippy", "--version"])) {
        rustup(&["component", "add", "rustfmt", "clippy"])?;
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = CHECK_TARGETS
        .into_iter()
        .filter(|target| !installed.lines().any(|l| l == *target))
        .collect();
    if !missing.is_empty() {
        let mut args = vec!["target", "add"];
        args.extend(missing);
        rustup(&args)?;
    }
    Ok(())
}

fn rustup(args: &[&str]) -> Result<(), String> {
    let line = format!("rustup {}", args.join(" "));
    eprintln!("$ {line}");
    let status = Command::new("rustup")
        .args(args)
        .status()
        .map_err(|error| format!("{line}: {error}"))?;
    if !status.success() {
        return Err(format!("{line} failed: {status}"));
    }
    Ok(())
}
