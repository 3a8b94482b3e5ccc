//! Dropping the loop with operations in flight: no undefined behaviour, no descriptor leaked.
//!
//! Counting `/proc/self/fd` is only meaningful when no other test opens descriptors at the
//! same time, so the test re-runs itself alone in a child process.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::Command;

use dispatch_core::{BufResult, Io, Options, Tag};

use crate::check;

const CHILD_ENV: &str = "DISPATCH_CORE_TEST_DROP_CHILD";

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn on_fd(_: &mut (), _: &mut Io<()>, _: Tag, _: io::Result<OwnedFd>) {
    panic!("no callback runs on drop");
}

fn on_buf(_: &mut (), _: &mut Io<()>, _: Tag, _: BufResult) {
    panic!("no callback runs on drop");
}

fn on_unit(_: &mut (), _: &mut Io<()>, _: Tag, _: io::Result<()>) {
    panic!("no callback runs on drop");
}

fn drop_with_everything_in_flight() {
    let before = open_fds();
    {
        let mut options = Options::new(16);
        options.uring.sq_entries = 4;
        let Some(mut io) = check::io::<()>(&options) else {
            return;
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_client, server) = check::tcp_pair();
        io.accept(1, check::fd(&listener), on_fd).unwrap();
        io.accept(2, check::fd(&listener), on_fd).unwrap();
        io.recv(3, check::fd(&server), Vec::with_capacity(1024), on_buf)
            .unwrap();
        io.timeout(4, 60_000_000_000, on_unit).unwrap();
        io.tick(&mut ()).unwrap();
        assert_eq!(io.in_flight(), 4);
        // This connection is accepted in the kernel; the socket it creates is never reaped
        // by a turn, so only the drop can close it.
        let _late = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // A parked close: the SQ (4 entries) is full of these, so the close waits for room.
        for tag in 5..9 {
            io.timeout(tag, 60_000_000_000, on_unit).unwrap();
        }
        let file = std::fs::File::open("/dev/null").unwrap();
        io.close(9, file.into(), on_unit).unwrap();
        assert_eq!(io.stats().overflow_parked, 1);
        drop(io);
    }
    assert_eq!(
        open_fds(),
        before,
        "descriptors leaked by dropping the loop"
    );
}

#[test]
fn drop_with_operations_in_flight_leaks_no_descriptor() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return drop_with_everything_in_flight();
    }
    let test = "drop_in_flight::drop_with_operations_in_flight_leaks_no_descriptor";
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads", "1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}
