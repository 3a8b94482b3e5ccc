//! `cargo xtask test`: formatting, lints (for Linux and, type-checked, for FreeBSD and macOS),
//! docs, each crate alone under each feature combination (`features.rs`), `cargo package` of
//! each published crate (`package.rs`), the benchmark harness's smoke test (`cargo xtask bench
//! --quick`), then every test
//! (the simulation fuzzer's few hundred seeds and its planted bug among them:
//! `crates/echo-server/tests/it/sim_fuzz.rs`), and the dispatch-loop and dispatch-net suites
//! again under each forced backend and with kernel features blocked or masked. Ends with the
//! tests' results, the tests that skipped themselves, and a note on the checks it leaves to
//! other commands. Installs the rustup components and targets it needs where missing, so it
//! works on a fresh machine.
//!
//! A test that cannot run here (a kernel feature missing, a tool not installed, a backend
//! the test does not apply to) prints a `skipped:` line and returns, which libtest counts
//! as a pass. So every test run here is made with `--show-output`, the `skipped:` lines of
//! passing tests are collected, and the run ends by listing each skipped test with its
//! reason and counting them in its last line: a skip is never a silent pass.

use crate::cmd::Cmd;
use crate::rustup;

/// Targets whose kqueue code is type-checked and linted here (no machine of either kind).
const CHECK_TARGETS: [&str; 2] = ["x86_64-unknown-freebsd", "aarch64-apple-darwin"];

/// The reruns on Linux, besides the automatic choice (io_uring, or epoll where io_uring is
/// blocked): the dispatch-loop and dispatch-net suites under each forced backend; the
/// dispatch-loop suite on epoll without `epoll_pwait2` (the test harness blocks the syscall
/// with a seccomp filter), as on the pre-5.11 hosts the epoll fallback exists for; and on
/// io_uring with every optional kernel feature masked (provided-buffer rings, multishot,
/// `EXT_ARG`), so each io_uring fallback runs on this kernel too; and on epoll with file
/// operations inline (`file_workers: 0`; the default runs them on one worker). The
/// echo-server's suite runs every backend and the masked io_uring itself.
const RERUNS: [Rerun; 7] = [
    (DISPATCH_CORE, &[("DISPATCH_BACKEND", "epoll")]),
    (
        DISPATCH_CORE,
        &[
            ("DISPATCH_BACKEND", "epoll"),
            ("DISPATCH_CORE_TEST_FILE_WORKERS", "0"),
        ],
    ),
    (DISPATCH_CORE, &[("DISPATCH_BACKEND", "kqueue-fake")]),
    (
        DISPATCH_CORE,
        &[
            ("DISPATCH_BACKEND", "epoll"),
            ("DISPATCH_CORE_TEST_BLOCK", "epoll_pwait2"),
        ],
    ),
    (
        DISPATCH_CORE,
        &[
            ("DISPATCH_BACKEND", "io_uring"),
            ("DISPATCH_CORE_TEST_MASK", "uring-extras"),
        ],
    ),
    (DISPATCH_NET, &[("DISPATCH_BACKEND", "epoll")]),
    (DISPATCH_NET, &[("DISPATCH_BACKEND", "kqueue-fake")]),
];

/// A rerun: cargo's arguments and the environment it runs with.
type Rerun = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const DISPATCH_CORE: &[&str] = &["test", "-p", "dispatch-loop", "--test", "it"];
/// dispatch-net's suite and its black-box tests (written from the docs alone).
const DISPATCH_NET: &[&str] = &[
    "test",
    "-p",
    "dispatch-net",
    "--test",
    "it",
    "--test",
    "blackbox",
];

/// The packages linted for FreeBSD and macOS: the kqueue code, and the examples (the
/// README's programs must build where the crates do).
const CROSS_CHECKED: [&str; 5] = [
    "sys-kqueue",
    "dispatch-loop",
    "dispatch-net",
    "dispatch-echo",
    "examples",
];

