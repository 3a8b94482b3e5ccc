//! The `http` example as a real process on 127.0.0.1:0, under each backend (io_uring, epoll,
//! kqueue-fake through `DISPATCH_BACKEND`), with real clients: `curl` for the routes,
//! keep-alive and a chunked upload; Python's `http.client` and raw sockets
//! (`http_client.py` beside this file) for pipelining, HTTP/1.0, and the refusals (400, 431,
//! 413, a slowloris answered 408), each delivered whole before the close, even to a client
//! that reads late and keeps sending; plain sockets here for the idle timeout and the stop
//! on SIGTERM and SIGINT. A test whose tool is missing says `skipped:` and passes, as does the
//! io_uring run where io_uring is unavailable. Every wait is bounded; no test asserts a
//! duration. The request framing's unit tests (`examples/http/request_tests.rs`) run here
//! too: an example is built, not tested, by `cargo test`.
//!
//! `cargo test` builds examples before running tests (not with `--test http` alone: run
//! `cargo test -p examples`); this finds the binary beside the test's own.
#![forbid(unsafe_code)]

#[path = "../http/request.rs"]
#[allow(dead_code)]
mod request;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

const BACKENDS: [&str; 3] = ["io_uring", "epoll", "kqueue-fake"];
/// The longest the server may take to listen, and to exit after a signal.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one client process (curl, python3) may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one socket read or write here may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The example binary: `target/<profile>/examples/http`.
fn example_path() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join("http")
}

