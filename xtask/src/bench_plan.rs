//! What the macro benchmark runs: the scenarios, the servers, the CPUs each side is pinned
//! to, the rounds and the timing; and the build of every binary it runs (release, the peers
//! in workspaces of their own so that no product crate ever depends on them).

use std::path::PathBuf;

use super::{http, storage, BenchArgs};
use crate::cmd::Cmd;
use crate::project_root;

/// One load: what the generator does.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// Long-lived connections (0 under churn).
    pub connections: u32,
    /// Bytes per message.
    pub size: u32,
    /// Messages in flight per connection.
    pub depth: u32,
    /// Connect, one message, close, again: the rate counts connections.
    pub churn: bool,
    /// Datagrams: each connection is a connected UDP socket (`loadgen --udp`), each message
    /// a datagram; run only by the servers that serve UDP (`Server::serves`).
    pub udp: bool,
}

/// The scenarios of issue 10, then issue 21's UDP echo, in the order they run.
pub const SCENARIOS: [Scenario; 6] = [
    scenario("c100-64B-d1", 100, 64, 1),
    scenario("c100-64B-d16", 100, 64, 16),
    scenario("c1000-64B-d1", 1000, 64, 1),
    scenario("c100-16KiB-d1", 100, 16 * 1024, 1),
    Scenario {
        name: "churn-64B",
        connections: 0,
        size: 64,
        depth: 1,
        churn: true,
        udp: false,
    },
    Scenario {
        name: "udp-64B",
        connections: 100,
        size: 64,
        depth: 1,
        churn: false,
        udp: true,
    },
];

const fn scenario(name: &'static str, connections: u32, size: u32, depth: u32) -> Scenario {
    Scenario {
        name,
        connections,
        size,
        depth,
        churn: false,
        udp: false,
    }
}

/// How a server is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// `echo-server --backend BACKEND --threads 1`, then `args`; with `udp`, it also runs
    /// the UDP scenarios, as `echo-server --udp` (where its `--help` lists `--udp`).
    Own {
        backend: &'static str,
        args: &'static [&'static str],
        udp: bool,
    },
    /// A peer in `bench/peers/DIR`, whose binary is named DIR and takes the address; for the
    /// UDP scenarios, the peer in `bench/peers/UDP_DIR` (none: it runs no UDP scenario).
    Peer {
        dir: &'static str,
        udp_dir: Option<&'static str>,
        quick: bool,
    },
}

/// A server measured.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// How to start it.
    pub kind: ServerKind,
}

impl Server {
    /// Whether it runs `scenario`: every server runs the TCP scenarios; the UDP ones, those
    /// with a UDP form (echo-server on io_uring and epoll, tokio through its UDP peer).
    pub fn serves(&self, scenario: &Scenario) -> bool {
        match self.kind {
            _ if !scenario.udp => true,
            ServerKind::Own { udp, .. } => udp,
            ServerKind::Peer { udp_dir, .. } => udp_dir.is_some(),
        }
    }

    /// The peer directory it runs `scenario` with; none for echo-server.
    pub fn peer_dir(&self, scenario: &Scenario) -> Option<&'static str> {
        match self.kind {
            ServerKind::Own { .. } => None,
            ServerKind::Peer { udp_dir, .. } if scenario.udp => udp_dir,
            ServerKind::Peer { dir, .. } => Some(dir),
        }
    }
}

/// Every server, in the order each round runs them. Peers are single-threaded, so the echo
/// server runs one thread too unless `--server-threads` says otherwise.
pub const SERVERS: [Server; 6] = [
    own("echo-uring", "io-uring", &[], true),
    // Without its batch wait (on by default: 50 µs), to show what that does (TCP only).
    own(
        "echo-uring-nobatch",
        "io-uring",
        &["--batch-wait-us=0"],
        false,
    ),
    own("echo-epoll", "epoll", &[], true),
    peer("tokio", "tokio-echo", Some("tokio-udp-echo"), true),
    peer("monoio", "monoio-echo", None, false),
    peer("compio", "compio-echo", None, false),
];

