//! Dropping the loop with operations in flight: no undefined behaviour, no descriptor leaked.
//!
//! Counting `/proc/self/fd` is only meaningful when no other test opens descriptors at the
//! same time, so the test re-runs itself alone in a child process.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use dispatch_loop::{BufResult, Io, Options, Tag};

use crate::check;

/// Open descriptors below 4096, probed with `fcntl(F_GETFD)`: portable where `/proc` and
/// `/dev/fd` are not (FreeBSD without fdescfs).
pub(crate) fn open_fds() -> usize {
    (0..4096)
        .filter(|&fd| {
            // SAFETY: the borrow carries the number into one fcntl, which only asks whether
            // it is open.
            #[allow(unsafe_code)]
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_getfd(fd).is_ok()
        })
        .count()
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
        let parked = u64::from(check::on_io_uring(&io));
        assert_eq!(io.stats().overflow_parked, parked);
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
    if check::child_role().is_some() {
        return drop_with_everything_in_flight();
    }
    let test = "drop_in_flight::drop_with_operations_in_flight_leaks_no_descriptor";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    check::in_child(test, "drop", backend.as_deref());
}
