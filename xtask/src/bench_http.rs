//! The HTTP benchmark: wrk against the project's HTTP example (`cargo build --release -p
//! examples --example http`) on io_uring and on epoll, and against a hyper server
//! (`bench/peers/hyper-http`), every server one thread on the server CPUs, wrk on the others;
//! `GET /plaintext`, keep-alive, 100 and 1,000 connections, each without pipelining and with
//! 16 requests pipelined (`bench/wrk/pipeline.lua`). Rounds interleave the servers, as the
//! echo benchmark's do. This file holds the scenarios, the servers, the plan and the build;
//! `bench_http_run.rs` runs, `bench_http_report.rs` reports.
//!
//! Where wrk is missing, the benchmark says how to install it and is left out: no figure is
//! ever printed that wrk did not measure. Where the HTTP example does not build (it may not
//! exist yet), the benchmark runs hyper alone and says why.

use std::path::PathBuf;

use super::plan::{build_peer, filtered, target_dir, Plan as EchoPlan};
use super::{http_report, http_run, BenchArgs};
use crate::cmd::Cmd;

/// One load: what wrk does.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// Keep-alive connections wrk holds open.
    pub connections: u32,
    /// Requests wrk writes at once on a connection (1: no pipelining).
    pub depth: u32,
}

/// The route every scenario requests.
pub const PATH: &str = "/plaintext";

/// The scenarios, in the order they run.
pub const SCENARIOS: [Scenario; 4] = [
    scenario("plaintext-c100", 100, 1),
    scenario("plaintext-c100-p16", 100, 16),
    scenario("plaintext-c1000", 1000, 1),
    scenario("plaintext-c1000-p16", 1000, 16),
];

const fn scenario(name: &'static str, connections: u32, depth: u32) -> Scenario {
    Scenario {
        name,
        connections,
        depth,
    }
}

/// The one scenario `--quick` runs (pipelined, so that the Lua script is exercised too).
const QUICK_SCENARIO: &str = "plaintext-c100-p16";

/// How a server is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// `TARGET/release/examples/http --listen ADDR` with `DISPATCH_BACKEND=backend`.
    Example { backend: &'static str },
    /// A peer in `bench/peers/DIR`, whose binary is named DIR and takes the address.
    Peer { dir: &'static str },
}

/// A server measured.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// How to start it.
    pub kind: ServerKind,
}

/// The server every other is compared with.
pub const BASELINE: &str = "hyper";

/// Every server, in the order each round runs them.
pub const SERVERS: [Server; 3] = [
    Server {
        name: "http-uring",
        kind: ServerKind::Example {
            backend: "io_uring",
        },
    },
    Server {
        name: "http-epoll",
        kind: ServerKind::Example { backend: "epoll" },
    },
    Server {
        name: BASELINE,
        kind: ServerKind::Peer { dir: "hyper-http" },
    },
];

/// Everything an HTTP benchmark run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenarios run, in order.
    pub scenarios: Vec<Scenario>,
    /// The servers run in each scenario, in order.
    pub servers: Vec<Server>,
    /// Rounds; each runs every (scenario, server) once.
    pub rounds: u32,
    /// Seconds of a wrk run of its own before the measured one (0: none).
    pub warmup_s: u32,
    /// Seconds of the measured wrk run (wrk takes whole seconds).
    pub duration_s: u32,
    /// taskset CPU lists (`None`: not pinned), as the echo benchmark's.
    pub server_cpus: Option<String>,
    /// wrk's CPUs.
    pub client_cpus: Option<String>,
    /// wrk's threads: one per client CPU (never more than connections).
    pub client_threads: u32,
    /// Whether this is `--quick`.
    pub quick: bool,
}

impl Plan {
    /// The plan `args` asks for, with the echo plan's CPUs and `--rounds` (default 3); empty
    /// where the filter names only the echo or storage benchmark's scenarios or servers, or
    /// `--no-http`, or `--storage-only`.
    pub fn from_args(args: &BenchArgs, echo: &EchoPlan) -> Plan {
        let mut echo_scenarios: Vec<&str> = super::plan::SCENARIOS.iter().map(|s| s.name).collect();
        let mut dispatch_echos: Vec<&str> = super::plan::SERVERS.iter().map(|s| s.name).collect();
        echo_scenarios.extend(super::storage::names());
        dispatch_echos.extend(super::storage::names());
        let mut scenarios = filtered(&SCENARIOS, &args.filter, |s| s.name, &echo_scenarios);
        let servers = filtered(&SERVERS, &args.filter, |s| s.name, &dispatch_echos);
        if args.no_http || args.storage_only {
            scenarios.clear();
        }
        if echo.quick && scenarios.len() > 1 {
            let quick = scenarios.iter().position(|s| s.name == QUICK_SCENARIO);
            scenarios = vec![scenarios[quick.unwrap_or(0)]];
            eprintln!(
                "bench --quick: the HTTP benchmark runs {} alone, 1 s, no warm-up",
                scenarios[0].name
            );
        }
        Plan {
            scenarios,
            servers,
            rounds: super::plan::rounds(args, super::plan::OTHER_ROUNDS),
            warmup_s: if echo.quick { 0 } else { 1 },
            duration_s: whole_seconds(echo.duration_s),
            server_cpus: echo.server_cpus.clone(),
            client_cpus: echo.client_cpus.clone(),
            client_threads: echo.client_threads,
            quick: echo.quick,
        }
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty() || self.servers.is_empty()
    }

