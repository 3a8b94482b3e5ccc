//! `cargo xtask audit`: the dependency graph against the policy in `deny.toml`, with
//! cargo-deny: the licences allowed, RustSec's security advisories (and yanked versions),
//! duplicate and wildcard dependencies, and where crates come from. The product workspace's
//! findings fail the command; each benchmark peer in `bench/peers` (a workspace of its own,
//! never a dependency of the product) is checked with the same policy and only reported.
//!
//! cargo-deny, a version pinned here, is installed with `cargo install --locked` where missing
//! (about 3 minutes on two cores, once). The advisories need RustSec's database, a git
//! repository on GitHub, fetched first (`cargo deny fetch db`); where it cannot be fetched
//! (offline, or `--offline`), the copy fetched last is used, which cargo-deny refuses once it
//! is more than 90 days old; where there is none, the advisories are not checked and the
//! closing lines say so in capitals. The other checks need only the crates, from crates.io.
//! Part of `cargo xtask ci`, not of `test`, so that `test` stays usable offline.

use crate::cmd::Cmd;
use crate::project_root;

/// The cargo-deny that `deny.toml` is written for; installed where none is.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// The checks other than the advisories: they need no database.
const POLICY_CHECKS: [&str; 3] = ["licenses", "bans", "sources"];

/// RustSec's advisory database, as this run has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Database {
    /// Fetched by this run.
    Fetched,
    /// Not fetched now, but a copy fetched before is there.
    Cached,
    /// None at all: the advisories cannot be checked.
    Missing,
}

/// What the checks of one workspace found.
#[derive(Debug)]
struct Outcome {
    /// Licences, bans and sources.
    policy: Result<(), String>,
    /// The advisories, or `None` where there was no database to check them against.
    advisories: Option<Result<(), String>>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.policy.is_ok() && !matches!(self.advisories, Some(Err(_)))
    }

    fn summary(&self) -> String {
        let word = |result: &Result<(), String>| match result {
            Ok(()) => "ok",
            Err(_) => "FAILED (above)",
        };
        let advisories = match &self.advisories {
            Some(result) => word(result),
            None => "NOT CHECKED (no advisory database)",
        };
        format!(
            "licences, bans, sources: {}; advisories: {advisories}",
            word(&self.policy)
        )
    }
}

/// `offline`: fetch nothing (neither cargo-deny, nor the database, nor crates).
pub fn run(offline: bool) -> Result<(), String> {
    ensure_cargo_deny(offline)?;
    let database = advisory_database(offline);
    eprintln!("\nxtask: audit: the product workspace (its findings fail)");
    let product = audit(None, database, offline);
    let mut outcomes = Vec::new();
    for peer in peers()? {
        eprintln!("\nxtask: audit: bench/peers/{peer} (reported, never failing)");
        let manifest = format!("bench/peers/{peer}/Cargo.toml");
        outcomes.push((peer, audit(Some(&manifest), database, offline)));
    }
    eprintln!("\ncargo xtask audit: {}", database_line(database));
    eprintln!("  product: {}", product.summary());
    eprintln!("  benchmark peers (reported, never failing):");
    for (peer, outcome) in &outcomes {
        eprintln!("    {peer:<12} {}", outcome.summary());
    }
    if product.passed() {
        Ok(())
    } else {
        Err("the product's dependencies break deny.toml's policy (above)".to_owned())
    }
}

/// Installs the pinned cargo-deny where `cargo deny` is missing.
fn ensure_cargo_deny(offline: bool) -> Result<(), String> {
    if let Some(version) = Cmd::cargo(&["deny", "--version"]).query() {
        let version = version.trim();
        if !version.ends_with(CARGO_DENY_VERSION) {
            eprintln!(
                "xtask: audit: using the installed {version}; deny.toml is written for \
                 {CARGO_DENY_VERSION}"
            );
        }
        return Ok(());
    }
    let spec = format!("cargo-deny@{CARGO_DENY_VERSION}");
    if offline {
        return Err(format!(
            "cargo-deny is not installed, and --offline fetches nothing: run \
             `cargo install --locked {spec}` online first"
        ));
    }
    Cmd::cargo(&["install", "--locked", &spec]).run()
}

/// Fetches RustSec's database unless `offline`; else says which copy the advisories use.
fn advisory_database(offline: bool) -> Database {
    if !offline {
        match Cmd::cargo(&["deny", "fetch", "db"]).run() {
            Ok(()) => return Database::Fetched,
            Err(error) => eprintln!("xtask: audit: {error}: RustSec's database was not fetched"),
        }
    }
    if database_cached() {
        Database::Cached
    } else {
        Database::Missing
    }
}

/// Whether a copy of an advisory database is where cargo-deny keeps them
/// (`$CARGO_HOME/advisory-dbs/advisory-db-HASH`, the default `db-path`).
fn database_cached() -> bool {
    let Some(dir) = crate::cargo_home().map(|home| home.join("advisory-dbs")) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.starts_with("advisory-db-") && entry.path().join(".git").is_dir()
    })
}

fn database_line(database: Database) -> &'static str {
    match database {
        Database::Fetched => "RustSec's advisory database fetched now",
        Database::Cached => {
            "RustSec's advisory database NOT fetched: the copy fetched before was used \
             (cargo-deny refuses one older than 90 days)"
        }
        Database::Missing => {
            "RustSec's advisory database could not be fetched and none was fetched \
             before: the advisories were NOT CHECKED (online: cargo deny fetch db)"
        }
    }
}

/// Runs the checks on the workspace of `manifest` (the product's where `None`).
fn audit(manifest: Option<&str>, database: Database, offline: bool) -> Outcome {
    let deny = |offline: bool| {
        let mut deny = Cmd::cargo(&["deny", "--locked"]);
        if offline {
            deny = deny.args(&["--offline"]);
        }
        if let Some(manifest) = manifest {
            deny = deny.args(&["--manifest-path", manifest, "--config", "deny.toml"]);
        }
        deny.args(&["check"])
    };
    // A peer's graph shares few crates with the product's: the licences it does not meet,
    // and its duplicate versions, are not the product's to act on.
    let quiet: &[&str] = match manifest {
        Some(_) => &["-A", "license-not-encountered", "-A", "duplicate"],
        None => &[],
    };
    let policy = deny(offline).args(quiet).args(&POLICY_CHECKS).run();
    // The database is fetched, or cannot be: either way the check itself stays offline (the
    // policy check just fetched the crates).
    let advisories =
        (database != Database::Missing).then(|| deny(true).args(quiet).args(&["advisories"]).run());
    Outcome { policy, advisories }
}

/// The benchmark peers' directories under `bench/peers`, each a workspace of its own.
fn peers() -> Result<Vec<String>, String> {
    let dir = project_root().join("bench/peers");
    let entries = std::fs::read_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut peers: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    peers.sort();
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_products_findings_fail_and_a_missing_database_is_said_loudly() {
        let clean = Outcome {
            policy: Ok(()),
            advisories: None,
        };
        assert!(clean.passed());
        assert!(clean.summary().contains("advisories: NOT CHECKED"));
        let vulnerable = Outcome {
            policy: Ok(()),
            advisories: Some(Err("exit 1".into())),
        };
        assert!(!vulnerable.passed());
        assert!(vulnerable.summary().contains("advisories: FAILED"));
        assert!(database_line(Database::Missing).contains("NOT CHECKED"));
    }

    #[test]
    fn every_peer_is_found() {
        let peers = peers().unwrap();
        assert!(peers.iter().any(|peer| peer == "tokio-echo"), "{peers:?}");
    }
}
