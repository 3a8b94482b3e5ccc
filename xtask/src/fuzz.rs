//! `cargo xtask fuzz`: the project's seeded simulation fuzzers, run on many seeds or replaying
//! one. Each fuzzer is a test that reads its seeds from the environment and lives next to the
//! code it exercises; this table names them. Release builds: a seed runs about ten times
//! faster than in the test suite's debug build.

use crate::cmd::Cmd;

/// A fuzzer: its name, the package and the test (an exact test name) that runs it, and the
/// environment-variable prefix it reads (`<PREFIX>_SEED`, `_SEEDS`, `_START`, `_OPS`,
/// `_PLANTED`).
struct Fuzzer {
    name: &'static str,
    package: &'static str,
    test: &'static str,
    prefix: &'static str,
}

/// Every fuzzer. `echo`: the echo server's connection logic (`dispatch_echo::Echo` served by
/// `dispatch_net::serve`) under the `sim` backend with every fault on and many simulated
/// clients (`crates/echo-server/tests/it/sim_fuzz.rs` says how it works).
const FUZZERS: [Fuzzer; 1] = [Fuzzer {
    name: "echo",
    package: "dispatch-echo",
    test: "sim_fuzz::fuzz_from_env",
    prefix: "ECHO_FUZZ",
}];

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub fuzzer: &'a str,
    /// Replay this one seed.
    pub seed: Option<u64>,
    /// Run this many seeds.
    pub seeds: u64,
    /// The first of them; `None`: one picked from the time, and printed.
    pub start: Option<u64>,
    /// Simulated operations per seed.
    pub ops: u64,
    /// Turn on the planted bug (to see the fuzzer find it).
    pub planted_bug: bool,
}

pub fn run(plan: &Plan<'_>) -> Result<(), String> {
    let Some(fuzzer) = FUZZERS.iter().find(|f| f.name == plan.fuzzer) else {
        let names: Vec<&str> = FUZZERS.iter().map(|f| f.name).collect();
        return Err(format!(
            "no fuzzer {:?}; there are: {}",
            plan.fuzzer,
            names.join(", ")
        ));
    };
    let var = |suffix: &str| format!("{}_{suffix}", fuzzer.prefix);
    let ops = plan.ops.to_string();
    let mut cmd = Cmd::cargo(&["test", "--release", "-p", fuzzer.package, "--test", "it"])
        .args(&["--", "--exact", fuzzer.test, "--nocapture"])
        .env(&var("OPS"), &ops);
    if plan.planted_bug {
        cmd = cmd.env(&var("PLANTED"), "1");
    }
    let (seed, start);
    match plan.seed {
        Some(one) => {
            seed = one.to_string();
            cmd = cmd.env(&var("SEED"), &seed);
        }
        None => {
            let first = plan.start.unwrap_or_else(time_seed);
            start = first.to_string();
            seed = plan.seeds.to_string();
            cmd = cmd.env(&var("SEEDS"), &seed).env(&var("START"), &start);
            eprintln!(
                "xtask: fuzzing {} seeds from {first} (rerun them with --start {first})",
                plan.seeds
            );
        }
    }
    cmd.run()
}

/// A start seed from the time, so that each run tries new seeds (the simulation itself never
/// reads the clock: the seed is printed, and replays exactly).
fn time_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() % 1_000_000) * 1_000_000
}
