//! `cargo xtask test`'s feature check: every workspace crate, on its own (`-p`, so no other
//! member's features are unified into it), builds and lints clean with no features, with its
//! default features, with each feature alone, and with all features. The features come from
//! `cargo metadata`, so a new one (dispatch-loop's `sim`, say) is checked without anyone
//! listing it here.
//!
//! Each combination is `cargo clippy -p CRATE ... -- -D warnings`: clippy is `cargo check`
//! plus the lints, so a combination that only warns (an import used only under a feature)
//! fails as it would in the workspace's clippy step, and the dependencies' check artifacts
//! are shared with that step. Combinations that turn on the same features run once: a crate
//! without features is checked once.

use std::collections::{BTreeMap, BTreeSet};

use crate::cmd::Cmd;
use crate::metadata::Member;

/// Checks every combination of every member.
pub fn run(members: &[Member]) -> Result<(), String> {
    for member in members {
        for args in combinations(&member.features) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Cmd::cargo(&["clippy", "-p", &member.name])
                .args(&args)
                .args(&["--", "-D", "warnings"])
                .run()?;
        }
    }
    Ok(())
}

/// cargo's feature arguments for each build to check: nothing (the defaults),
/// `--no-default-features`, `--no-default-features --features F` for each feature F, and
/// `--all-features`; of those that turn on the same features, only the first.
fn combinations(features: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let owned = |args: &[&str]| args.iter().map(|&arg| arg.to_owned()).collect::<Vec<_>>();
    let mut candidates = vec![
        (owned(&[]), enabled(features, &["default"])),
        (owned(&["--no-default-features"]), BTreeSet::new()),
    ];
    for feature in features.keys().filter(|&name| name != "default") {
        let args = owned(&["--no-default-features", "--features", feature]);
        candidates.push((args, enabled(features, &[feature])));
    }
    let all: Vec<&str> = features.keys().map(String::as_str).collect();
    candidates.push((owned(&["--all-features"]), enabled(features, &all)));
    let mut seen = Vec::new();
    let mut unique = Vec::new();
    for (args, set) in candidates {
        if !seen.contains(&set) {
            seen.push(set);
            unique.push(args);
        }
    }
    unique
}

/// The crate's own features that turning on `start` turns on, following what each names:
/// another feature (`f`), an optional dependency's implicit feature (`dep` of `dep/f`, not of
/// `dep?/f`). `dep:x` turns on no feature of the crate's own. `default` is left out of the
/// set: it names features, and no code tests for it.
fn enabled(features: &BTreeMap<String, Vec<String>>, start: &[&str]) -> BTreeSet<String> {
    let mut on = BTreeSet::new();
    let mut todo: Vec<&str> = start.to_vec();
    while let Some(name) = todo.pop() {
        let Some(implies) = features.get(name) else {
            continue;
        };
        if !on.insert(name.to_owned()) {
            continue;
        }
        for item in implies {
            if item.starts_with("dep:") {
                continue;
            }
            let feature = match item.split_once('/') {
                Some((dependency, _)) if dependency.ends_with('?') => continue,
                Some((dependency, _)) => dependency,
                None => item.as_str(),
            };
            todo.push(feature);
        }
    }
    on.remove("default");
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(table: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        let strings = |items: &[&str]| items.iter().map(|&item| item.to_owned()).collect();
        table
            .iter()
            .map(|(name, items)| (name.to_string(), strings(items)))
            .collect()
    }

    #[test]
    fn a_crate_without_features_is_checked_once() {
        assert_eq!(combinations(&BTreeMap::new()), [Vec::<String>::new()]);
    }

    #[test]
    fn combinations_that_turn_on_the_same_features_run_once() {
        // sys-kqueue: the default is `fake`, so `--features fake` and `--all-features` build
        // what the defaults build.
        let kqueue = features(&[("default", &["fake"]), ("fake", &[])]);
        assert_eq!(
            combinations(&kqueue),
            [vec![], vec!["--no-default-features".to_owned()]]
        );
        // No default, two features, one of which implies the other, and an optional
        // dependency reached through `dep/feature`.
        let core = features(&[
            ("sim", &[]),
            ("trace", &["sim", "log/std"]),
            ("log", &["dep:log"]),
        ]);
        let got: Vec<String> = combinations(&core)
            .iter()
            .map(|args| args.join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "",
                "--no-default-features --features log",
                "--no-default-features --features sim",
                "--no-default-features --features trace",
            ]
        );
        assert_eq!(
            enabled(&core, &["trace"]),
            ["log", "sim", "trace"].map(str::to_owned).into()
        );
        let weak = features(&[("x", &["log?/std"]), ("log", &["dep:log"])]);
        assert_eq!(enabled(&weak, &["x"]), ["x"].map(str::to_owned).into());
    }
}
