//! The README's main command, as a real process over real sockets: `echo_minimal` on
//! 127.0.0.1:0 under each backend, several clients at once, every byte echoed in order, and
//! end of stream answered by closing. `cargo test` builds examples before running tests; this
//! finds the binary beside the test's own.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The example binary: `target/<profile>/examples/echo_minimal`.
fn example_path() -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join("echo_minimal")
}

/// The running example; killed when dropped, so a failing test leaves nothing behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(backend: &str) -> (Server, SocketAddr) {
    start_command(Command::new(example_path()), backend, &[])
}

/// Starts `command` (the example, perhaps behind a wrapper) on 127.0.0.1:0 with `args` after
/// the address, and reads the address it listens on from its start-up lines.
fn start_command(mut command: Command, backend: &str, args: &[&str]) -> (Server, SocketAddr) {
    command
        .arg("127.0.0.1:0")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command.env("DISPATCH_BACKEND", backend);
    let mut child = command.spawn().expect("the example is built by cargo test");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let server = Server(child);
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("echo_minimal: listening on ") {
            return (server, addr.parse().expect("listening on ADDR"));
        }
    }
    panic!("the example ended before listening");
}

/// Every backend this platform has.
fn backends() -> &'static [&'static str] {
    if cfg!(target_os = "linux") {
        &["auto", "epoll", "kqueue-fake"]
    } else {
        &["auto"]
    }
}

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    // Bounded: a server that stops reading or writing fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `len` bytes of a pattern in uneven chunks while reading the echo on another thread.
fn echo_round_trip(addr: SocketAddr, seed: u8, len: usize) {
    let mut stream = client(addr);
    let expected: Vec<u8> = (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect();
    let mut reader = stream.try_clone().unwrap();
    let echoed = std::thread::spawn(move || {
        let mut got = vec![0; len];
        reader.read_exact(&mut got).unwrap();
        got
    });
    for chunk in expected.chunks(1000 + usize::from(seed) * 37) {
        stream.write_all(chunk).unwrap();
    }
    assert!(
        echoed.join().unwrap() == expected,
        "client {seed}: bytes lost or reordered"
    );
    // End of stream: the server closes, and the client sees end of stream too.
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn echoes_every_byte_in_order_for_several_clients_on_every_backend() {
    for backend in backends() {
        let (_server, addr) = start(backend);
        let clients: Vec<_> = (0..8_u8)
            .map(|seed| std::thread::spawn(move || echo_round_trip(addr, seed, 256 * 1024)))
            .collect();
        for client in clients {
            client
                .join()
                .unwrap_or_else(|_| panic!("a client failed on {backend}"));
        }
        // The server keeps serving after those connections ended.
        echo_round_trip(addr, 99, 10);
    }
}

/// One byte there and back.
fn ping(stream: &mut TcpStream) {
    ping_or(stream, "a client");
}

/// `ping`, naming `who` when the echo does not come.
fn ping_or(stream: &mut TcpStream, who: &str) {
    stream.write_all(b"x").unwrap();
    let mut byte = [0];
    if let Err(error) = stream.read_exact(&mut byte) {
        panic!("{who}: no echo: {error}");
    }
    assert_eq!(&byte, b"x");
}

#[test]
fn out_of_descriptors_pauses_accepting_and_keeps_serving() {
    if !Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return eprintln!("skipped: no prlimit(1) to lower the example's descriptor limit");
    }
    for backend in backends() {
        // 16 descriptors. The standard three, the listener, the loop's own (two to four) and
        // whatever the test harness lets the child inherit leave some room: counted from
        // the running server, so that the test knows how many connections fit.
        let mut command = Command::new("prlimit");
        command.arg("--nofile=16:16").arg(example_path());
        let (server, addr) = start_command(command, backend, &[]);
        let fits = 16 - open_descriptors(&server);
        assert!(fits >= 3, "{backend}: room for {fits} connections only");
        // Four more clients than fit: some accepts fail with EMFILE, for certain.
        let mut clients: Vec<TcpStream> = (0..fits + 4).map(|_| client(addr)).collect();
        // The first connections are served while later accepts fail with EMFILE.
        ping(&mut clients[0]);
        ping(&mut clients[1]);
        // Closing four frees descriptors: the server resumes accepting and serves everyone
        // still waiting in the backlog, exactly as many as fit.
        clients.drain(..4);
        for (i, stream) in clients.iter_mut().enumerate() {
            ping_or(
                stream,
                &format!("{backend}: client {} of {}", i + 4, fits + 4),
            );
        }
    }
}

/// How many descriptors `server`'s process has open (Linux's `/proc`: `prlimit` is Linux's).
fn open_descriptors(server: &Server) -> usize {
    let dir = format!("/proc/{}/fd", server.0.id());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{dir}: {error}"))
        .count()
}

/// Issue 6, item 4: with every connection entry taken, a client leaving (its close then in
/// flight) and a new one arriving in the same turn once made the example run out of operation
/// slots and panic (within 20 to 60 rounds here, on every backend). With two connections the
/// table is full from the start; each round has a client leave and another arrive back to
/// back, and the server must keep serving everyone.
#[test]
fn at_its_connection_limit_it_keeps_serving_and_queues_new_clients() {
    for backend in backends() {
        let (mut server, addr) = start_command(Command::new(example_path()), backend, &["2"]);
        let mut clients = vec![client(addr), client(addr)];
        for stream in &mut clients {
            ping(stream);
        }
        for round in 0..300 {
            // End of stream for one entry, and a new connection, reach the server together.
            drop(clients.remove(round % 2));
            clients.insert(round % 2, client(addr));
            ping(&mut clients[round % 2]);
        }
        // A third client waits in the listen backlog while both entries are taken, and is
        // served once one leaves.
        let mut waiting = client(addr);
        waiting.write_all(b"w").unwrap();
        drop(clients.remove(0));
        let mut byte = [0];
        waiting.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"w");
        ping(&mut clients[0]);
        let exited = server.0.try_wait().unwrap();
        assert!(exited.is_none(), "{backend}: the server exited: {exited:?}");
    }
}