    /// The runs, in order: scenario by scenario, and within one, round by round through every
    /// server (A B C A B C), so that a slow drift of the machine touches every server alike.
    pub fn runs(&self) -> Vec<(Scenario, Server, u32)> {
        let mut runs = Vec::new();
        for &scenario in &self.scenarios {
            for round in 1..=self.rounds {
                for &server in &self.servers {
                    runs.push((scenario, server, round));
                }
            }
        }
        runs
    }
}

/// `seconds` rounded to a whole number wrk takes, at least 1.
fn whole_seconds(seconds: f64) -> u32 {
    seconds.round().clamp(1.0, 600.0) as u32
}

/// Runs the HTTP benchmark: wrk found, builds, runs, reports; returns how many runs failed.
/// Without wrk it says how to install it and runs nothing.
pub fn bench(plan: &Plan) -> Result<usize, String> {
    let Some(wrk) = wrk_version() else {
        // An earlier run's figures must not pass for this run's.
        for file in ["http.md", "http.json"] {
            let _ = std::fs::remove_file(crate::project_root().join("target/bench").join(file));
        }
        eprintln!(
            "bench: wrk not found: the HTTP benchmark is left out and no HTTP figure is \
             printed. Install wrk (Debian and Ubuntu: `sudo apt-get install wrk`; Fedora: \
             `sudo dnf install wrk`; elsewhere: https://github.com/wg/wrk) and run `cargo \
             xtask bench --http-only`"
        );
        return Ok(0);
    };
    let mut left_out = Vec::new();
    let binaries = build(plan, &mut left_out)?;
    let runs = http_run::run_all(plan, &binaries, &mut left_out)?;
    let medians = http_report::medians(plan, &runs);
    http_report::write(plan, &wrk, &runs, &medians, &left_out)?;
    Ok(runs.iter().filter(|run| run.failure.is_some()).count())
}

/// wrk's version line (`wrk 4.2.0 [epoll] ...`), or `None` where wrk is not installed. wrk
/// has no version flag that exits 0: `-v` prints the line and exits 1.
fn wrk_version() -> Option<String> {
    let output = std::process::Command::new("wrk").arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|line| line.starts_with("wrk"))?;
    Some(
        line.split(" Copyright")
            .next()
            .unwrap_or(line)
            .trim()
            .to_owned(),
    )
}

/// Where the servers' binaries are, once built.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `TARGET/release/examples/http`, where it built.
    pub example: Option<PathBuf>,
    /// `TARGET/peers/release/DIR`, for each peer.
    pub peers: Vec<(&'static str, PathBuf)>,
}

/// Builds the HTTP example (release) where the plan runs it, and each peer of the plan in its
/// own workspace. The peers must build; an example that does not (it may not exist yet)
/// leaves the example's servers out, with a line saying so (also added to `left_out`, for the
/// table).
pub fn build(plan: &Plan, left_out: &mut Vec<String>) -> Result<Binaries, String> {
    let mut binaries = Binaries {
        example: None,
        peers: Vec::new(),
    };
    let example = |s: &&Server| matches!(s.kind, ServerKind::Example { .. });
    if plan.servers.iter().any(|s| example(&s)) {
        let args = ["build", "--release", "-p", "examples", "--example", "http"];
        match Cmd::cargo(&args).run() {
            Ok(()) => binaries.example = Some(target_dir().join("release/examples/http")),
            Err(error) => {
                let servers = names(plan.servers.iter().filter(example));
                eprintln!(
                    "bench: the HTTP example does not build here ({error}): {servers} left \
                     out, the HTTP table has {BASELINE} alone. It is `examples`' `http` \
                     example, serving GET /plaintext and /json on `--listen ADDR` \
                     (docs/BENCHMARKS.md)"
                );
                left_out.push(format!(
                    "{servers}: the HTTP example does not build here (`cargo build --release \
                     -p examples --example http`)"
                ));
            }
        }
    }
    for server in &plan.servers {
        if let ServerKind::Peer { dir } = server.kind {
            binaries.peers.push((dir, build_peer(dir)?));
        }
    }
    Ok(binaries)
}

fn names<'a>(servers: impl Iterator<Item = &'a Server>) -> String {
    servers.map(|s| s.name).collect::<Vec<_>>().join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_runs_whole_seconds() {
        assert_eq!(whole_seconds(0.3), 1);
        assert_eq!(whole_seconds(3.0), 3);
        assert_eq!(whole_seconds(2.6), 3);
    }

    #[test]
    fn names_are_unique_across_both_benchmarks() {
        let mut all: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        all.extend(SERVERS.iter().map(|s| s.name));
        all.extend(super::super::plan::SCENARIOS.iter().map(|s| s.name));
        all.extend(super::super::plan::SERVERS.iter().map(|s| s.name));
        all.extend(super::super::storage::names());
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
        assert!(SCENARIOS.iter().any(|s| s.name == QUICK_SCENARIO));
        assert!(SERVERS.iter().any(|s| s.name == BASELINE));
    }
}