/// `cross_targets`: also type-check and lint the kqueue code for FreeBSD and macOS.
pub fn run(cross_targets: bool) -> Result<(), String> {
    prepare(cross_targets)?;
    // wrk, curl and fio, installed where missing: any still missing is listed with the skipped
    // tests at the end (what needs it skips: `ensure_clients`).
    let clients_missing = ensure_clients();
    Cmd::cargo(&["fmt", "--all", "--check"]).run()?;
    let deny_warnings = ["--", "-D", "warnings"];
    Cmd::cargo(&["clippy", "--workspace", "--all-targets"])
        .args(&deny_warnings)
        .run()?;
    let check_targets: &[&str] = if cross_targets { &CHECK_TARGETS } else { &[] };
    for &target in check_targets {
        Cmd::cargo(&["clippy", "--target", target, "--all-targets"])
            .args(&CROSS_CHECKED.map(|name| ["-p", name]).concat())
            .args(&deny_warnings)
            .run()?;
    }
    Cmd::cargo(&["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()?;
    // Each crate alone under each feature combination, then each published crate packaged and
    // built from its package: what a user of one crate, or of crates.io, gets.
    let members = crate::metadata::members()?;
    crate::features::run(&members)?;
    crate::package::run(&members)?;
    // The macro benchmarks' harness, briefly: every echo scenario against echo-server and
    // tokio, every echoed byte checked, then one HTTP scenario under wrk against the http
    // example and hyper, their answers checked (left out, saying why, without wrk or the
    // example), then one storage scenario, the storage program beside fio on a file on the
    // disk (fio's engines skipped, saying why, without fio). It judges no number; only wrong
    // echoes or answers, a server that does not start or stop, or a storage run that fails,
    // fail it.
    Cmd::cargo(&["xtask", "bench", "--quick"]).run()?;
    let mut skips = Skips::default();
    skips.tools_missing(&clients_missing);
    skips.run(Cmd::cargo(&["test", "--workspace"]), "workspace")?;
    // Last, so that the run's closing lines are the tests' results.
    if cfg!(target_os = "linux") {
        for (args, envs) in RERUNS {
            let mut rerun = Cmd::cargo(args);
            let mut label = args[2].to_owned();
            for &(key, value) in envs {
                rerun = rerun.env(key, value);
                label.push_str(&format!(" {key}={value}"));
            }
            skips.run(rerun, &label)?;
        }
    }
    skips.report();
    eprintln!(
        "\ncargo xtask test: passed, {} (with 300 seeds of the simulated echo fuzzer, and its \
         planted bug found). More seeds: cargo xtask fuzz --seeds N. Not part of it, because \
         each needs another toolchain (installed on first use):\n  \
         cargo xtask miri      dispatch-loop's pure-logic unit tests under Miri (nightly)\n  \
         cargo xtask sanitize  the dispatch-loop suite under AddressSanitizer (nightly)\n  \
         cargo xtask msrv      the workspace checked with its rust-version\n\
         And, because it needs the network, not this either (cargo xtask ci runs it):\n  \
         cargo xtask audit     licences and security advisories (cargo-deny)",
        skips.summary()
    );
    Ok(())
}

/// Installs rustfmt, clippy and the check targets where missing, or says in one line why the
/// cross-target checks cannot run.
fn prepare(cross_targets: bool) -> Result<(), String> {
    if !rustup::available() {
        if cross_targets {
            return Err(format!(
                "rustup not found, so the {} standard libraries cannot be installed for the \
                 cross-target checks: install rustup, or pass --no-cross-targets to leave \
                 them out",
                CHECK_TARGETS.join(" and ")
            ));
        }
        return Ok(());
    }
    rustup::ensure_components(&["rustfmt", "clippy"])?;
    if cross_targets {
        rustup::ensure_targets(&CHECK_TARGETS)?;
    } else {
        eprintln!("xtask: --no-cross-targets: leaving out the FreeBSD and macOS checks");
    }
    Ok(())
}

/// Installs the real clients the HTTP tests and the benchmark's smoke test use (wrk, curl,
/// fio) where missing; without a root apt host it says so and goes on (those parts then skip,
/// saying why). Returns the tools still missing.
fn ensure_clients() -> Vec<&'static str> {
    let missing: Vec<&str> = ["wrk", "curl", "fio"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        return missing;
    }
    let howto = "install them (Debian and Ubuntu package names) to run the HTTP checks and \
                 the storage benchmark's fio side";
    if let Err(error) = crate::kernel_host::install_packages(&missing, howto) {
        eprintln!("xtask: {error}; what needs them will skip");
    }
    missing.into_iter().filter(|tool| !on_path(tool)).collect()
}

/// Whether an executable named `tool` is on `PATH` (`wrk --version` exits 1, so running it
/// does not tell).
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// The tests that skipped themselves, by run: (run, test, first reason).
#[derive(Debug, Default)]
struct Skips {
    found: Vec<(String, String, String)>,
}

impl Skips {
    /// Runs the cargo test command `test` with `--show-output`, showing its output but the
    /// passing tests' own, from which it keeps the `skipped:` lines under `run`'s name.
    fn run(&mut self, test: Cmd, run: &str) -> Result<(), String> {
        let mut parser = Parser::default();
        test.args(&["--", "--show-output"])
            .run_filtered(|line| match parser.line(line) {
                Seen::Show => true,
                Seen::Hide => false,
                Seen::Skip(test, reason) => {
                    let known = self.found.iter().any(|(r, t, _)| r == run && *t == test);
                    if !known {
                        self.found.push((run.to_owned(), test, reason));
                    }
                    false
                }
            })
    }

    /// Counts what skips for want of a tool xtask could not install (`ensure_clients`).
    fn tools_missing(&mut self, tools: &[&str]) {
        for &tool in tools {
            let reason = format!("{tool} is missing and could not be installed");
            let what = match tool {
                "fio" => "the storage benchmark smoke test's fio engines",
                _ => "the HTTP benchmark smoke test and the HTTP example's tests using it",
            };
            let run = "bench --quick, examples".to_owned();
            self.found.push((run, what.to_owned(), reason));
        }
    }

    /// Lists every skipped test with its reason.
    fn report(&self) {
        if self.found.is_empty() {
            return;
        }
        eprintln!("\nxtask: tests that skipped themselves (libtest counts each as passed):");
        for (run, test, reason) in &self.found {
            eprintln!("  [{run}] {test}: {reason}");
        }
    }

    /// "no test skipped", or how many did (listed above).
    fn summary(&self) -> String {
        match self.found.len() {
            0 => "no test skipped".to_owned(),
            n => format!("{n} tests skipped (listed above)"),
        }
    }
}

/// What a line of `cargo test -- --show-output` is.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Show,
    /// The output of a passing test, which `--show-output` adds.
    Hide,
    /// A passing test's `skipped: REASON` line: the test, and the reason.
    Skip(String, String),
}

