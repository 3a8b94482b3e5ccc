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
    start_command(Command::new(example_path()), backend)
}

/// Starts `command` (the example, perhaps behind a wrapper) on 127.0.0.1:0 and reads the
/// address it listens on.
fn start_command(mut command: Command, backend: &str) -> (Server, SocketAddr) {
    command
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command.env("DISPATCH_BACKEND", backend);
    let mut child = command.spawn().expect("the example is built by cargo test");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("listening on ADDR");
    (server, addr)
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
    let backends: &[&str] = if cfg!(target_os = "linux") {
        &["auto", "epoll", "kqueue-fake"]
    } else {
        &["auto"]
    };
    for backend in backends {
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
    stream.write_all(b"x").unwrap();
    let mut byte = [0];
    stream.read_exact(&mut byte).unwrap();
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
    let backends: &[&str] = if cfg!(target_os = "linux") {
        &["auto", "epoll", "kqueue-fake"]
    } else {
        &["auto"]
    };
    for backend in backends {
        // 16 descriptors: the standard three, the listener and the loop's own two or three
        // leave room for about ten connections, so some of these sixteen clients find the
        // server out of descriptors (EMFILE on accept) for certain.
        let mut command = Command::new("prlimit");
        command.arg("--nofile=16:16").arg(example_path());
        let (_server, addr) = start_command(command, backend);
        let mut clients: Vec<TcpStream> = (0..16).map(|_| client(addr)).collect();
        // The first connections are served while later accepts fail with EMFILE.
        ping(&mut clients[0]);
        ping(&mut clients[1]);
        // Closing some frees descriptors: the server resumes accepting and serves everyone
        // still waiting in the backlog.
        clients.drain(..8);
        for stream in &mut clients {
            ping(stream);
        }
    }
}
