//! The harness every test drives the server through: start the real binary on `127.0.0.1:0`,
//! read the address it prints, check the backend it logs per thread, watch its descriptors,
//! memory and CPU time through `/proc`, and stop it with a signal (SIGTERM when dropped).
//! The client helpers below set a timeout on every socket, so no test can hang.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_echo-server");

/// The longest any one socket read or write in a test may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to print its address, or its threads their backends.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to exit after SIGINT or SIGTERM. The issue asks for one
/// second; the assertion is generous so that a loaded machine does not fail it.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable dispatch-loop reads to pick a backend under `--backend auto`.
const BACKEND_ENV: &str = "DISPATCH_BACKEND";

/// A backend configuration the suite runs each behaviour on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `--backend io-uring`.
    IoUring,
    /// `--backend io-uring --uring-mask pbuf-ring,multishot,ext-arg`: the fallbacks for
    /// kernels without provided-buffer rings, multishot operations and `EXT_ARG`.
    IoUringMasked,
    /// `--backend epoll`.
    Epoll,
    /// `--backend auto` with `DISPATCH_BACKEND=kqueue-fake`: the kqueue logic over its fake.
    KqueueFake,
}

impl Backend {
    /// The command-line arguments that select this configuration.
    fn args(self) -> &'static [&'static str] {
        match self {
            Backend::IoUring => &["--backend", "io-uring"],
            Backend::IoUringMasked => &[
                "--backend",
                "io-uring",
                "--uring-mask",
                "pbuf-ring,multishot,ext-arg",
            ],
            Backend::Epoll => &["--backend", "epoll"],
            Backend::KqueueFake => &["--backend", "auto"],
        }
    }

    /// The backend name each thread must log (`thread I: backend NAME`).
    fn logged_name(self) -> &'static str {
        match self {
            Backend::IoUring | Backend::IoUringMasked => "io_uring",
            Backend::Epoll => "epoll",
            Backend::KqueueFake => "kqueue-fake",
        }
    }

    fn needs_io_uring(self) -> bool {
        matches!(self, Backend::IoUring | Backend::IoUringMasked)
    }
}

/// How to start a server: the backend, the thread count, further arguments, and optionally
/// the `RLIMIT_NOFILE` (soft and hard) the server process starts with.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// The backend configuration.
    pub backend: Backend,
    /// `--threads`.
    pub threads: u32,
    /// Further arguments, appended after the others.
    pub args: &'a [&'a str],
    /// The server's descriptor limit, set through `prlimit` (or `sh -c 'ulimit -n'`).
    pub nofile: Option<u64>,
}

impl Options<'_> {
    /// Two threads, no further arguments, the inherited descriptor limit.
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            threads: 2,
            args: &[],
            nofile: None,
        }
    }
}

/// Starts a server, or returns `None` after printing why where `options.backend` needs
/// io_uring and the server itself falls back from it on this host (`--backend auto` logs
/// another backend). Panics, with the server's stderr, if it does not start.
pub fn start(options: &Options) -> Option<Server> {
    if options.backend.needs_io_uring() {
        if let Some(reason) = io_uring_unavailable() {
            eprintln!("skipped: the server does not use io_uring here: {reason}");
            return None;
        }
    }
    Some(Server::spawn(options))
}

/// Why the server does not pick io_uring under `--backend auto` on this host, if it does
/// not; asked once per test process.
fn io_uring_unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let mut command = Command::new(BIN);
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--backend",
            "auto",
        ]);
        command.env_remove(BACKEND_ENV);
        let server = Server::from_command(command, 1);
        let line = server.backend_line(0);
        let name = logged_backend(&line);
        (name != "io_uring").then_some(line)
    });
    probe.as_deref()
}

/// The backend name in a `thread I: backend NAME ...` line.
fn logged_backend(line: &str) -> &str {
    let rest = line.split_once(": backend ").map_or("", |(_, rest)| rest);
    let word = rest.split_whitespace().next().unwrap_or("");
    word.trim_end_matches([',', ';', ':', '.', ')'])
}

