//! `cargo xtask`: the one place the project's shell commands live, so that CI and a newcomer
//! run exactly the same steps.
//!
//! - `cargo xtask test`  fmt check, clippy `-D warnings`, every test, docs `-D warnings`
//! - `cargo xtask ci`    what `.ci/run` calls: `test`
//! - `cargo xtask bench [-- CRITERION ARGS]` criterion micro benchmarks (dispatch-core on
//!   io_uring and epoll against raw io-uring)
#![forbid(unsafe_code)]

mod bench;
mod deps;
mod test;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") | Some("ci") => test::run(),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|ci|bench [criterion filter]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

/// Runs `cargo` with `args` in the workspace root, echoing the command line; an error names
/// the step that failed.
pub fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let line = format!("cargo {}", args.join(" "));
    eprintln!("$ {line}");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(project_root())
        .status()
        .map_err(|error| format!("{line}: {error}"))?;
    if !status.success() {
        return Err(format!("{line} failed: {status}"));
    }
    Ok(())
}