/// Follows libtest's output: the passing tests' output comes in a `successes:` section, as
/// `---- NAME stdout ----` blocks, before the failures and the result line.
#[derive(Debug, Default)]
struct Parser {
    in_successes: bool,
    test: Option<String>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Seen {
        if line == "successes:" {
            self.in_successes = true;
            return Seen::Hide;
        }
        if line == "failures:" || line.starts_with("test result:") {
            (self.in_successes, self.test) = (false, None);
        }
        if !self.in_successes {
            return Seen::Show;
        }
        if let Some(name) = line.strip_prefix("---- ") {
            self.test = name.strip_suffix(" stdout ----").map(str::to_owned);
        } else if let (Some(test), Some(reason)) = (&self.test, line.strip_prefix("skipped: ")) {
            return Seen::Skip(test.clone(), reason.to_owned());
        }
        Seen::Hide
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A passing test's skip is found and its output hidden; a failing test's output and the
    /// result lines are shown.
    #[test]
    fn skips_of_passing_tests_are_found_and_their_output_hidden() {
        let output = [
            "running 2 tests",
            "test a::works ... ok",
            "test a::skips ... ok",
            "",
            "successes:",
            "",
            "---- a::skips stdout ----",
            "skipped: no unprivileged time namespaces here",
            "skipped: no unprivileged time namespaces here",
            "",
            "---- a::works stdout ----",
            "some output",
            "",
            "successes:",
            "    a::skips",
            "failures:",
            "---- a::fails stdout ----",
            "skipped: shown, since the test failed",
            "test result: FAILED. 2 passed; 1 failed",
        ];
        let mut parser = Parser::default();
        let seen: Vec<Seen> = output.iter().map(|line| parser.line(line)).collect();
        let skips: Vec<&Seen> = seen
            .iter()
            .filter(|s| matches!(s, Seen::Skip(..)))
            .collect();
        assert_eq!(
            skips,
            [&Seen::Skip(
                "a::skips".into(),
                "no unprivileged time namespaces here".into()
            ); 2]
        );
        let shown: Vec<&str> = output
            .iter()
            .zip(&seen)
            .filter(|(_, seen)| **seen == Seen::Show)
            .map(|(line, _)| *line)
            .collect();
        assert_eq!(
            shown,
            [
                "running 2 tests",
                "test a::works ... ok",
                "test a::skips ... ok",
                "",
                "failures:",
                "---- a::fails stdout ----",
                "skipped: shown, since the test failed",
                "test result: FAILED. 2 passed; 1 failed",
            ]
        );
    }
}