/// A running `echo-server` process.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    /// Lines the server printed on stdout after `listening on`.
    stdout: Receiver<String>,
    /// Everything the server printed on stderr so far, a line per entry.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn spawn(options: &Options) -> Server {
        let mut command = match options.nofile {
            Some(limit) => with_nofile(limit),
            None => Command::new(BIN),
        };
        let threads = options.threads.to_string();
        command.args(["--listen", "127.0.0.1:0", "--threads", &threads]);
        command.args(options.backend.args()).args(options.args);
        match options.backend {
            Backend::KqueueFake => command.env(BACKEND_ENV, "kqueue-fake"),
            _ => command.env_remove(BACKEND_ENV),
        };
        let server = Server::from_command(command, options.threads);
        for thread in 0..options.threads {
            let line = server.backend_line(thread);
            assert_eq!(
                logged_backend(&line),
                options.backend.logged_name(),
                "{:?}: thread {thread} logged {line:?}; stderr:\n{}",
                options.backend,
                server.stderr_text()
            );
        }
        server
    }

    /// Spawns `command` (which prints `listening on`), drains its output on two threads,
    /// and waits for its address.
    fn from_command(mut command: Command, threads: u32) -> Server {
        assert!(threads > 0);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout: lines,
            stderr,
        };
        server.addr = server.read_address(&command);
        server
    }

    /// Reads the first stdout line, which must be `listening on 127.0.0.1:PORT`.
    fn read_address(&mut self, command: &Command) -> SocketAddr {
        let line = match self.stdout.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{command:?} printed no address in {START_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait_exit(EXIT_TIMEOUT);
                panic!(
                    "{command:?} exited ({status:?}) before listening; stderr:\n{}",
                    self.stderr_text()
                )
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("first stdout line {line:?} is not `listening on ADDR`"));
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line:?}");
        assert_ne!(addr.port(), 0, "{line:?}: not the bound port");
        addr
    }

    /// The `thread I: backend ...` line thread `thread` logged, waiting for it.
    fn backend_line(&self, thread: u32) -> String {
        let prefix = format!("thread {thread}: backend ");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(&prefix))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}NAME` line on stderr in {START_TIMEOUT:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address the server printed.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// A new client connection, with [`IO_TIMEOUT`] on reads and writes and `TCP_NODELAY`.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        set_timeouts(&stream);
        stream
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        let child = self.child.as_mut().expect("a running server");
        child.try_wait().unwrap().is_none()
    }

    /// Panics, with stderr, if the server has exited.
    pub fn assert_alive(&mut self) {
        if !self.alive() {
            let status = self.wait_exit(EXIT_TIMEOUT);
            panic!(
                "the server died ({status:?}); stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// The number of descriptors the server has open.
    pub fn fd_count(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid);
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .count()
    }

    /// What each of the server's descriptors refers to, one per line.
    pub fn fd_listing(&self) -> String {
        let dir = format!("/proc/{}/fd", self.pid);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return String::new();
        };
        let mut lines: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|entry| {
                let target = std::fs::read_link(entry.path()).unwrap_or_default();
                format!(
                    "{} -> {}",
                    entry.file_name().to_string_lossy(),
                    target.display()
                )
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// The descriptor count once it stops changing (two equal readings 100 ms apart, within
    /// five seconds): the baseline leak checks compare against.
    pub fn settled_fd_count(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.fd_count();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let count = self.fd_count();
            if count == last {
                return count;
            }
            last = count;
        }
        panic!(
            "the server's descriptor count never settled:\n{}",
            self.fd_listing()
        )
    }

    /// Waits (up to ten seconds) until the server holds at most `baseline` descriptors.
    pub fn assert_fds_back_to(&self, baseline: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = self.fd_count();
            if count <= baseline {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "descriptor leak: {count} open, {baseline} before; now:\n{}\nstderr:\n{}",
                    self.fd_listing(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A field of `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let line = status
            .lines()
            .find(|line| line.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in {path}"));
        let value = line.split_whitespace().nth(1).unwrap();
        value.parse().unwrap()
    }

    /// The CPU time (user and system, every thread) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        // Linux reports these in USER_HZ, which is 100 on every architecture it exports to
        // user space (`sysconf(_SC_CLK_TCK)`).
        const USER_HZ: u64 = 100;
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // The command name may hold spaces; the fields after it are space-separated, and
        // utime and stime are fields 14 and 15 counting from the pid.
        let after = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields[11].parse().unwrap();
        let stime: u64 = fields[12].parse().unwrap();
        Duration::from_millis((utime + stime) * 1000 / USER_HZ)
    }

    /// The CPU time the server uses over the next second.
    pub fn cpu_over_one_second(&self) -> Duration {
        let before = self.cpu_time();
        std::thread::sleep(Duration::from_secs(1));
        self.cpu_time() - before
    }

    /// The soft `RLIMIT_NOFILE` the server runs under, from `/proc/PID/limits`.
    pub fn nofile_limit(&self) -> u64 {
        let path = format!("/proc/{}/limits", self.pid);
        let limits = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    /// Sends `signal` and waits for the exit; panics if the server is still running after
    /// [`EXIT_TIMEOUT`].
    pub fn stop(mut self, signal: Signal) -> Stopped {
        let started = Instant::now();
        self.signal(signal);
        let status = self.wait_exit(EXIT_TIMEOUT);
        let elapsed = started.elapsed();
        let Some(status) = status else {
            panic!(
                "still running {EXIT_TIMEOUT:?} after {signal:?}; stderr:\n{}",
                self.stderr_text()
            );
        };
        let mut stdout = Vec::new();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(_) => break,
            }
        }
        Stopped {
            status,
            elapsed,
            summary: Summary::parse(&stdout),
            stdout,
            stderr: self.stderr_text(),
        }
    }

    fn signal(&self, signal: Signal) {
        let raw = i32::try_from(self.pid).unwrap();
        let pid = rustix::process::Pid::from_raw(raw).unwrap();
        // The process may have exited already; `wait_exit` reports that.
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// Waits up to `timeout` for the process to exit and reaps it; `None` if it did not.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(Signal::TERM);
        if self.wait_exit(EXIT_TIMEOUT).is_none() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A command that runs the server under `RLIMIT_NOFILE` `limit` (soft and hard): through
/// `prlimit` where it exists, else through `sh -c 'ulimit -n'`; both exec the server, so the
/// child's pid is the server's.
fn with_nofile(limit: u64) -> Command {
    let prlimit_exists = ["/usr/bin/prlimit", "/bin/prlimit", "/usr/sbin/prlimit"]
        .iter()
        .any(|path| std::path::Path::new(path).exists());
    if prlimit_exists {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={limit}:{limit}"))
            .arg("--")
            .arg(BIN);
        command
    } else {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(BIN);
        command
    }
}

/// How a stopped server ended.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// From the signal to the exit.
    pub elapsed: Duration,
    /// The summary's `key: value` lines.
    pub summary: Summary,
    /// Every stdout line after `listening on`.
    pub stdout: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// The shutdown summary: `key: value` lines.
#[derive(Debug)]
pub struct Summary {
    values: HashMap<String, String>,
    text: String,
}

impl Summary {
    fn parse(lines: &[String]) -> Summary {
        let values = lines
            .iter()
            .filter_map(|line| line.split_once(": "))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Summary {
            values,
            text: lines.join("\n"),
        }
    }

    /// The value of `key`, which must be present.
    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("the summary has no `{key}:` line:\n{}", self.text))
    }

    /// The value of `key` as a whole number.
    pub fn count(&self, key: &str) -> u64 {
        let value = self.get(key);
        value
            .parse()
            .unwrap_or_else(|_| panic!("`{key}: {value}` is not a count:\n{}", self.text))
    }
}

