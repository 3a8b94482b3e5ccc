//! `cargo xtask`: the one place the project's shell commands live, so that CI and a newcomer
//! run exactly the same steps. `cargo xtask --help` lists the subcommands; every command a
//! subcommand runs is echoed as a line that reproduces it.
//!
//! - `cargo xtask test`      fmt check, clippy `-D warnings`, docs `-D warnings`, every crate
//!   with each feature combination, `cargo package`, every test, the dispatch-loop suite again
//!   on each forced backend
//! - `cargo xtask ci`        what `.ci/run` calls: `test`, `audit`, then `kernel-test --kernel
//!   all`
//! - `cargo xtask audit`     cargo-deny: licences, security advisories, bans and sources for
//!   the product (failing) and each benchmark peer (reported)
//! - `cargo xtask bench`     criterion micro benchmarks, then echo servers under loadgen, then
//!   HTTP servers under wrk (`--quick`: a smoke test of the macro harness)
//! - `cargo xtask miri`      dispatch-loop's pure-logic unit tests under Miri (nightly)
//! - `cargo xtask sanitize`  the dispatch-loop suite under AddressSanitizer (nightly);
//!   `--thread`: its cross-thread tests under ThreadSanitizer
//! - `cargo xtask msrv`      the workspace type-checked with its `rust-version`
//! - `cargo xtask fuzz`      the seeded simulation fuzzers: `--seeds N`, or `--seed N` to
//!   replay one
//! - `cargo xtask kernel-test`  the suites on Linux 5.10, 6.1 and 6.12 under QEMU
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod cmd;
mod deps;
mod features;
mod fuzz;
mod kernel_host;
mod kernel_report;
mod kernel_test;
mod kernel_vm;
mod metadata;
mod miri;
mod msrv;
mod package;
mod rustup;
mod sanitize;
mod test;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

/// The project's commands
///
/// Each echoes every command it runs (`$ ...`) as a line that reproduces that step when pasted
/// in the workspace root.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// fmt, clippy, docs, feature combinations, cargo package, then every test on every backend
    ///
    /// In order: `cargo fmt --check`; clippy -D warnings for the host and, type-checking only,
    /// for FreeBSD and macOS (sys-kqueue and dispatch-loop); `cargo doc` with -D warnings;
    /// each crate alone with its default features, none, each feature alone and all of them
    /// (clippy -D warnings); `cargo package` of every published crate, each built from its
    /// package; `cargo xtask bench --quick` (the benchmark harness, briefly; judges no number);
    /// `cargo test --workspace`; on Linux the dispatch-loop suite again with
    /// DISPATCH_BACKEND=epoll, with kqueue-fake, and with epoll where the harness blocks
    /// epoll_pwait2. Installs the rustup components and targets it needs where missing. Miri,
    /// the sanitizer and the MSRV check are separate commands: each needs another toolchain.
    Test(TestArgs),
    /// `test`, `audit`, then `kernel-test --kernel all` on Linux: what `.ci/run` runs
    ///
    /// Every check of `test`, the dependency audit, then dispatch-loop's, dispatch-net's, the
    /// examples' and echo-server's suites on Linux 5.10, 6.1 and 6.12 under QEMU (about 11
    /// minutes on two cores; `--no-kernels` leaves them out, as CI's macOS and FreeBSD jobs
    /// must).
    Ci(CiArgs),
    /// The dependency graph against deny.toml (cargo-deny): licences, advisories, bans, sources
    ///
    /// The product workspace's findings fail; each benchmark peer in bench/peers is checked
    /// with the same policy and only reported. Installs cargo-deny (a pinned version) where
    /// missing and fetches RustSec's advisory database from GitHub; where that cannot be
    /// fetched the copy fetched before is used (refused past 90 days), and without one the
    /// advisories are not checked, which the closing lines say.
    Audit(AuditArgs),
    /// Micro benchmarks (criterion), then echo servers under the project's load generator,
    /// then HTTP servers under wrk
    ///
    /// Micro: dispatch-loop on io_uring (two ring set-ups) and on epoll against the raw
    /// io-uring crate, timer lateness and cross-thread wake-up latency. Macro: loadgen against
    /// echo-server (io_uring, epoll) and the tokio, monoio and compio peers, interleaved over
    /// rounds, medians; a markdown table on stdout, JSON and an SVG chart under target/bench/.
    /// HTTP: wrk (GET /plaintext, 100 and 1,000 keep-alive connections, without and with 16
    /// requests pipelined) against the `http` example of `examples` on io_uring and epoll and
    /// against a hyper server, interleaved, medians: requests/s, server CPU per request, p99,
    /// peak RSS and each ratio to hyper with a verdict; a table on stdout, target/bench/http.*.
    /// Without wrk (`apt-get install wrk`) the HTTP benchmark says so and is left out.
    /// docs/BENCHMARKS.md says what each number means. Benchmarks report; they never pass or
    /// fail, except that a run with wrong echoes or answers is FAILED.
    Bench(bench::BenchArgs),
    /// dispatch-loop's pure-logic unit tests under Miri (nightly)
    ///
    /// Runs every unit test of dispatch-loop under Miri, with Stacked Borrows and then Tree
    /// Borrows, except those that need real syscalls (named, each with its reason, in
    /// xtask/src/miri.rs). Installs nightly with miri and rust-src if missing.
    Miri,
    /// The dispatch-loop suite under AddressSanitizer on every backend (nightly)
    ///
    /// Runs `cargo test -p dispatch-loop --test it` with -Zsanitizer=address and a sanitized
    /// std (-Zbuild-std), once per backend: auto, epoll, kqueue-fake. Linux only; installs
    /// nightly with rust-src if missing. `--thread`: the tests where another thread wakes or
    /// stops the loop, under -Zsanitizer=thread instead, once per backend.
    Sanitize(SanitizeArgs),
    /// Checks the workspace with the oldest Rust it claims to support (rust-version)
    ///
    /// `cargo check --workspace --all-targets` with the toolchain named by `rust-version` in
    /// Cargo.toml, installed if missing.
    Msrv,
    /// The seeded simulation fuzzers (release build): many seeds, or one replayed
    ///
    /// `--seeds N` runs N seeds (from --start, else from a seed picked from the time) on
    /// every core and prints seeds per minute and virtual time per second; `--seed N` replays
    /// one, printing its trace hash. A failing seed prints the command that replays it.
    Fuzz(FuzzArgs),
    /// The test suites on Linux 5.10, 6.1 and 6.12 (Debian's cloud kernels) under QEMU
    ///
    /// Installs what it needs where missing (qemu-system-x86 and busybox-static with apt, the
    /// x86_64-unknown-linux-musl target with rustup), fetches each kernel once into
    /// target/kernel-test/kernels/ (a private apt configuration; nothing is installed on the
    /// host's boot), builds the suites statically, and boots each kernel once: the probe,
    /// sys-uring's tests, dispatch-loop's suite (automatic, io_uring, epoll, io_uring with its
    /// extras masked), dispatch-net's, the examples' and echo-server's. Prints one table and
    /// fails on any failed, hung or mostly skipped run, a missing result or a guest panic.
    KernelTest(KernelTestArgs),
}

