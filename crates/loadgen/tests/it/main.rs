//! loadgen against echo servers of the test's own, on loopback: a faithful one (the run
//! succeeds) and one that flips a bit (the run fails as FAILED, naming the wrong byte), over
//! long-lived connections, pipelined, large messages and churn, and through the `--control`
//! commands the benchmark harness uses; and with `--udp`, UDP echo servers of the test's
//! own: a faithful one, one that drops datagrams (loss is counted, the run succeeds) and one
//! that flips a bit (the run fails). No test judges a number or a duration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};

/// An echo server, a thread per connection. With `corrupt_at`, each connection's byte at
/// that offset comes back with its lowest bit flipped.
fn dispatch_echo(corrupt_at: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0_u8; 64 * 1024];
                let mut offset = 0;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(at) = corrupt_at.filter(|&at| offset <= at && at < offset + n) {
                        buf[at - offset] ^= 1;
                    }
                    offset += n;
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Runs loadgen briefly against `addr`: whether it succeeded, its stdout and its stderr.
fn check(addr: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg(format!("--addr={addr}"))
        .args(["--warmup=0.05", "--duration=0.2"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

const LOADS: [&[&str]; 4] = [
    &["--connections=3"],
    &["--connections=3", "--depth=16", "--threads=2"],
    &["--connections=2", "--size=20000"],
    &["--churn", "--size=2000"],
];

#[test]
fn a_faithful_echo_passes() {
    let addr = dispatch_echo(None);
    for args in LOADS {
        let (ok, stdout, stderr) = check(addr, args);
        assert!(ok, "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("status=ok"), "{args:?}: {stdout}");
        assert!(stdout.contains("errors=0"), "{args:?}: {stdout}");
    }
}

#[test]
fn a_wrong_byte_fails_the_run() {
    let addr = dispatch_echo(Some(1000));
    for args in LOADS {
        let (ok, stdout, stderr) = check(addr, args);
        assert!(!ok, "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("status=FAILED"), "{args:?}: {stdout}");
        assert!(stderr.contains("wrong byte"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_harness_times_the_window_through_stdin() {
    let addr = dispatch_echo(None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([&format!("--addr={addr}"), "--control", "--duration=30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert_eq!(next(), "connected");
    for command in ["start", "mark", "end"] {
        writeln!(stdin, "{command}").unwrap();
        let answer = next();
        assert!(answer.starts_with("mark messages="), "{command}: {answer}");
        assert!(answer.contains(" errors=0 "), "{command}: {answer}");
        assert!(answer.contains(" lost=0 "), "{command}: {answer}");
    }
    writeln!(stdin, "stop").unwrap();
    let last = next();
    assert!(last.starts_with("status=ok "), "{last}");
    assert!(child.wait().unwrap().success());
}

/// What a UDP echo server of the test's does to the datagrams it echoes.
#[derive(Clone, Copy)]
enum Udp {
    Faithful,
    /// Every `n`-th datagram (over all clients) is not echoed.
    DropEvery(u64),
    /// The byte at this offset of every datagram comes back with its lowest bit flipped.
    CorruptAt(usize),
}

/// A UDP echo server on one thread, `recv_from` then `send_to`.
fn udp_echo(mode: Udp) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0_u8; 64 * 1024];
        let mut count: u64 = 0;
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            count += 1;
            match mode {
                Udp::DropEvery(every) if count.is_multiple_of(every) => continue,
                Udp::CorruptAt(at) if at < n => buf[at] ^= 1,
                _ => {}
            }
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    addr
}

const UDP_LOADS: [&[&str]; 3] = [
    &["--udp", "--connections=3"],
    &["--udp", "--connections=4", "--depth=8", "--threads=2"],
    &["--udp", "--connections=2", "--size=1400"],
];

/// The value of `key=` in loadgen's final line.
fn field(stdout: &str, key: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("status=")).unwrap();
    let value = line
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='));
    value
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn a_faithful_udp_echo_passes() {
    let addr = udp_echo(Udp::Faithful);
    for args in UDP_LOADS {
        let (ok, stdout, stderr) = check(addr, args);
        assert!(ok, "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("status=ok"), "{args:?}: {stdout}");
        assert_eq!(field(&stdout, "errors"), 0, "{args:?}: {stdout}");
    }
}

#[test]
fn lost_datagrams_are_counted_not_fatal() {
    let addr = udp_echo(Udp::DropEvery(5));
    for args in UDP_LOADS {
        let (ok, stdout, stderr) = check(addr, &[args, &["--loss-timeout-ms=5"]].concat());
        assert!(ok, "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("status=ok"), "{args:?}: {stdout}");
        assert_eq!(field(&stdout, "errors"), 0, "{args:?}: {stdout}");
        assert!(0 < field(&stdout, "lost"), "{args:?}: {stdout}");
    }
}

#[test]
fn a_wrong_datagram_fails_the_run() {
    // Offset 20 is past the flow id and sequence number: the pattern catches it. Offset 3
    // is in the flow id: the echo names another flow.
    for (at, says) in [(20, "wrong byte"), (3, "an echo of flow")] {
        let addr = udp_echo(Udp::CorruptAt(at));
        for args in UDP_LOADS {
            let (ok, stdout, stderr) = check(addr, args);
            assert!(!ok, "{args:?}: {stdout}{stderr}");
            assert!(stdout.contains("status=FAILED"), "{args:?}: {stdout}");
            assert!(0 < field(&stdout, "errors"), "{args:?}: {stdout}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn udp_sizes_too_small_for_the_header_are_refused() {
    let addr = udp_echo(Udp::Faithful);
    let (ok, _, stderr) = check(addr, &["--udp", "--size=8"]);
    assert!(!ok);
    assert!(stderr.contains("--size"), "{stderr}");
}