/// Sets [`IO_TIMEOUT`] on reads and writes, and `TCP_NODELAY`.
pub fn set_timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
}

/// Sends `message` and checks that exactly it comes back.
pub fn echo(stream: &mut TcpStream, message: &[u8]) {
    stream
        .write_all(message)
        .unwrap_or_else(|e| panic!("send: {e}"));
    let mut echoed = vec![0; message.len()];
    stream
        .read_exact(&mut echoed)
        .unwrap_or_else(|e| panic!("receive the echo of {} bytes: {e}", message.len()));
    assert_same(message, &echoed);
}

/// Sends `data` from a writer thread, half-closes, and reads until the server closes:
/// returns what came back.
pub fn round_trip(stream: TcpStream, data: Arc<Vec<u8>>) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for chunk in data.chunks(256 * 1024) {
            writer
                .write_all(chunk)
                .unwrap_or_else(|e| panic!("send: {e}"));
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let mut echoed = Vec::new();
    let result = reader.read_to_end(&mut echoed);
    sender.join().expect("the writer thread");
    if let Err(e) = result {
        panic!("receive after {} bytes: {e} (no EOF)", echoed.len());
    }
    echoed
}

/// Panics, saying where, unless `got` equals `want` (without printing megabytes).
pub fn assert_same(want: &[u8], got: &[u8]) {
    if want == got {
        return;
    }
    let first = want.iter().zip(got).position(|(a, b)| a != b);
    panic!(
        "echo differs: sent {} bytes, got {}, first difference at {first:?}",
        want.len(),
        got.len()
    );
}

/// Waits up to `timeout` for the server to close `stream`: a read returns end-of-file or a
/// reset. Panics if data arrives or the connection stays open.
pub fn assert_closed(stream: &mut TcpStream, timeout: Duration) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0u8; 4096];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected a close, got {n} bytes: {:?}",
            &buffer[..n.min(64)]
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the server did not close the connection within {timeout:?}")
        }
        Err(e) => panic!("expected a close, got {e}"),
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, once.
pub fn raise_nofile() {
    static RAISED: OnceLock<()> = OnceLock::new();
    RAISED.get_or_init(|| {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).unwrap();
    });
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from
/// the seed it prints.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `ECHO_IT_SEED` if set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = match std::env::var("ECHO_IT_SEED") {
            Ok(seed) => seed.parse().expect("ECHO_IT_SEED is a number"),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.unwrap().as_nanos() as u64
            }
        };
        eprintln!("{test}: seed {seed} (replay with ECHO_IT_SEED={seed})");
        Rng::new(seed)
    }

    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        assert!(low <= high);
        low + (self.next() % (high - low + 1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