/// The running example; killed when dropped, so a failing test leaves nothing behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    backend: &'static str,
    /// Its stderr so far (its backend line, its summary at exit).
    log: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the example on `backend` with `args`; `None` (after a `skipped:` line) where
    /// `backend` is io_uring and io_uring is unavailable here.
    fn start(backend: &'static str, args: &[&str]) -> Option<Server> {
        let mut child = Command::new(example_path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("DISPATCH_BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example is built by `cargo test -p examples`");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log_reader = Some(std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in stderr.lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        }));
        let (listening, addr) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = listening.send(addr.parse::<SocketAddr>().expect("an address"));
                }
            }
        });
        let addr = addr.recv_timeout(START_TIMEOUT);
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            backend,
            log,
            log_reader,
        };
        match addr {
            Ok(addr) => server.addr = addr,
            Err(_) => return server.did_not_start(),
        }
        server.expect_log(&format!("http: backend {backend}\n"));
        Some(server)
    }

    fn did_not_start(mut self) -> Option<Server> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log_when_done();
        if self.backend == "io_uring" && log.contains("io_uring unavailable") {
            eprintln!("skipped: the http example on io_uring: {}", log.trim());
            return None;
        }
        panic!("the http example did not start on {}:\n{log}", self.backend);
    }

    /// Waits (bounded) until the server's stderr has `text`.
    fn expect_log(&self, text: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.log().contains(text) {
            let log = self.log();
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its whole stderr, once it has exited.
    fn log_when_done(&mut self) -> String {
        if let Some(reader) = self.log_reader.take() {
            reader.join().unwrap();
        }
        self.log()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("a pid");
        kill_process(pid, signal).expect("signal the server");
    }

    /// Waits (bounded) for the server to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `check` against a fresh server with `args` on each backend there is.
fn on_every_backend(args: &[&str], check: impl Fn(&Server)) {
    for backend in BACKENDS {
        if let Some(server) = Server::start(backend, args) {
            check(&server);
        }
    }
}

/// Whether `tool` runs here; says `skipped:` if not.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// Runs `command` to its end, killing it (and failing) past [`CLIENT_TIMEOUT`].
fn run_bounded(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran past {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `curl -sS` with `args`; its standard output.
fn curl(server: &Server, args: &[&str]) -> String {
    let output = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "curl {args:?} on {}: {}\n{stdout}{stderr}\nserver:\n{}",
        server.backend,
        output.status,
        server.log()
    );
    stdout
}

/// Runs `http_client.py MODE HOST PORT` against `server`; it prints `ok` when all is well.
fn python(server: &Server, mode: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http_client.py");
    let (host, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let output = run_bounded(Command::new("python3").args([script, mode, &host, &port]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end() == "ok",
        "http_client.py {mode} on {}: {}\n{stdout}{stderr}\nserver:\n{}",
        server.backend,
        output.status,
        server.log()
    );
}

/// A response as `curl -i` prints it: status line, then headers and body.
fn split_response(text: &str) -> (&str, &str, &str) {
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").expect("a status line");
    (status, headers, body)
}

#[test]
fn curl_gets_plaintext_json_and_404() {
    if !have("curl") {
        return;
    }
    on_every_backend(&[], |server| {
        let routes = [
            ("/plaintext", "200 OK", "text/plain", "Hello, World!"),
            (
                "/json",
                "200 OK",
                "application/json",
                r#"{"message":"Hello, World!"}"#,
            ),
            ("/nowhere", "404 Not Found", "text/plain", "Not Found\n"),
        ];
        for (path, status, content_type, body) in routes {
            let text = curl(server, &["-i", &server.url(path)]);
            let (got_status, headers, got_body) = split_response(&text);
            assert_eq!(got_status, format!("HTTP/1.1 {status}"), "{text}");
            assert!(headers.contains(&format!("Content-Type: {content_type}\r\n")));
            assert!(headers.contains(&format!("Content-Length: {}", body.len())));
            assert!(headers.contains("Server: dispatch"), "{text}");
            assert_eq!(got_body, body);
        }
    });
}

#[test]
fn curl_reuses_one_connection_for_two_urls() {
    if !have("curl") {
        return;
    }
    on_every_backend(&[], |server| {
        let (plaintext, json) = (server.url("/plaintext"), server.url("/json"));
        let null = ["-o", "/dev/null", "-o", "/dev/null"];
        let connects = curl(
            server,
            &[&null[..], &["-w", "%{num_connects} ", &plaintext, &json]].concat(),
        );
        assert_eq!(
            connects, "1 0 ",
            "the second URL opened a connection of its own"
        );
    });
}

#[test]
fn curl_posts_a_chunked_body_and_the_connection_goes_on() {
    if !have("curl") {
        return;
    }
    on_every_backend(&[], |server| {
        let body = "a".repeat(100_000);
        let (count, plaintext) = (server.url("/count"), server.url("/plaintext"));
        let chunked = [
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
        ];
        let post = [
            &chunked[..],
            &["--data-binary", &body, "-w", " %{num_connects}\n", &count],
        ];
        let next = ["--next", "-sS", "-w", " %{num_connects}\n", &plaintext];
        let text = curl(server, &[&post.concat()[..], &next[..]].concat());
        assert_eq!(text, "received 100000 bytes\n 1\nHello, World! 0\n");
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    if have("python3") {
        on_every_backend(&[], |server| python(server, "pipelining"));
    }
}

#[test]
fn http10_closes_unless_kept_alive_and_connection_close_closes() {
    if have("python3") {
        on_every_backend(&[], |server| python(server, "versions"));
    }
}

#[test]
fn malformed_requests_get_400_then_a_close() {
    if have("python3") {
        on_every_backend(&[], |server| python(server, "malformed"));
    }
}

#[test]
fn oversized_heads_get_431_then_a_close() {
    if have("python3") {
        on_every_backend(&[], |server| python(server, "head_too_large"));
    }
}

#[test]
fn oversized_bodies_get_413_then_a_close() {
    if have("python3") {
        on_every_backend(&[], |server| python(server, "body_too_large"));
    }
}

#[test]
fn a_slowloris_gets_408_from_the_request_deadline() {
    if !have("python3") {
        return;
    }
    // An idle timeout far away: only the request deadline can end the drip.
    let args = [
        "--request-timeout-ms",
        "1000",
        "--idle-timeout-ms",
        "600000",
    ];
    on_every_backend(&args, |server| python(server, "slowloris"));
}

/// A connection to `server` whose reads and writes are bounded.
fn client(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads until the server closes; a timeout fails.
fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return,
            Err(error) => panic!("the connection stayed open: {error}"),
        }
    }
}

#[test]
fn an_idle_connection_is_closed() {
    on_every_backend(&["--idle-timeout-ms", "200"], |server| {
        let mut stream = client(server);
        stream
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let mut buf = [0; 4096];
        while !reply.ends_with(b"Hello, World!") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed before the reply");
            reply.extend_from_slice(&buf[..n]);
        }
        expect_closed(&mut stream);
    });
}

#[test]
fn sigterm_and_sigint_close_connections_and_exit_0() {
    for (backend, signal) in BACKENDS
        .into_iter()
        .zip([Signal::TERM, Signal::INT, Signal::TERM])
    {
        let Some(mut server) = Server::start(backend, &[]) else {
            continue;
        };
        let mut kept = client(&server);
        kept.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut reply = [0; 13];
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            kept.read_exact(&mut reply[..1]).unwrap();
            head.push(reply[0]);
        }
        kept.read_exact(&mut reply).unwrap();
        // A request half sent: the stop does not wait for it.
        let mut half = client(&server);
        half.write_all(b"GET /plain").unwrap();
        server.signal(signal);
        let status = server.wait();
        let log = server.log_when_done();
        assert!(status.success(), "{backend}: {status}\n{log}");
        assert!(log.contains("http: stopped: "), "{log}");
        expect_closed(&mut kept);
        expect_closed(&mut half);
    }
}

/// The README's excerpt of the handler is part of `examples/http.rs`, verbatim, so it
/// compiles and stays true.
#[test]
fn the_readme_excerpt_is_in_the_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme
        .split_once("## An HTTP server")
        .expect("the section")
        .1;
    let block = section.split_once("```rust\n").expect("a rust block").1;
    let block = block.split_once("```").expect("a closed block").0;
    let example = std::fs::read_to_string(format!("{root}/examples/http.rs")).unwrap();
    assert!(
        example.contains(block),
        "README.md's http excerpt is not in examples/http.rs: change both together"
    );
}
