//! `cargo xtask test`: formatting, lints (for Linux and, type-checked, for FreeBSD and macOS),
//! docs, the benchmark harness's smoke test (`cargo xtask bench --quick`), then every test
//! (the simulation fuzzer's few hundred seeds and its planted bug among them:
//! `crates/echo-server/tests/it/sim_fuzz.rs`), and the dispatch-core and dispatch-net suites
//! again under each forced backend and with kernel features blocked or masked. Ends with the
//! tests' results and a note on the checks it leaves to other commands. Installs the rustup
//! components and targets it needs where missing, so it works on a fresh machine.

use crate::cmd::Cmd;
use crate::rustup;

/// Targets whose kqueue code is type-checked and linted here (no machine of either kind).
const CHECK_TARGETS: [&str; 2] = ["x86_64-unknown-freebsd", "aarch64-apple-darwin"];

/// The reruns on Linux, besides the automatic choice (io_uring, or epoll where io_uring is
/// blocked): the dispatch-core and dispatch-net suites under each forced backend; the
/// dispatch-core suite on epoll without `epoll_pwait2` (the test harness blocks the syscall
/// with a seccomp filter), as on the pre-5.11 hosts the epoll fallback exists for; and on
/// io_uring with every optional kernel feature masked (provided-buffer rings, multishot,
/// `EXT_ARG`), so each io_uring fallback runs on this kernel too. The echo-server's suite
/// runs every backend and the masked io_uring itself.
const RERUNS: [Rerun; 6] = [
    (DISPATCH_CORE, &[("DISPATCH_BACKEND", "epoll")]),
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

const DISPATCH_CORE: &[&str] = &["test", "-p", "dispatch-core", "--test", "it"];
const DISPATCH_NET: &[&str] = &["test", "-p", "dispatch-net", "--test", "it"];

/// `cross_targets`: also type-check and lint the kqueue code for FreeBSD and macOS.
pub fn run(cross_targets: bool) -> Result<(), String> {
    prepare(cross_targets)?;
    Cmd::cargo(&["fmt", "--all", "--check"]).run()?;
    let deny_warnings = ["--", "-D", "warnings"];
    Cmd::cargo(&["clippy", "--workspace", "--all-targets"])
        .args(&deny_warnings)
        .run()?;
    let check_targets: &[&str] = if cross_targets { &CHECK_TARGETS } else { &[] };
    for &target in check_targets {
        Cmd::cargo(&["clippy", "--target", target, "--all-targets"])
            .args(&[
                "-p",
                "sys-kqueue",
                "-p",
                "dispatch-core",
                "-p",
                "dispatch-net",
            ])
            .args(&["-p", "echo-server"])
            .args(&deny_warnings)
            .run()?;
    }
    Cmd::cargo(&["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()?;
    // The macro benchmark's harness, briefly: every scenario against echo-server and tokio,
    // every echoed byte checked. It judges no number; only wrong echoes or a server that
    // does not start or stop fail it.
    Cmd::cargo(&["xtask", "bench", "--quick"]).run()?;
    Cmd::cargo(&["test", "--workspace"]).run()?;
    // Last, so that the run's closing lines are the tests' results.
    if cfg!(target_os = "linux") {
        for (args, envs) in RERUNS {
            let mut rerun = Cmd::cargo(args);
            for &(key, value) in envs {
                rerun = rerun.env(key, value);
            }
            rerun.run()?;
        }
    }
    eprintln!(
        "\ncargo xtask test: passed (with 300 seeds of the simulated echo fuzzer, and its \
         planted bug found). More seeds: cargo xtask fuzz --seeds N. Not part of it, because \
         each needs another toolchain (installed on first use):\n  \
         cargo xtask miri      dispatch-core's pure-logic unit tests under Miri (nightly)\n  \
         cargo xtask sanitize  the dispatch-core suite under AddressSanitizer (nightly)\n  \
         cargo xtask msrv      the workspace checked with its rust-version"
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
