//! `cargo xtask sanitize`: the dispatch-loop suite under AddressSanitizer (with its leak
//! checker), once per backend, so that a use-after-free, an overflow or a leak in the loop's
//! unsafe code fails a test run instead of corrupting memory silently; with `--thread`, the
//! tests that cross threads (the waker, a stop from another thread) under ThreadSanitizer,
//! once per backend, so that a data race there fails too. The standard library is rebuilt
//! with the sanitizer (`-Zbuild-std`), so its allocations and atomics are checked as well.
//! Needs nightly with rust-src (installed if missing) and Linux.

use crate::cmd::Cmd;
use crate::rustup;

/// Every backend the suite can run on under Linux.
const BACKENDS: [&str; 3] = ["auto", "epoll", "kqueue-fake"];

/// The tests ThreadSanitizer runs (libtest name filters): those where another thread wakes
/// or stops the loop. The rest of the suite is single-threaded, and ThreadSanitizer cannot
/// see the kernel's side of the rings, which AddressSanitizer covers.
const THREAD_TESTS: [&str; 2] = ["wakeup::", "stop_from_another_thread"];

/// `thread`: ThreadSanitizer on the cross-thread tests instead of AddressSanitizer on all.
pub fn run(thread: bool) -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("cargo xtask sanitize runs on Linux only (its backends are Linux's)".into());
    }
    rustup::ensure_toolchain("nightly", &["rust-src"])?;
    // `--target` is what keeps RUSTFLAGS off build scripts and proc macros, which cannot be
    // built with the sanitizer.
    let host = rustup::host()?;
    let (flags, filters): (&str, &[&str]) = match thread {
        true => ("-Zsanitizer=thread", &THREAD_TESTS),
        false => ("-Zsanitizer=address", &[]),
    };
    for backend in BACKENDS {
        Cmd::cargo(&["+nightly", "test", "-Zbuild-std", "--target", &host])
            .args(&["-p", "dispatch-loop", "--test", "it", "--"])
            .args(filters)
            .env("RUSTFLAGS", flags)
            .env("DISPATCH_BACKEND", backend)
            .run()?;
    }
    Ok(())
}