#[derive(Debug, Args)]
struct KernelTestArgs {
    /// Which kernel: 5.10, 6.1, 6.12 or all
    #[arg(long, default_value = "all")]
    kernel: String,
    /// Also write the probe's table to docs/KERNELS.md
    #[arg(long)]
    write_docs: bool,
    /// Build the binaries with --release (the default debug build runs the whole matrix
    /// within its time)
    #[arg(long)]
    release: bool,
    /// Ask apt for newer kernel packages even where a kernel is cached
    #[arg(long)]
    update_kernels: bool,
    /// QEMU's accelerator: auto (KVM on an Intel or AMD KVM host, else tcg), tcg or kvm
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Every binary run's limit in the guest, in seconds (default: each run's own, about four
    /// times what it takes); past it the run is killed as hung
    #[arg(long)]
    run_limit: Option<u64>,
    /// Only this run (repeatable): sys-uring, core:auto, core:io_uring, core:epoll,
    /// core:uring-extras, net:auto, net:epoll, examples, echo_minimal, echo-server
    #[arg(long = "run", value_name = "RUN")]
    runs: Vec<String>,
    /// Each run this many times in the one VM (how often does a flaky test fail?)
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// A variable for every run in the guest, KEY=VALUE (repeatable; RUST_BACKTRACE=1)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    envs: Vec<String>,
    /// Arguments for every libtest run, after `--` (a test name, `--exact`)
    #[arg(last = true)]
    test_args: Vec<String>,
}

#[derive(Debug, Args)]
struct SanitizeArgs {
    /// ThreadSanitizer on the cross-thread tests instead of AddressSanitizer on the suite
    #[arg(long)]
    thread: bool,
}

