//! `Waker`: wakes a loop from any thread. An eventfd on io_uring and epoll (the loop's
//! wake-up wait reads it, and its counter counts the wake-ups); kqueue's `EVFILT_USER`
//! elsewhere, with the count kept beside it in an atomic.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A handle that wakes its loop from any thread. Cloning is cheap; wake-ups that arrive
/// before the loop waits are counted, not lost, and several coalesce into one completion of
/// `Io::wait_wakeup`. A waker that outlives its loop is harmless: `wake` returns `Ok` and
/// touches nothing else.
///
/// ```
/// use dispatch_loop::{Io, Options};
///
/// let mut io: Io<Vec<u64>> = Io::new(&Options::new(4)).expect("a backend");
/// let waker = io.waker();
/// let thread = std::thread::spawn(move || waker.wake().expect("wake"));
/// io.wait_wakeup(0, |woken: &mut Vec<u64>, _io, _tag, count| woken.push(count.unwrap()))
///     .expect("a free slot");
/// let mut woken = Vec::new();
/// io.run_until_idle(&mut woken).expect("run");
/// thread.join().unwrap();
/// assert_eq!(woken, vec![1]);
/// ```
///
/// `Waker` is `Send + Sync` (checked at compile time) and cheap to clone: hand a clone to
/// each thread that needs to wake the loop. The loop itself, [`crate::Io`], is not `Send`.
#[derive(Clone, Debug)]
pub struct Waker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    signal: Signal,
    /// Wake-ups not yet taken, where the signal itself does not count them.
    count: AtomicU64,
}

#[derive(Debug)]
enum Signal {
    #[cfg(target_os = "linux")]
    EventFd(std::os::fd::OwnedFd),
    Notifier(sys_kqueue::Notifier),
    /// The simulator: wake-ups are only counted; the simulated loop looks at the count on
    /// every turn.
    #[cfg(feature = "sim")]
    Simulated,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Waker>();
};

impl Waker {
    /// An eventfd waker; `nonblocking` for readiness backends, which read it directly.
    #[cfg(target_os = "linux")]
    pub(crate) fn with_eventfd(nonblocking: bool) -> io::Result<Waker> {
        use rustix::event::EventfdFlags;
        let mut flags = EventfdFlags::CLOEXEC;
        if nonblocking {
            flags |= EventfdFlags::NONBLOCK;
        }
        let fd = rustix::event::eventfd(0, flags)?;
        Ok(Waker::from_signal(Signal::EventFd(fd)))
    }

    /// A waker that triggers a kqueue user event.
    pub(crate) fn with_notifier(notifier: sys_kqueue::Notifier) -> Waker {
        Waker::from_signal(Signal::Notifier(notifier))
    }

    /// A waker for the simulator, which counts wake-ups and signals nothing.
    #[cfg(feature = "sim")]
    pub(crate) fn simulated() -> Waker {
        Waker::from_signal(Signal::Simulated)
    }

    fn from_signal(signal: Signal) -> Waker {
        Waker {
            shared: Arc::new(Shared {
                signal,
                count: AtomicU64::new(0),
            }),
        }
    }

    /// The eventfd, for backends that read it.
    #[cfg(target_os = "linux")]
    pub(crate) fn eventfd(&self) -> Option<std::os::fd::RawFd> {
        match &self.shared.signal {
            #[cfg(target_os = "linux")]
            Signal::EventFd(fd) => Some(std::os::fd::AsRawFd::as_raw_fd(fd)),
            Signal::Notifier(_) => None,
            #[cfg(feature = "sim")]
            Signal::Simulated => None,
        }
    }

    /// Takes the wake-ups counted beside a user-event signal.
    pub(crate) fn take_count(&self) -> u64 {
        // Acquire pairs with the Release increment in `wake`: whatever the waking thread wrote
        // before waking is visible to the callback that runs for it.
        self.shared.count.swap(0, Ordering::Acquire)
    }

    /// Wakes the loop: completes its pending `wait_wakeup`, or the next one scheduled.
    ///
    /// # Errors
    /// Only what `write(2)` on an eventfd or `kevent(2)` can return; a saturated eventfd
    /// counter (`EAGAIN`) already guarantees a wake-up and is not an error.
    pub fn wake(&self) -> io::Result<()> {
        match &self.shared.signal {
            #[cfg(target_os = "linux")]
            Signal::EventFd(fd) => match rustix::io::write(fd, &1u64.to_ne_bytes()) {
                Ok(8) => Ok(()),
                Ok(n) => panic!("eventfd write wrote {n} bytes, not 8"),
                Err(rustix::io::Errno::AGAIN) => Ok(()),
                Err(errno) => Err(errno.into()),
            },
            Signal::Notifier(notifier) => {
                // Count first, then signal: the loop that sees the signal sees the count
                // (a count taken early just makes a later signal find nothing new).
                self.shared.count.fetch_add(1, Ordering::Release);
                notifier.notify()
            }
            #[cfg(feature = "sim")]
            Signal::Simulated => {
                // Release pairs with the Acquire swap in `take_count`, as above.
                self.shared.count.fetch_add(1, Ordering::Release);
                Ok(())
            }
        }
    }
}
