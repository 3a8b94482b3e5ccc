//! `cargo xtask sanitize`: the dispatch-core suite under AddressSanitizer (with its leak
//! checker), once per backend, so that a use-after-free, an overflow or a leak in the loop's
//! unsafe code fails a test run instead of corrupting memory silently. The standard library
//! is rebuilt with the sanitizer too (`-Zbuild-std`), so its allocations are checked as
//! well. Needs nightly with rust-src (installed if missing) and Linux.

use crate::cmd::Cmd;
use crate::rustup;

/// Every backend the suite can run on under Linux.
const BACKENDS: [&str; 3] = ["auto", "epoll", "kqueue-fake"];

pub fn run() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("cargo xtask sanitize runs on Linux only (its backends are Linux's)".into());
    }
    rustup::ensure_toolchain("nightly", &["rust-src"])?;
    // `--target` is what keeps RUSTFLAGS off build scripts and proc macros, which cannot be
    // built with the sanitizer.
    let host = rustup::host()?;
    for backend in BACKENDS {
        Cmd::cargo(&["+nightly", "test", "-Zbuild-std", "--target", &host])
            .args(&["-p", "dispatch-core", "--test", "it"])
            .env("RUSTFLAGS", "-Zsanitizer=address")
            .env("DISPATCH_BACKEND", backend)
            .run()?;
    }
    Ok(())
}
