//! The configured limits: `--max-connections` closes new connections at once (and counts
//! them) while the existing ones keep being served, and `--idle-timeout` closes a connection
//! that stays idle while a busy one lives on.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::check::{self, Backend, Options, Signal};

every_backend!(max_connections, idle_timeout);

/// `--max-connections 2`: a third connection is closed at once and counted as refused while
/// the first two still echo; once one of them leaves, a new connection is served.
fn max_connections(backend: Backend) {
    let mut options = Options::new(backend);
    options.threads = 1;
    options.args = &["--max-connections", "2"];
    let Some(server) = check::start(&options) else {
        return;
    };
    let mut first = server.connect();
    check::echo(&mut first, b"first");
    let mut second = server.connect();
    check::echo(&mut second, b"second");
    let mut third = server.connect();
    // The send may already fail if the close raced ahead of it; the read decides.
    let _ = third.write_all(b"third");
    check::assert_closed(&mut third, Duration::from_secs(5));
    check::echo(&mut first, b"first, after the third was refused");
    check::echo(&mut second, b"second, after the third was refused");
    drop(first);
    let mut refused = 1;
    let mut fourth = loop {
        // The server may not have seen the first one leave yet: each refused attempt is
        // counted, and retried, at most 50 times 100 ms apart.
        assert!(refused < 50, "no connection accepted after one of two left");
        let mut stream = server.connect();
        if served(&mut stream, b"fourth") {
            break stream;
        }
        refused += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    check::echo(&mut second, b"second, still served");
    check::echo(&mut fourth, b"fourth, still served");
    let stopped = server.stop(Signal::TERM);
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(stopped.summary.count("refused"), refused, "{stopped:?}");
}

/// Whether the server echoes `message` on `stream` (false if it closes it instead).
fn served(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut echoed = vec![0; message.len()];
    match stream.read_exact(&mut echoed) {
        Ok(()) => {
            check::assert_same(message, &echoed);
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => panic!("neither an echo nor a close: {e}"),
    }
}

/// `--idle-timeout 1`: a connection idle after one echo is closed (within a few seconds),
/// while another that echoes every 100 ms for 2.5 s stays open; the summary counts exactly
/// one idle timeout.
fn idle_timeout(backend: Backend) {
    let mut options = Options::new(backend);
    options.threads = 1;
    options.args = &["--idle-timeout", "1"];
    let Some(server) = check::start(&options) else {
        return;
    };
    let mut idle = server.connect();
    check::echo(&mut idle, b"then silence");
    let mut busy = server.connect();
    for round in 0..25 {
        check::echo(&mut busy, format!("busy {round}").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    check::assert_closed(&mut idle, Duration::from_secs(5));
    check::echo(&mut busy, b"busy, after the idle one was closed");
    let stopped = server.stop(Signal::TERM);
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(stopped.summary.count("idle timeouts"), 1, "{stopped:?}");
}
