//! The process's life: the shutdown summary and exit status on SIGTERM and SIGINT, no CPU
//! while idle, `--help`, and the kqueue backend refused on Linux with a clear message.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::check::{self, Backend, Options, Signal};

every_backend!(sigterm_summary, sigint_summary, idle_cpu);

fn sigterm_summary(backend: Backend) {
    summary_after(backend, Signal::TERM);
}

fn sigint_summary(backend: Backend) {
    summary_after(backend, Signal::INT);
}

/// Seven connections that echo and leave, three that echo and stay open; then `signal`.
/// The server exits 0 promptly, closes the three, and its summary counts exactly the ten
/// connections and the bytes echoed, with every key present.
fn summary_after(backend: Backend, signal: Signal) {
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let mut bytes = 0;
    for index in 0..7 {
        let message = format!("message {index} ").repeat(index + 1);
        check::echo(&mut server.connect(), message.as_bytes());
        bytes += message.len();
    }
    let mut open: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for (index, stream) in open.iter_mut().enumerate() {
        let message = format!("still open {index}");
        check::echo(stream, message.as_bytes());
        bytes += message.len();
    }
    let stopped = server.stop(signal);
    let stdout = stopped.stdout.join("\n");
    eprintln!(
        "exited in {:?}:\n{stdout}\nstderr:\n{}",
        stopped.elapsed, stopped.stderr
    );
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
    assert!(stopped.elapsed < check::EXIT_TIMEOUT, "{stopped:?}");
    for stream in &mut open {
        check::assert_closed(stream, Duration::from_secs(1));
    }
    for line in &stopped.stdout {
        assert!(
            line.contains(": "),
            "{line:?} on stdout is not `key: value`"
        );
    }
    let summary = &stopped.summary;
    assert_eq!(summary.count("connections"), 10, "{stopped:?}");
    assert_eq!(summary.count("refused"), 0, "{stopped:?}");
    assert_eq!(summary.count("bytes"), bytes as u64, "{stopped:?}");
    let messages = summary.count("messages");
    assert!((10..=bytes as u64).contains(&messages), "{stopped:?}");
    let per_message = summary.get("syscalls per message");
    let decimals = per_message
        .split_once('.')
        .map(|(_, decimals)| decimals.len());
    assert_eq!(
        decimals,
        Some(3),
        "`syscalls per message: {per_message}` is not X.XXX"
    );
    let value: f64 = per_message
        .parse()
        .expect("syscalls per message is a number");
    assert!(value >= 0.0, "{stopped:?}");
    summary.count("pool waits");
    assert_eq!(summary.count("idle timeouts"), 0, "{stopped:?}");
}

/// 100 connections open and idle: the server uses next to no CPU over a second (the loops
/// block in the kernel), and still echoes afterwards.
fn idle_cpu(backend: Backend) {
    check::raise_nofile();
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let mut clients: Vec<_> = (0..100).map(|_| server.connect()).collect();
    for (index, stream) in clients.iter_mut().enumerate() {
        check::echo(stream, format!("idle {index}").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(200));
    let switches_before = context_switches(server.pid());
    let cpu = server.cpu_over_one_second();
    let switches = context_switches(server.pid()) - switches_before;
    eprintln!("idle with 100 connections: {cpu:?} of CPU, {switches} context switches in 1 s");
    assert!(
        cpu <= Duration::from_millis(50),
        "{cpu:?} of CPU in one idle second ({switches} context switches)"
    );
    check::echo(&mut clients[99], b"awake");
}

/// Context switches of every thread of process `pid` so far (voluntary and not).
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut total = 0;
    for task in tasks.filter_map(Result::ok) {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
        {
            total += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

/// Runs the binary with `args` and no other input; returns (exit code, stdout, stderr).
/// Panics if it runs longer than five seconds.
fn run(args: &[&str], backend_env: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = Command::new(check::BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match backend_env {
        Some(name) => command.env("DISPATCH_BACKEND", name),
        None => command.env_remove("DISPATCH_BACKEND"),
    };
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// `--help` succeeds and explains every flag, the backends and the masks.
#[test]
fn help_mentions_every_flag() {
    let (code, stdout, stderr) = run(&["--help"], None);
    assert_eq!(code, Some(0), "--help failed: {stderr}");
    let words = [
        "--listen",
        "--threads",
        "--backend",
        "--max-connections",
        "--buffer-size",
        "--idle-timeout",
        "--uring-mask",
        "io-uring",
        "epoll",
        "kqueue",
        "pbuf-ring",
        "multishot",
        "ext-arg",
    ];
    for word in words {
        assert!(
            stdout.contains(word),
            "--help does not mention {word}:\n{stdout}"
        );
    }
}

/// `--version` prints the name and the package's version, on stdout, and succeeds.
#[test]
fn version_prints_the_package_version() {
    let (code, stdout, stderr) = run(&["--version"], None);
    assert_eq!(code, Some(0), "--version failed: {stderr}");
    let expected = concat!("echo-server ", env!("CARGO_PKG_VERSION"));
    assert_eq!(stdout.trim_end(), expected);
}

/// `--backend kqueue` on Linux: a non-zero exit with a message naming kqueue, and no
/// `listening on` line.
#[test]
fn kqueue_backend_fails_clearly_on_linux() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--backend",
        "kqueue",
    ];
    let (code, stdout, stderr) = run(&args, None);
    assert_ne!(
        code,
        Some(0),
        "--backend kqueue started on Linux:\n{stdout}"
    );
    assert!(
        code.is_some(),
        "killed by a signal, not an error exit:\n{stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("kqueue"),
        "the error does not name kqueue:\n{stderr}"
    );
}

/// An unknown flag and a malformed value are usage errors, not a server.
#[test]
fn bad_arguments_fail() {
    for args in [
        &["--no-such-flag"][..],
        &["--listen", "127.0.0.1:notaport"],
        &["--threads", "many"],
        &["--backend", "select"],
    ] {
        let (code, stdout, stderr) = run(args, None);
        assert_ne!(code, Some(0), "{args:?} succeeded:\n{stdout}");
        assert!(code.is_some(), "{args:?}: killed by a signal:\n{stderr}");
        assert!(!stdout.contains("listening on"), "{args:?}: {stdout}");
        assert!(!stderr.is_empty(), "{args:?}: failed without saying why");
    }
}
