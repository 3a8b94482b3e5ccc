//! `cargo xtask bench`: the criterion micro benchmarks. Benchmarks report; they never pass or
//! fail a build.

use crate::cmd::Cmd;

/// `criterion_args` go to criterion (a filter, `--measurement-time 6`, ...); the command line
/// parser has already dropped a leading `--`.
pub fn run(criterion_args: &[String]) -> Result<(), String> {
    let criterion_args: Vec<&str> = criterion_args.iter().map(String::as_str).collect();
    Cmd::cargo(&["bench", "-p", "dispatch-core", "--bench", "dispatch", "--"])
        .args(&criterion_args)
        .run()
}
