//! `cargo xtask kernel-test`: the test suites on the Linux kernels users run (Debian 11's 5.10,
//! 12's 6.1, 13's 6.12), each booted once under QEMU with every run below inside that one VM.
//!
//! Steps: the host tools (`kernel_host`), the kernels fetched once into
//! `target/kernel-test/kernels/`, the test binaries built statically for musl, one initramfs
//! (`kernel_vm`), then per kernel a boot whose console is read back (`kernel_report`). The
//! command prints one table (per kernel: what the probe found, then each run's passed, failed
//! and skipped tests and its time) and fails if any run failed, hung, skipped most of its
//! tests, or lost its marker, or a kernel panicked. `--write-docs` also writes the probe's
//! table to `docs/KERNELS.md`; it is always written to `target/kernel-test/kernels.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::kernel_host::{self, Kernel, KERNELS};
use crate::kernel_report::{self, KernelResult};
use crate::kernel_vm::{self, Boot, Built};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `5.10`, `6.1`, `6.12` or `all`.
    pub kernel: String,
    pub release: bool,
    pub write_docs: bool,
    pub update_kernels: bool,
    /// `auto`, `tcg` or `kvm`.
    pub accel: String,
    /// Every run's limit in the guest, in seconds, instead of each run's own.
    pub run_limit_s: Option<u64>,
    /// Only these runs (by name; the probe always runs); empty: every run.
    pub runs: Vec<String>,
    /// Each run this many times in the VM (to see how often a flaky test fails).
    pub repeat: u32,
    /// Arguments added to every libtest run (a test filter, `--exact`).
    pub test_args: Vec<String>,
    /// `KEY=VALUE` variables added to every run's environment.
    pub envs: Vec<String>,
}

/// A run as this invocation schedules it: its name in the table, its limit and its arguments.
struct Scheduled {
    name: String,
    run: &'static Run,
    limit_s: u64,
}

/// One binary run in the guest: a name for the table, the package and test target (or
/// `example` and its name), the environment, and the arguments after the binary.
struct Run {
    name: &'static str,
    package: &'static str,
    target: &'static str,
    env: &'static [&'static str],
    args: &'static [&'static str],
    /// A libtest binary (else a plain program: the probe).
    libtest: bool,
    /// How long it may take in the guest before it is killed as hung: about four times what
    /// it takes under emulation here.
    limit_s: u64,
}

/// libtest's arguments for every suite: two threads (the VM has two CPUs), and one JSON event
/// per test with its output (`--format json --show-output`), so that the tests that printed
/// `skipped:` are counted by name and each failure comes with its panic, each with its time
/// (`--report-time`: `exec_time` in the console log). The JSON format is
/// unstable in libtest: `RUSTC_BOOTSTRAP=1` (set in the job) lets a stable test binary use it.
const LIBTEST: &[&str] = &[
    "-Z",
    "unstable-options",
    "--format",
    "json",
    "--show-output",
    "--report-time",
    "--test-threads=2",
];

/// Every run, in order. The dispatch-loop suite runs on automatic selection, on each forced
/// backend and with io_uring's optional features masked; the echo server's simulation fuzzer
/// is left out (it never touches the kernel, and its seeds cost minutes under emulation).
const RUNS: [Run; 11] = [
    Run {
        name: "probe",
        package: "dispatch-loop",
        target: "kernel_probe",
        env: &[],
        args: &[],
        libtest: false,
        limit_s: 30,
    },
    run("sys-uring", "sys-uring", "it", &[], 60),
    run("core:auto", "dispatch-loop", "it", &[], 120),
    run("core:io_uring", "dispatch-loop", "it", IO_URING, 120),
    run("core:epoll", "dispatch-loop", "it", EPOLL, 120),
    run("core:uring-extras", "dispatch-loop", "it", MASKED, 120),
    run("net:auto", "dispatch-net", "it", &[], 60),
    run("net:epoll", "dispatch-net", "it", EPOLL, 60),
    run("examples", "examples", "runnable", &[], 60),
    run("echo_minimal", "examples", "echo_minimal", &[], 60),
    Run {
        name: "echo-server",
        package: "dispatch-echo",
        target: "it",
        env: &[],
        args: &["--skip", "sim_fuzz::"],
        libtest: true,
        limit_s: 240,
    },
];

const IO_URING: &[&str] = &["DISPATCH_BACKEND=io_uring"];
const EPOLL: &[&str] = &["DISPATCH_BACKEND=epoll"];
/// io_uring without provided-buffer rings, multishot and `EXT_ARG` (`xtask/src/test.rs`).
const MASKED: &[&str] = &[
    "DISPATCH_BACKEND=io_uring",
    "DISPATCH_CORE_TEST_MASK=uring-extras",
];