const fn own(
    name: &'static str,
    backend: &'static str,
    args: &'static [&'static str],
    udp: bool,
) -> Server {
    Server {
        name,
        kind: ServerKind::Own { backend, args, udp },
    }
}

const fn peer(
    name: &'static str,
    dir: &'static str,
    udp_dir: Option<&'static str>,
    quick: bool,
) -> Server {
    Server {
        name,
        kind: ServerKind::Peer {
            dir,
            udp_dir,
            quick,
        },
    }
}

/// A (scenario, server) of the plan that cannot run here for a known reason: its rows say
/// `n/a: WHY` instead of a number, and no run of it is attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    pub scenario: &'static str,
    pub server: &'static str,
    pub why: &'static str,
}

/// Why echo-server's UDP rows are n/a while its `--help` lists no `--udp`.
pub const NO_UDP: &str = "echo-server has no --udp yet";

/// The echo benchmark's rounds by default: with 8, the median of the paired ratios has a
/// confidence interval of 93% from the 2nd to the 7th (see `bench_paired.rs`); with 3, no
/// interval reaches 90% and every verdict is undecided.
pub const ECHO_ROUNDS: u32 = 8;

/// The HTTP and storage benchmarks' rounds by default: they judge medians, not pairs.
pub const OTHER_ROUNDS: u32 = 3;

/// `--rounds`, else 1 with `--quick`, else `default`; from 1 to 100.
pub fn rounds(args: &BenchArgs, default: u32) -> u32 {
    let quick_or_default = if args.quick { 1 } else { default };
    args.rounds.unwrap_or(quick_or_default).clamp(1, 100)
}

/// Everything a macro benchmark run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenarios run, in order.
    pub scenarios: Vec<Scenario>,
    /// The servers run in each scenario, in order.
    pub servers: Vec<Server>,
    /// Rounds; each runs every (scenario, server) once.
    pub rounds: u32,
    /// Seconds of traffic before the window opens.
    pub warmup_s: f64,
    /// Seconds in the measured window.
    pub duration_s: f64,
    /// Seconds of the second window in which `perf` counts the server's syscalls.
    pub syscall_window_s: f64,
    /// taskset CPU lists (`None`: not pinned).
    pub server_cpus: Option<String>,
    /// The generator's CPUs.
    pub client_cpus: Option<String>,
    /// Generator threads: one per client CPU.
    pub client_threads: u32,
    /// echo-server's `--threads` (the peers always run one).
    pub server_threads: u32,
    /// Whether this is `--quick`.
    pub quick: bool,
    /// The (scenario, server) pairs that cannot run here, known once the binaries are built
    /// (`absent`); none before.
    pub absent: Vec<Absent>,
}

impl Plan {
    /// The plan `args` asks for; says which peers `--quick` leaves out. Its scenarios or its
    /// servers are none where the filter names only the HTTP or storage benchmark's, or
    /// `--http-only`, or `--storage-only`.
    pub fn from_args(args: &BenchArgs) -> Result<Plan, String> {
        // The other benchmarks' names: a filter naming only those leaves this one out.
        let mut other_scenarios: Vec<&str> = http::SCENARIOS.iter().map(|s| s.name).collect();
        let mut other_servers: Vec<&str> = http::SERVERS.iter().map(|s| s.name).collect();
        other_scenarios.extend(storage::names());
        other_servers.extend(storage::names());
        let mut scenarios = filtered(&SCENARIOS, &args.filter, |s| s.name, &other_scenarios);
        let mut servers = filtered(&SERVERS, &args.filter, |s| s.name, &other_servers);
        if args.http_only || args.storage_only {
            scenarios.clear();
        }
        if args.quick && !scenarios.is_empty() {
            servers.retain(|server| match server.kind {
                ServerKind::Peer {
                    quick: false, dir, ..
                } => {
                    eprintln!(
                        "bench --quick: {} left out (a build from scratch takes a minute on \
                         2 cores; the full run measures it)",
                        dir
                    );
                    false
                }
                _ => true,
            });
        }
        let (server_cpus, client_cpus) = cpus(args)?;
        let client_threads = client_cpus.as_deref().map_or(Ok(1), count_cpus)?;
        let quick = args.quick;
        let duration_s = args.duration.unwrap_or(if quick { 0.3 } else { 3.0 });
        if !(duration_s > 0.0 && duration_s < 600.0) {
            return Err("--duration must be between 0 and 600 seconds".into());
        }
        Ok(Plan {
            scenarios,
            servers,
            rounds: rounds(args, ECHO_ROUNDS),
            warmup_s: if quick { 0.1 } else { 1.0 },
            duration_s,
            syscall_window_s: if quick { 0.1 } else { 1.0 },
            server_cpus,
            client_cpus,
            client_threads,
            server_threads: args.server_threads.clamp(1, 1024),
            quick,
            absent: Vec::new(),
        })
    }

