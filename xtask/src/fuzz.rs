//! `cargo xtask fuzz`: the project's seeded simulation fuzzers, run on many seeds or replaying
//! one. Each fuzzer is a test that reads its seeds from the environment and lives next to the
//! code it exercises; this table names them. Release builds: a seed runs about ten times
//! faster than in the test suite's debug build. A fuzzer with a self-test (`wal`) also
//! checks, after its seeds pass, that the same seeds catch its planted bug.

use crate::cmd::Cmd;

/// A fuzzer: its name, the package and the test (an exact test name) that runs it, the
/// environment-variable prefix it reads (`<PREFIX>_SEED`, `_SEEDS`, `_START`, `_OPS`,
/// `_PLANTED`), and whether a run of many seeds also checks that the planted bug is caught
/// (`_PLANTED=1` with `_EXPECT_CAUGHT=1`: the test passes only if some seed fails).
struct Fuzzer {
    name: &'static str,
    package: &'static str,
    test: &'static str,
    prefix: &'static str,
    self_test: bool,
    /// `--ops` when not given.
    default_ops: u64,
}

/// Every fuzzer. `echo`: the echo server's connection logic (`dispatch_echo::Echo` served by
/// `dispatch_net::serve`) under the `sim` backend with every fault on and many simulated
/// clients (`crates/echo-server/tests/it/sim_fuzz.rs` says how it works). `wal`: the
/// write-ahead log's group commit crashed at random moments under disk faults
/// (`crates/wal/tests/it/crash_fuzz.rs`); its `--ops` is appends per seed, and after the
/// seeds pass the same seeds run with the planted bug (acknowledging before the
/// `fdatasync`), which must be caught. `udp`: dispatch-net's UDP echo (`serve_udp`) and many
/// `UdpClient`s with deadlines and retries under datagram loss, duplication and reordering
/// (`crates/dispatch-net/tests/it/udp_fuzz.rs`); its `--ops` is requests per seed, and its
/// self-test plants clients that take any datagram from the server as the response.
/// `--fuzzer all` runs each in turn.
const FUZZERS: [Fuzzer; 3] = [
    Fuzzer {
        name: "echo",
        package: "dispatch-echo",
        test: "sim_fuzz::fuzz_from_env",
        prefix: "ECHO_FUZZ",
        self_test: false,
        default_ops: 10_000,
    },
    Fuzzer {
        name: "wal",
        package: "dispatch-wal",
        test: "crash_fuzz::fuzz_from_env",
        prefix: "WAL_FUZZ",
        self_test: true,
        default_ops: 1_000,
    },
    Fuzzer {
        name: "udp",
        package: "dispatch-net",
        test: "udp_fuzz::fuzz_from_env",
        prefix: "UDP_FUZZ",
        self_test: true,
        default_ops: 2_000,
    },
];

/// Seeds of a self-test at most: the log's planted bug is caught by about one seed in four,
/// so 200 seeds miss it with a probability far below one in a billion, in a few seconds.
const SELF_TEST_SEEDS: u64 = 200;

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
    /// Simulated operations per seed (`None`: the fuzzer's default).
    pub ops: Option<u64>,
    /// Turn on the planted bug (to see the fuzzer find it).
    pub planted_bug: bool,
}

pub fn run(plan: &Plan<'_>) -> Result<(), String> {
    if plan.fuzzer == "all" {
        let start = plan.start.unwrap_or_else(time_seed);
        for fuzzer in &FUZZERS {
            let plan = Plan {
                fuzzer: fuzzer.name,
                start: Some(start),
                ..*plan
            };
            run(&plan)?;
        }
        return Ok(());
    }
    let Some(fuzzer) = FUZZERS.iter().find(|f| f.name == plan.fuzzer) else {
        let names: Vec<&str> = FUZZERS.iter().map(|f| f.name).collect();
        return Err(format!(
            "no fuzzer {:?}; there are: {} (or all)",
            plan.fuzzer,
            names.join(", ")
        ));
    };
    let start = plan.start.unwrap_or_else(time_seed);
    run_one(fuzzer, plan, start, plan.planted_bug, false)?;
    if fuzzer.self_test && !plan.planted_bug && plan.seed.is_none() {
        eprintln!(
            "xtask: {} passed; now its self-test: the first {SELF_TEST_SEEDS} of those seeds \
             (at most) with the planted bug, which must be caught",
            fuzzer.name
        );
        let seeds = plan.seeds.min(SELF_TEST_SEEDS);
        run_one(fuzzer, &Plan { seeds, ..*plan }, start, true, true)?;
    }
    Ok(())
}

/// Runs `fuzzer` once: `plan.seed` alone, or `plan.seeds` seeds from `start`.
fn run_one(
    fuzzer: &Fuzzer,
    plan: &Plan<'_>,
    start: u64,
    planted_bug: bool,
    expect_caught: bool,
) -> Result<(), String> {
    let var = |suffix: &str| format!("{}_{suffix}", fuzzer.prefix);
    let ops = plan.ops.unwrap_or(fuzzer.default_ops).to_string();
    let mut cmd = Cmd::cargo(&["test", "--release", "-p", fuzzer.package, "--test", "it"])
        .args(&["--", "--exact", fuzzer.test, "--nocapture"])
        .env(&var("OPS"), &ops);
    if planted_bug {
        cmd = cmd.env(&var("PLANTED"), "1");
    }
    if expect_caught {
        cmd = cmd.env(&var("EXPECT_CAUGHT"), "1");
    }
    let (seed, first);
    match plan.seed {
        Some(one) => {
            seed = one.to_string();
            cmd = cmd.env(&var("SEED"), &seed);
        }
        None => {
            first = start.to_string();
            seed = plan.seeds.to_string();
            cmd = cmd.env(&var("SEEDS"), &seed).env(&var("START"), &first);
            eprintln!(
                "xtask: fuzzing {} with {} seeds from {start} (rerun them with --start {start})",
                fuzzer.name, plan.seeds
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