#[derive(Debug, Args)]
struct FuzzArgs {
    /// Replay this seed
    #[arg(long, conflicts_with_all = ["seeds", "start"])]
    seed: Option<u64>,
    /// How many seeds to run
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed (default: picked from the time, and printed)
    #[arg(long)]
    start: Option<u64>,
    /// Simulated operations per seed (echo: 10,000 by default; wal: appends, 1,000; udp:
    /// requests, 2,000)
    #[arg(long)]
    ops: Option<u64>,
    /// Turn on the planted bug (echo: a byte dropped on a rare short read; wal: a group
    /// acknowledged before its fdatasync; udp: clients that take any datagram from the server
    /// as the response), to see it found
    #[arg(long)]
    planted_bug: bool,
    /// Which fuzzer: echo, wal, udp, or all, the default (the table is in xtask/src/fuzz.rs)
    #[arg(long, default_value = "all")]
    fuzzer: String,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Leave out the FreeBSD and macOS type-checks: for a host without rustup, which cannot
    /// install their standard libraries (FreeBSD's packaged Rust)
    #[arg(long)]
    no_cross_targets: bool,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Fetch nothing: use the installed cargo-deny, the advisory database fetched before and
    /// the crates already downloaded
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
struct CiArgs {
    #[command(flatten)]
    test: TestArgs,
    /// Leave out the kernel matrix (Linux 5.10, 6.1 and 6.12 under QEMU)
    #[arg(long)]
    no_kernels: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.kind() == ErrorKind::InvalidSubcommand => {
            // clap says "unrecognized"; the tip naming a close match stays.
            let message = error.render().to_string();
            eprint!(
                "{}",
                message.replacen("unrecognized subcommand", "unknown subcommand", 1)
            );
            return ExitCode::from(2);
        }
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Test(args) => test::run(!args.no_cross_targets),
        Command::Ci(args) => ci(&args),
        Command::Audit(args) => audit::run(args.offline),
        Command::Bench(args) => bench::run(&args),
        Command::Miri => miri::run(),
        Command::Sanitize(args) => sanitize::run(args.thread),
        Command::Msrv => msrv::run(),
        Command::Fuzz(args) => fuzz::run(&fuzz::Plan {
            fuzzer: &args.fuzzer,
            seed: args.seed,
            seeds: args.seeds,
            start: args.start,
            ops: args.ops,
            planted_bug: args.planted_bug,
        }),
        Command::KernelTest(args) => kernel_test::run_plan(&kernel_test::Plan {
            kernel: args.kernel,
            release: args.release,
            write_docs: args.write_docs,
            update_kernels: args.update_kernels,
            accel: args.accel,
            run_limit_s: args.run_limit,
            runs: args.runs,
            repeat: args.repeat,
            test_args: args.test_args,
            envs: args.envs,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask ci`: the tests, the dependency audit, then on Linux every kernel of the
/// matrix.
fn ci(args: &CiArgs) -> Result<(), String> {
    test::run(!args.test.no_cross_targets)?;
    audit::run(false)?;
    if args.no_kernels || !cfg!(target_os = "linux") {
        eprintln!("xtask: ci: leaving out the kernel matrix");
        return Ok(());
    }
    kernel_test::run_plan(&kernel_test::Plan {
        kernel: "all".into(),
        release: false,
        write_docs: false,
        update_kernels: false,
        accel: "auto".into(),
        run_limit_s: None,
        runs: Vec::new(),
        repeat: 1,
        test_args: Vec::new(),
        envs: Vec::new(),
    })
}

/// Cargo's home (`$CARGO_HOME`, else `~/.cargo`), where it keeps its registry caches and
/// cargo-deny its advisory databases; `None` without either variable.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn bench_args(args: &[&str]) -> super::bench::BenchArgs {
        let cli = Cli::try_parse_from(["cargo xtask", "bench"].iter().chain(args)).unwrap();
        let Command::Bench(bench_args) = cli.command else {
            panic!("{args:?} parsed as {:?}", cli.command)
        };
        bench_args
    }

    #[test]
    fn bench_passes_what_follows_a_double_dash_to_criterion() {
        assert_eq!(bench_args(&["--", "sendrecv"]).criterion_args, ["sendrecv"]);
        assert_eq!(
            bench_args(&["--", "--warm-up-time", "2"]).criterion_args,
            ["--warm-up-time", "2"]
        );
        let quick = bench_args(&["--quick", "--filter", "d16,tokio"]);
        assert!(quick.quick);
        assert_eq!(quick.filter, ["d16", "tokio"]);
        assert!(quick.criterion_args.is_empty());
        let refused = |args: &[&str]| {
            Cli::try_parse_from(["cargo xtask", "bench"].iter().chain(args)).is_err()
        };
        assert!(refused(&["--macro-only", "--", "nop"]));
        assert!(refused(&["--filter", "tokio", "--", "nop"]));
        assert!(refused(&["--micro-only", "--quick"]));
        assert!(refused(&["--http-only", "--no-http"]));
        assert!(refused(&["--http-only", "--", "nop"]));
        assert!(bench_args(&["--http-only", "--quick"]).http_only);
    }
}
