//! `cargo xtask bench`: the criterion micro benchmarks. Benchmarks report; they never pass or
//! fail a build.

use crate::cargo;

pub fn run(filter: &[String]) -> Result<(), String> {
    let mut args = vec!["bench", "-p", "dispatch-core", "--bench", "dispatch", "--"];
    args.extend(filter.iter().map(String::as_str));
    cargo(&args, &[])
}