/// Runs the example to completion with `args` and `DISPATCH_BACKEND=backend`; returns its exit
/// code and standard error.
fn run_to_exit(args: &[&str], backend: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(example_path());
    command.args(args).stdout(Stdio::null());
    match backend {
        Some(backend) => command.env("DISPATCH_BACKEND", backend),
        None => command.env_remove("DISPATCH_BACKEND"),
    };
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Issue 7, item 3: every error is one line naming what was wrong, with exit status 1.
#[test]
fn errors_say_what_was_wrong_and_exit_with_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: &[(&[&str], Option<&str>, String)] = &[
        (
            &["127.0.0.1:0"],
            Some("bogus"),
            "echo_minimal: DISPATCH_BACKEND=\"bogus\" names no backend: use auto, io_uring, \
             epoll, kqueue or kqueue-fake"
                .into(),
        ),
        (
            &[&taken],
            None,
            format!(
                "echo_minimal: cannot listen on {taken}: {}",
                addr_in_use_phrase()
            ),
        ),
        (
            &["127.0.0.1"],
            None,
            "echo_minimal: cannot listen on \"127.0.0.1\": expected HOST:PORT, such as \
             127.0.0.1:7878"
                .into(),
        ),
        (
            &["127.0.0.1:0", "2", "extra"],
            None,
            "echo_minimal: unexpected argument \"extra\" (usage: echo_minimal [ADDR \
             [CONNECTIONS]]; --help says more)"
                .into(),
        ),
        (
            &["127.0.0.1:0", "0"],
            None,
            "echo_minimal: CONNECTIONS is \"0\": expected a number from 1 to 1000000".into(),
        ),
    ];
    for (args, backend, expected) in cases {
        let (code, stderr) = run_to_exit(args, *backend);
        // An older kernel's notice that io_uring runs without some set-up flags is not the
        // example's to word.
        let stderr: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.contains("refuses io_uring set-up flag"))
            .collect();
        assert_eq!(stderr.join("\n").trim_end(), expected, "args {args:?}");
        assert_eq!(code, Some(1), "args {args:?}");
    }
    if cfg!(target_os = "linux") {
        let (code, stderr) = run_to_exit(&["127.0.0.1:0"], Some("kqueue"));
        assert!(
            stderr.starts_with(
                "echo_minimal: cannot start the loop: the kqueue backend does not \
                 exist on this platform"
            ),
            "{stderr}"
        );
        assert_eq!(code, Some(1));
    }
}

/// The backend is printed at start, and its name may come in any case, with spaces around.
#[test]
fn prints_its_backend_and_reads_its_name_in_any_case() {
    let forced: &[(&str, &str)] = if cfg!(target_os = "linux") {
        &[(" EPOLL ", "epoll"), ("Kqueue-Fake", "kqueue-fake")]
    } else {
        &[(" KQUEUE ", "kqueue")]
    };
    for &(given, expected) in forced {
        let mut child = Command::new(example_path())
            .arg("127.0.0.1:0")
            .env("DISPATCH_BACKEND", given)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let _server = Server(child);
        let first = stdout.lines().next().unwrap().unwrap();
        let prefix = format!("echo_minimal: backend {expected}; up to 1024 connections");
        assert!(first.starts_with(&prefix), "{given:?}: {first}");
    }
}

/// `EADDRINUSE` as the example words it, in this C library's words: glibc says "address
/// already in use", musl (the kernel-matrix's static builds) "address in use".
fn addr_in_use_phrase() -> String {
    let text = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
    let text = text.split(" (os error ").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}