    /// Whether there is nothing to run (the filter or `--http-only` left the echo benchmark
    /// out).
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty() || self.servers.is_empty()
    }

    /// The runs, in order: scenario by scenario, and within one, round by round through every
    /// server that serves it and is not absent (A B C A B C), so that a slow drift of the
    /// machine touches every server alike.
    pub fn runs(&self) -> Vec<(Scenario, Server, u32)> {
        let mut runs = Vec::new();
        for &scenario in &self.scenarios {
            for round in 1..=self.rounds {
                for &server in &self.servers {
                    if self.serves(&scenario, &server) {
                        runs.push((scenario, server, round));
                    }
                }
            }
        }
        runs
    }

    /// Whether `server` runs `scenario` in this plan: it serves it and is not absent.
    pub fn serves(&self, scenario: &Scenario, server: &Server) -> bool {
        server.serves(scenario) && self.absent_why(scenario.name, server.name).is_none()
    }

    /// Why `server` cannot run `scenario` here, if it cannot.
    pub fn absent_why(&self, scenario: &str, server: &str) -> Option<&'static str> {
        let absent = self.absent.iter();
        absent
            .filter(|a| a.scenario == scenario && a.server == server)
            .map(|a| a.why)
            .next()
    }

    /// The peer directories the runs need, each once, in order.
    pub fn peer_dirs(&self) -> Vec<&'static str> {
        let mut dirs = Vec::new();
        for &scenario in &self.scenarios {
            for server in self.servers.iter().filter(|s| s.serves(&scenario)) {
                if let Some(dir) = server.peer_dir(&scenario) {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        dirs
    }
}

/// The pairs of `plan` that cannot run with `binaries`: echo-server's UDP scenarios while
/// its `--help` lists no `--udp` (issue 21: the option comes with dispatch-net's UDP helper).
pub fn absent(plan: &Plan, binaries: &Binaries) -> Vec<Absent> {
    let mut out = Vec::new();
    for scenario in plan.scenarios.iter().filter(|s| s.udp) {
        for server in &plan.servers {
            let own = matches!(server.kind, ServerKind::Own { .. });
            if own && server.serves(scenario) && !binaries.echo_udp {
                out.push(Absent {
                    scenario: scenario.name,
                    server: server.name,
                    why: NO_UDP,
                });
            }
        }
    }
    out
}

/// The items whose name contains a word of `filter`; all of them where no word names any item
/// nor any of `others` (the other benchmark's scenarios, or servers): `--filter d16` runs no
/// HTTP scenario, `--filter hyper` no echo server.
pub fn filtered<T: Copy>(
    all: &[T],
    filter: &[String],
    name: fn(&T) -> &str,
    others: &[&str],
) -> Vec<T> {
    let hit = |text: &str| filter.iter().any(|word| text.contains(word.as_str()));
    if all.iter().any(|item| hit(name(item))) || others.iter().any(|other| hit(other)) {
        all.iter().copied().filter(|item| hit(name(item))).collect()
    } else {
        all.to_vec()
    }
}

/// Every name of `all`, comma-separated.
pub fn names<T>(all: &[T], name: fn(&T) -> &str) -> String {
    all.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// The server's and the generator's CPU lists: as given, or CPU 0 for the server and the
/// rest for the generator; unpinned on a one-CPU machine or without `taskset`.
fn cpus(args: &BenchArgs) -> Result<(Option<String>, Option<String>), String> {
    for list in [&args.server_cpus, &args.client_cpus].into_iter().flatten() {
        count_cpus(list)?;
    }
    if Cmd::new("taskset", &["-V"]).query().is_none() {
        eprintln!("bench: taskset not found: server and generator run unpinned");
        return Ok((None, None));
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_server = (n > 1).then(|| "0".to_owned());
    let default_client = (n > 1).then(|| format!("1-{}", n - 1));
    Ok((
        args.server_cpus.clone().or(default_server),
        args.client_cpus.clone().or(default_client),
    ))
}

/// How many CPUs a taskset list (`0`, `1-3`, `0,2-3`) names.
pub fn count_cpus(list: &str) -> Result<u32, String> {
    let bad = || format!("{list:?}: not a CPU list like 0, 1-3 or 0,2-3");
    let mut count = 0;
    for part in list.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        count += last - first + 1;
    }
    Ok(count)
}

/// Where the binaries are, once built.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `TARGET/release/echo-server` (TARGET: `target_dir()`).
    pub dispatch_echo: PathBuf,
    /// `TARGET/release/loadgen`.
    pub loadgen: PathBuf,
    /// `TARGET/peers/release/DIR`, for each peer that built.
    pub peers: Vec<(&'static str, PathBuf)>,
    /// Whether `echo-server --help` lists `--udp`.
    pub echo_udp: bool,
}

/// Cargo's target directory: `CARGO_TARGET_DIR` where set (relative to the workspace root,
/// as cargo takes it), else `target/`. The built binaries are looked for there.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => project_root().join(dir),
        _ => project_root().join("target"),
    }
}