const fn run(
    name: &'static str,
    package: &'static str,
    target: &'static str,
    env: &'static [&'static str],
    limit_s: u64,
) -> Run {
    Run {
        name,
        package,
        target,
        env,
        args: &[],
        libtest: true,
        limit_s,
    }
}

pub fn run_plan(plan: &Plan) -> Result<(), String> {
    let kernels = wanted(&plan.kernel)?;
    let started = Instant::now();
    kernel_host::ensure_tools()?;
    let fetched = kernel_host::fetch_kernels(&kernels, plan.update_kernels)?;
    let built = kernel_vm::build(plan.release)?;
    let scheduled = schedule(plan)?;
    let (job, binaries) = job(&built, &scheduled, plan)?;
    let limit_s = scheduled.iter().map(|s| s.limit_s).sum::<u64>() + 120;
    let plain: Vec<&str> = scheduled
        .iter()
        .filter(|s| !s.run.libtest)
        .map(|s| s.name.as_str())
        .collect();
    let work = kernel_host::work_dir();
    let initramfs = work.join("initramfs.cpio");
    let paths: Vec<&Path> = binaries.iter().map(PathBuf::as_path).collect();
    kernel_vm::initramfs(&initramfs, &paths, &job)?;
    let prepared_s = started.elapsed().as_secs_f64();
    eprintln!("xtask: host tools, kernels, build and initramfs took {prepared_s:.0} s");
    let kvm = use_kvm(&plan.accel)?;
    let mut results = Vec::new();
    for kernel in &fetched {
        let label = format!("Linux {} ({})", kernel.kernel.series, kernel.package);
        let log = work.join(format!("console-{}.log", kernel.kernel.series));
        let boot = Boot {
            vmlinuz: &kernel.vmlinuz,
            initramfs: &initramfs,
            log: &log,
            kvm,
            limit: Duration::from_secs(limit_s),
        };
        let booted = Instant::now();
        let lines = kernel_vm::boot(&boot, &format!("[{}] ", kernel.kernel.series))?;
        let wall_s = booted.elapsed().as_secs_f64();
        eprintln!(
            "xtask: Linux {}: {wall_s:.0} s; console in {}",
            kernel.kernel.series,
            log.display()
        );
        results.push((label, wall_s, kernel_report::parse(&lines, &plain)));
    }
    report(
        plan,
        &built,
        &results,
        started.elapsed().as_secs_f64(),
        prepared_s,
    )
}

/// Prints the table, writes the docs table, and fails naming each kernel that failed.
fn report(
    plan: &Plan,
    built: &[Built],
    results: &[(String, f64, KernelResult)],
    total_s: f64,
    prepared_s: f64,
) -> Result<(), String> {
    eprintln!("{}", kernel_report::table(results));
    eprintln!("total {total_s:.0} s (host tools, kernels, build and initramfs {prepared_s:.0} s)");
    let mut columns: Vec<(String, KernelResult)> = results
        .iter()
        .map(|(label, _, result)| (column(label, result), result.clone()))
        .collect();
    if let Some(host) = host_probe(built) {
        columns.push((format!("this host: `{}`", series(&host)), host));
    }
    let markdown = kernel_report::markdown(&columns);
    let work = kernel_host::work_dir();
    write(&work.join("kernels.md"), &markdown)?;
    if plan.write_docs {
        write(
            &crate::project_root().join("docs/KERNELS.md"),
            &docs_page(&markdown),
        )?;
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, _, result)| !result.passed())
        .map(|(label, _, _)| label.as_str())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!("kernel-test failed on {}", failed.join(", ")))
}

/// A docs column's title: the Debian package version and the kernel's release, from the
/// table's `Linux 6.1 (linux-image-6.1.0-57-cloud-amd64=6.1.192-3)`.
fn column(label: &str, result: &KernelResult) -> String {
    let version = label
        .rsplit('=')
        .next()
        .unwrap_or(label)
        .trim_end_matches(')');
    format!("Linux {version} (`{}`)", series(result))
}

/// The kernel release a probe reported, shortened to its version (`6.1.0-57-cloud-amd64`).
fn series(result: &KernelResult) -> String {
    result.probed("kernel").to_owned()
}

/// The probe run on this host, natively (its musl build runs here too), for the docs' last
/// column; `None` if it does not run.
fn host_probe(built: &[Built]) -> Option<KernelResult> {
    let probe = built.iter().find(|b| b.target == "kernel_probe")?;
    let output = Cmd::new(&probe.path.to_string_lossy(), &[]).query()?;
    let lines: Vec<String> = output.lines().map(str::to_owned).collect();
    Some(kernel_report::parse(&lines, &[]))
}

