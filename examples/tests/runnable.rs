//! The small examples (`taste`, `datagrams`, `files`, `direct`, `storage_taste`, `timeouts`) run to
//! success on every backend: each checks its own results and exits non-zero if one is wrong,
//! so running it is its test. `storage_bench` runs each of its modes briefly on every
//! backend (its figures unjudged). `cargo test` builds examples before running tests; this
//! finds them beside its own binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

fn example_path(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

/// Every backend this platform has.
fn backends() -> &'static [&'static str] {
    if cfg!(target_os = "linux") {
        &["auto", "epoll", "kqueue-fake"]
    } else {
        &["auto"]
    }
}

/// Runs example `name` on every backend; returns each run's standard output.
fn run(name: &str) -> Vec<String> {
    let mut outputs = Vec::new();
    for backend in backends() {
        let output = Command::new(example_path(name))
            .env("DISPATCH_BACKEND", backend)
            .output()
            .expect("the examples are built by cargo test");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{name} on {backend}: {}\n{stdout}{stderr}",
            output.status
        );
        outputs.push(stdout);
    }
    outputs
}

#[test]
fn datagrams_echoes_three_datagrams() {
    for stdout in run("datagrams") {
        assert!(
            stdout.starts_with("datagrams: echoed 3 datagrams"),
            "{stdout}"
        );
    }
}

#[test]
fn taste_echoes_over_a_socket_pair() {
    for stdout in run("taste") {
        assert!(
            stdout.starts_with("taste: echoed \"hello, loop\""),
            "{stdout}"
        );
    }
}

#[test]
fn files_writes_flushes_reads_back_and_closes() {
    for stdout in run("files") {
        assert!(stdout.contains("read them back and closed it"), "{stdout}");
    }
}

#[test]
fn direct_replaces_a_file_atomically_with_direct_io() {
    for stdout in run("direct") {
        if stdout.contains("skipped") {
            // Only a file system without O_DIRECT may skip: tmpfs before Linux 6.6 (the
            // kernel matrix's VMs), never the disks this suite runs on elsewhere.
            assert!(!on_a_disk(), "{stdout}");
            say_skipped(&stdout);
            continue;
        }
        assert!(stdout.contains("with one"), "{stdout}");
    }
}

#[test]
fn storage_taste_appends_durable_records() {
    for stdout in run("storage_taste") {
        if stdout.contains("skipped") {
            assert!(!on_a_disk(), "{stdout}");
            say_skipped(&stdout);
            continue;
        }
        assert!(stdout.contains("appended two durable records"), "{stdout}");
    }
}

/// Passes an example's own skip on as this test's `skipped:` line, which `cargo xtask test`
/// and the kernel matrix count and list (libtest alone would report a plain pass).
fn say_skipped(stdout: &str) {
    let reason = stdout
        .trim()
        .split_once("skipped: ")
        .map_or(stdout, |(_, why)| why);
    eprintln!("skipped: {reason}");
}

/// Whether the working directory is on a file system known to take `O_DIRECT` (ext4, XFS,
/// Btrfs): an example may skip direct I/O only elsewhere (tmpfs before Linux 6.6, as in the
/// kernel matrix's VMs).
fn on_a_disk() -> bool {
    let fs = Command::new("stat").args(["-f", "-c", "%T", "."]).output();
    let fs = fs.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    matches!(
        fs.unwrap_or_default().as_str(),
        "ext2/ext3" | "xfs" | "btrfs"
    )
}

#[test]
fn timeouts_fire_in_order_and_deadlines_cancel() {
    for stdout in run("timeouts") {
        assert!(stdout.contains("cancelling it afterwards"), "{stdout}");
    }
}

/// Each mode of the storage benchmark, briefly, on every backend, on a 1 MiB file in cargo's
/// temporary directory for tests (under the target directory: a disk, where `O_DIRECT`
/// works; where the filesystem refuses it, the test says so and skips). It checks that each
/// run ends well and prints its `result` line; how many operations fit in the window is not
/// judged.
#[test]
fn storage_bench_runs_every_mode() {
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storage_bench.file");
    std::fs::write(&file, vec![0x5a; 1 << 20]).unwrap();
    for backend in backends() {
        let runs = ["randread", "randwrite", "append", "group"].map(|mode| (mode, ""));
        let registered = [("randread", "--registered"), ("randwrite", "--registered")];
        for (mode, flag) in runs.into_iter().chain(registered) {
            let output = Command::new(example_path("storage_bench"))
                .env("DISPATCH_BACKEND", backend)
                .arg(format!("--file={}", file.display()))
                .args([&format!("--mode={mode}"), "--depth=4"])
                .args((!flag.is_empty()).then_some(flag))
                .args(["--seconds=0.05", "--warmup=0"])
                .output()
                .expect("the examples are built by cargo test");
            let stdout = String::from_utf8(output.stdout).unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() && stderr.contains("Invalid argument") {
                let dir = file.parent().unwrap().display();
                return eprintln!("skipped: {dir} refuses O_DIRECT: {stderr}");
            }
            assert!(output.status.success(), "{mode} on {backend}: {stderr}");
            let line = format!("mode={mode} depth=4 ops=");
            assert!(stdout.starts_with("result backend="), "{stdout}");
            assert!(stdout.contains(&line), "{mode} on {backend}: {stdout}");
        }
    }
    std::fs::remove_file(&file).unwrap();
}