/// Builds the peer in `bench/peers/DIR` (release) in its own workspace, with
/// `CARGO_TARGET_DIR=TARGET/peers`; returns its binary.
pub fn build_peer(dir: &str) -> Result<PathBuf, String> {
    let manifest = format!("bench/peers/{dir}/Cargo.toml");
    let peers_dir = target_dir().join("peers");
    Cmd::cargo(&["build", "--release", "--manifest-path", &manifest])
        .env("CARGO_TARGET_DIR", &peers_dir.to_string_lossy())
        .run()?;
    Ok(peers_dir.join("release").join(dir))
}

/// Builds echo-server and loadgen (release), and each peer the plan's runs need in its own
/// workspace with `CARGO_TARGET_DIR=TARGET/peers`. tokio (TCP and UDP) must build; another
/// peer that does not is left out of the run with a line saying so. Asks echo-server's
/// `--help` whether it has `--udp`.
pub fn build(plan: &Plan) -> Result<Binaries, String> {
    Cmd::cargo(&["build", "--release", "-p", "dispatch-echo", "-p", "loadgen"]).run()?;
    let target = target_dir();
    let mut peers = Vec::new();
    for dir in plan.peer_dirs() {
        match build_peer(dir) {
            Ok(binary) => peers.push((dir, binary)),
            Err(error) if BASELINE_DIRS.contains(&dir) => return Err(error),
            Err(error) => eprintln!("bench: {} left out: it does not build here: {error}", dir),
        }
    }
    let dispatch_echo = target.join("release/echo-server");
    let help = Cmd::new(&dispatch_echo.to_string_lossy(), &["--help"]).query();
    let echo_udp = help.as_deref().is_some_and(lists_udp);
    if !echo_udp && plan.scenarios.iter().any(|s| s.udp) {
        eprintln!("bench: echo-server's UDP rows are n/a: {NO_UDP}");
    }
    Ok(Binaries {
        dispatch_echo,
        loadgen: target.join("release/loadgen"),
        peers,
        echo_udp,
    })
}

/// The baseline's peers: the bench cannot go on without them.
const BASELINE_DIRS: [&str; 2] = ["tokio-echo", "tokio-udp-echo"];

/// Whether a `--help` text lists a `--udp` option (as an option, not a word in prose).
pub fn lists_udp(help: &str) -> bool {
    help.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("--udp") && !line.starts_with("--udp-")
            || line.starts_with('-') && line.contains(", --udp") && !line.contains(", --udp-")
    })
}

#[cfg(test)]
#[path = "bench_plan_tests.rs"]
mod tests;
