//! `cargo xtask miri`: dispatch-loop's unit tests under Miri, the interpreter that checks
//! unsafe code for undefined behaviour (aliasing under Stacked and under Tree Borrows,
//! out-of-bounds and dangling accesses, uninitialised reads, leaks).
//!
//! Miri emulates only a few syscalls, so the unit tests that make real ones (rings, pollers,
//! sockets) cannot run under it. They are named in [`SKIP`], each with its reason: a skip
//! list rather than a list of the tests to run, so that a new pure-logic test (slot table,
//! queues, descriptor table, timer heap, result conversions) runs under Miri without anyone
//! remembering to add it. A new test that needs syscalls fails here until it joins the list.

use crate::cmd::Cmd;
use crate::rustup;

/// The unit tests Miri cannot run, by full path, and why.
const SKIP: &[(&str, &str)] = &[
    (
        "backend::readiness::tests::a_refused_registration_fails_its_waiters",
        "the kevent double waits with ppoll(2) on a Unix socket pair: real syscalls",
    ),
    (
        "backend::io_uring::tests::the_wait_timeout_timespec_does_not_move_with_the_backend",
        "sets up an io_uring: io_uring_setup(2)",
    ),
    (
        "backend::io_uring::tests::the_backend_keeps_the_pool_memory_its_ring_names",
        "sets up an io_uring and registers a provided-buffer ring",
    ),
    (
        "backend::io_uring::tests::a_refused_set_up_flag_is_given_up_not_io_uring",
        "sets up the io_uring that the refusing kernel finally accepts",
    ),
    (
        "backend::io_uring::tests::only_the_refused_flag_is_given_up",
        "sets up the io_uring that the refusing kernel finally accepts",
    ),
];

/// The aliasing models Miri checks the tests under: `MIRIFLAGS` for each run.
const MODELS: [(&str, &str); 2] = [
    ("Stacked Borrows", ""),
    ("Tree Borrows", "-Zmiri-tree-borrows"),
];

pub fn run() -> Result<(), String> {
    rustup::ensure_toolchain("nightly", &["miri", "rust-src"])?;
    let miri_test = ["+nightly", "miri", "test", "-p", "dispatch-loop", "--lib"];
    let listed = Cmd::cargo(&miri_test)
        .args(&["--", "--list", "--format", "terse"])
        .run_for_output()?;
    let tests: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .collect();
    let stale: Vec<&str> = SKIP
        .iter()
        .map(|&(name, _)| name)
        .filter(|name| !tests.contains(name))
        .collect();
    if !stale.is_empty() {
        return Err(format!(
            "xtask/src/miri.rs skips tests that no longer exist: {}; remove or rename them",
            stale.join(", ")
        ));
    }
    eprintln!(
        "xtask: Miri runs {} of dispatch-loop's {} unit tests; skipped, needing real syscalls:",
        tests.len() - SKIP.len(),
        tests.len()
    );
    for (name, reason) in SKIP {
        eprintln!("  {name}: {reason}");
    }
    let mut skips = vec!["--", "--exact"];
    for (name, _) in SKIP {
        skips.extend(["--skip", name]);
    }
    for (model, flags) in MODELS {
        eprintln!("xtask: Miri under {model}");
        let mut run = Cmd::cargo(&miri_test).args(&skips);
        if !flags.is_empty() {
            run = run.env("MIRIFLAGS", flags);
        }
        run.run()?;
    }
    Ok(())
}
