//! The processes a macro run starts (server, generator), each with its stdout read line by
//! line on a thread of its own so that every wait has a deadline, and what `/proc` says
//! about a process: its CPU ticks and its peak RSS. Shared by the echo, HTTP and storage
//! runs (`bench_run.rs`, `bench_http_run.rs`, `bench_storage_run.rs`).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::cmd::Cmd;

/// The counts a generator's `mark` line gives.
pub struct Mark {
    /// Messages verified since the previous mark.
    pub messages: u64,
    /// Errors since the previous mark.
    pub errors: u64,
    /// Datagrams lost since the previous mark (0 over TCP, or from a loadgen without it).
    pub lost: u64,
    /// Nanoseconds since the previous mark.
    pub ns: u64,
}

/// A child process whose stdout lines arrive on a channel (read by a thread of its own, so
/// every wait for a line has a deadline).
pub struct Proc {
    child: Child,
    /// The process id (the program's: taskset execs it).
    pub pid: u32,
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line; disconnected once it closed.
    pub lines: Receiver<String>,
    /// The address a server listens on.
    pub addr: String,
}

impl Proc {
    /// Starts `command`, its stderr to `log`, its stdin piped if `stdin`.
    pub fn spawn(mut command: Command, log: File, stdin: bool) -> Result<Proc, String> {
        let what = format!("{command:?}");
        let mut child = command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{what}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            lines,
            addr: String::new(),
        })
    }

    /// The next line starting with `prefix` (others are skipped), within `timeout`.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no `{prefix}` line within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("exited before a `{prefix}` line"))
                }
            }
        }
    }

    pub fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{command}").map_err(|e| format!("loadgen's stdin: {e}"))
    }

    /// Sends a `--control` command and reads its answer.
    pub fn mark(&mut self, command: &str) -> Result<Mark, String> {
        self.send(command)?;
        let line = self.expect("mark ", Duration::from_secs(10))?;
        let field = |key| kv(&line, key).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Mark {
            messages: field("messages"),
            errors: field("errors"),
            lost: field("lost"),
            ns: field("ns"),
        })
    }

    /// Signals the process (`-TERM`, `-KILL`), waits up to 10 s for it to exit (then kills
    /// it), and returns the stdout lines it printed meanwhile.
    pub fn stop_with(&mut self, signal: &str) -> Result<Vec<String>, String> {
        self.stdin = None;
        let pid = self.pid.to_string();
        let _ = Cmd::new("kill", &[signal, &pid]).query();
        let lines = self
            .drain(Duration::from_secs(10))
            .ok_or_else(|| format!("did not exit within 10 s of SIGTERM ({signal})"))?;
        let _ = self.child.wait();
        Ok(lines)
    }

    /// Waits up to `timeout` for the process to end by itself (past that it is killed and the
    /// wait fails); returns the stdout lines it printed and how it exited.
    pub fn finish(&mut self, timeout: Duration) -> Result<(Vec<String>, ExitStatus), String> {
        self.stdin = None;
        let lines = self
            .drain(timeout)
            .ok_or_else(|| format!("did not end within {timeout:?}: killed"))?;
        let status = self.child.wait().map_err(|e| e.to_string())?;
        Ok((lines, status))
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The stdout lines until stdout closes; `None`, the process killed, if it is still open
    /// after `timeout`.
    fn drain(&mut self, timeout: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => return Some(lines),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

/// The value of `key=` in a line of `key=value` pairs.
pub fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// User and system CPU time of the whole process so far, in clock ticks (fields 14 and 15 of
/// `/proc/PID/stat`, which sum every thread, live or exited).
pub fn cpu_ticks(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces; the fields after its `)` do not.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok((user, system)),
        _ => Err(format!("{path}: no utime and stime")),
    }
}

/// `sysconf(_SC_CLK_TCK)`, through `getconf` (xtask has no libc); 100 where that fails.
pub fn clock_ticks_per_s() -> f64 {
    Cmd::new("getconf", &["CLK_TCK"])
        .query()
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(100.0)
}

/// VmHWM of `/proc/PID/status`, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