fn docs_page(markdown: &str) -> String {
    format!(
        "# What the loop uses on each kernel\n\n\
         Generated by `cargo xtask kernel-test --write-docs` from the probe it runs in each \
         kernel's VM\n(`crates/dispatch-core/examples/kernel_probe.rs`) and on the host that \
         ran it; do not edit by hand.\nThe kernels are Debian's cloud kernels \
         (`linux-image-cloud-amd64` of Debian 11, 12 and 13, newest with\nsecurity updates; \
         each title has the package version), booted under QEMU; `docs/HACKING.md` says \
         how.\nWhere a row names a fallback, the loop gives the same callbacks without the \
         kernel feature.\n\n{markdown}"
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The runs `plan` asks for, each `plan.repeat` times (`core:auto#2` for the second).
fn schedule(plan: &Plan) -> Result<Vec<Scheduled>, String> {
    for name in &plan.runs {
        if !RUNS.iter().any(|run| run.name == name) {
            let names: Vec<&str> = RUNS.iter().map(|run| run.name).collect();
            return Err(format!("--run {name}: the runs are {}", names.join(", ")));
        }
    }
    let wanted =
        |run: &Run| !run.libtest || plan.runs.is_empty() || plan.runs.iter().any(|n| n == run.name);
    let mut scheduled = Vec::new();
    for run in RUNS.iter().filter(|run| wanted(run)) {
        let times = if run.libtest { plan.repeat.max(1) } else { 1 };
        for time in 1..=times {
            let name = match time {
                1 => run.name.to_owned(),
                _ => format!("{}#{time}", run.name),
            };
            let limit_s = plan.run_limit_s.unwrap_or(run.limit_s);
            scheduled.push(Scheduled { name, run, limit_s });
        }
    }
    Ok(scheduled)
}

/// The kernels `--kernel` names.
fn wanted(name: &str) -> Result<Vec<Kernel>, String> {
    if name == "all" {
        return Ok(KERNELS.to_vec());
    }
    let kernel = KERNELS.iter().find(|k| k.series == name).ok_or_else(|| {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.series).collect();
        format!(
            "--kernel {name}: the kernels are {} and all",
            names.join(", ")
        )
    })?;
    Ok(vec![*kernel])
}

/// Whether to boot with KVM: `auto` uses it where the host's KVM is Intel's or AMD's (a
/// nested PVM host's `/dev/kvm` cannot run a stock kernel: see docs/HACKING.md).
fn use_kvm(accel: &str) -> Result<bool, String> {
    let hardware = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"];
    let has_kvm = Path::new("/dev/kvm").exists() && hardware.iter().any(|m| Path::new(m).exists());
    match accel {
        "tcg" => Ok(false),
        "kvm" => Ok(true),
        "auto" => Ok(has_kvm),
        other => Err(format!("--accel {other}: use auto, tcg or kvm")),
    }
}

/// The guest's job script (a `run` line per scheduled run, as `/init` defines it) and the
/// binaries it needs in the initramfs.
fn job(
    built: &[Built],
    scheduled: &[Scheduled],
    plan: &Plan,
) -> Result<(String, Vec<PathBuf>), String> {
    let find = |package: &str, target: &str| {
        built
            .iter()
            .find(|b| b.target == target && b.package == package)
            .map(|b| b.path.clone())
            .ok_or_else(|| format!("cargo built no {target} for {package}"))
    };
    let quote = |word: &str| format!("'{}'", word.replace('\'', r"'\''"));
    let mut script = String::new();
    let mut binaries = Vec::new();
    for Scheduled { name, run, limit_s } in scheduled {
        let path = find(run.package, run.target)?;
        let mut words = vec![format!("run {} {limit_s} env", quote(name))];
        if run.libtest {
            words.push("RUSTC_BOOTSTRAP=1".to_owned());
        }
        words.extend(run.env.iter().map(|var| (*var).to_owned()));
        words.extend(plan.envs.iter().map(|var| quote(var)));
        words.push(path.to_string_lossy().into_owned());
        if run.libtest {
            // `-- --test-threads=1` replaces the two threads (libtest refuses it twice).
            let threads = plan
                .test_args
                .iter()
                .any(|a| a.starts_with("--test-threads"));
            let libtest = LIBTEST
                .iter()
                .filter(|a| !(threads && a.starts_with("--test-threads")));
            words.extend(libtest.map(|arg| (*arg).to_owned()));
            words.extend(plan.test_args.iter().map(|arg| quote(arg)));
        }
        words.extend(run.args.iter().map(|arg| (*arg).to_owned()));
        script += &format!("{}\n", words.join(" "));
        if !binaries.contains(&path) {
            binaries.push(path);
        }
    }
    // What the suites start by path: the server binary, and the examples.
    for b in built {
        let example = b.path.parent().is_some_and(|dir| dir.ends_with("examples"));
        if (example || b.target == "echo-server") && !binaries.contains(&b.path) {
            binaries.push(b.path.clone());
        }
    }
    Ok((script, binaries))
}
