//! loadgen against echo servers of the test's own, on loopback: a faithful one (the run
//! succeeds) and one that flips a bit (the run fails as FAILED, naming the wrong byte), over
//! long-lived connections, pipelined, large messages and churn, and through the `--control`
//! commands the benchmark harness uses. No test judges a number or a duration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
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
    }
    writeln!(stdin, "stop").unwrap();
    let last = next();
    assert!(last.starts_with("status=ok "), "{last}");
    assert!(child.wait().unwrap().success());
}
