//! `Waker`: wakes a loop from any thread. On Linux an eventfd that the loop reads through
//! the ring; `Io::wait_wakeup` schedules that read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A handle that wakes its loop from any thread. Cloning is cheap; wake-ups that arrive
/// before the loop waits are counted, not lost, and several coalesce into one completion of
/// `Io::wait_wakeup`.
#[derive(Clone, Debug)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Waker>();
};

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        Ok(Waker { fd: Arc::new(fd) })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes the loop: completes its pending `wait_wakeup`, or the next one scheduled.
    ///
    /// # Errors
    /// Only what `write(2)` on an eventfd can return; a saturated counter (`EAGAIN`, after
    /// 2^64 - 2 unread wake-ups) already guarantees a wake-up and is not an error.
    pub fn wake(&self) -> io::Result<()> {
        match rustix::io::write(self.fd.as_fd(), &1u64.to_ne_bytes()) {
            Ok(8) => Ok(()),
            Ok(n) => panic!("eventfd write wrote {n} bytes, not 8"),
            Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }
}
