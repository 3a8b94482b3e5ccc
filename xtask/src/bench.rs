//! `cargo xtask bench`: the criterion micro benchmarks. Benchmarks report; they never pass or
//! fail a build.

use crate::cargo;

/// `criterion_args` go to criterion (a filter, `--measurement-time 6`, ...); a leading `--`
/// is accepted and dropped.
pub fn run(criterion_args: &[String]) -> Result<(), String> {
    let criterion_args = match criterion_args.first().map(String::as_str) {
        Some("--") => &criterion_args[1..],
        _ => criterion_args,
    };
    let mut args = vec!["bench", "-p", "dispatch-core", "--bench", "dispatch", "--"];
    args.extend(criterion_args.iter().map(String::as_str));
    cargo(&args, &[])
}
