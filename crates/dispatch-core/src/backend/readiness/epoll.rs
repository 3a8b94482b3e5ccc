//! The epoll poller (Linux): each descriptor registered once with `epoll_ctl(ADD)`,
//! edge-triggered for both directions (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`), removed
//! with `epoll_ctl(DEL)` before the loop closes it; harvested with `epoll_pwait2`
//! (nanosecond timeouts) where the kernel has it (5.11) and `epoll_wait` (milliseconds,
//! rounded up: never early) where it does not.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use super::table::{Dir, Dirs, ALL};
use super::{Poller, Readiness, EVENTS_MAX, WORKERS_FD};
use crate::stats::Stats;
use crate::waker::Waker;

/// The epoll instance, its event buffer, and the eventfd wakers write to.
pub(crate) struct EpollPoller {
    epoll: OwnedFd,
    events: Vec<Event>,
    waker: Waker,
    /// The file workers' eventfd, registered level-triggered (read when reported).
    workers_signal: Option<Waker>,
    pwait2: bool,
}

impl EpollPoller {
    /// `epoll_create1(EPOLL_CLOEXEC)` and a non-blocking eventfd for wake-ups. Probes
    /// `epoll_pwait2` when `use_pwait2` allows it.
    pub(crate) fn new(use_pwait2: bool) -> io::Result<EpollPoller> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let waker = Waker::with_eventfd(true)?;
        let mut poller = EpollPoller {
            epoll,
            events: Vec::with_capacity(EVENTS_MAX),
            waker,
            workers_signal: None,
            pwait2: false,
        };
        poller.pwait2 = use_pwait2 && poller.probe_pwait2();
        Ok(poller)
    }

    /// Whether `epoll_pwait2` works here (ENOSYS before 5.11, or under some seccomp filters).
    fn probe_pwait2(&mut self) -> bool {
        !matches!(
            self.pwait2_call(Some(Duration::ZERO)),
            Err(Errno::NOSYS | Errno::PERM)
        )
    }

    /// `epoll_pwait2(epfd, events, maxevents, timeout, NULL, 0)` into `self.events`.
    fn pwait2_call(&mut self, timeout: Option<Duration>) -> Result<usize, Errno> {
        let timespec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let timespec_ptr = timespec
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const _);
        self.events.clear();
        let capacity = self.events.capacity();
        // SAFETY: `events` has room for `capacity` entries of the kernel's `epoll_event`
        // layout (rustix's `Event` is `repr(C)`, packed where the kernel's is); the timespec
        // outlives the call; a null sigmask with size 0 means "no mask".
        let result = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                capacity as libc::c_int,
                timespec_ptr,
                std::ptr::null::<libc::sigset_t>(),
                0_usize,
            )
        };
        self.took_events(result, capacity)
    }

    /// Records the events a wait syscall returned (`result`: its count, or -1 with `errno`).
    fn took_events(&mut self, result: i64, capacity: usize) -> Result<usize, Errno> {
        if result < 0 {
            return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        let count = usize::try_from(result).expect("non-negative count");
        assert!(count <= capacity);
        // SAFETY: the kernel initialised the first `count` entries, within the capacity.
        unsafe { self.events.set_len(count) };
        Ok(count)
    }

    /// `epoll_wait(epfd, events, maxevents, timeout_ms)` into `self.events`: the millisecond
    /// wait every kernel has (glibc and musl make it `epoll_pwait` with no mask where the
    /// architecture has no `epoll_wait`, as on aarch64; never `epoll_pwait2`).
    fn wait_call(&mut self, timeout_ms: libc::c_int) -> Result<usize, Errno> {
        assert!(
            timeout_ms >= -1,
            "a negative timeout other than -1 (forever)"
        );
        self.events.clear();
        let capacity = self.events.capacity();
        assert!(capacity > 0, "epoll_wait needs room for one event");
        // SAFETY: `events` has room for `capacity` entries of the kernel's `epoll_event`
        // layout (rustix's `Event` is `repr(C)`, packed where the kernel's is, as libc's
        // `epoll_event` is); the kernel writes at most `capacity` of them.
        let result = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr().cast::<libc::epoll_event>(),
                libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX),
                timeout_ms,
            )
        };
        self.took_events(i64::from(result), capacity)
    }
}

/// `epoll_wait`'s timeout for `timeout`: -1 (forever) for `None`, else milliseconds rounded
/// up (never early) and clamped to `c_int::MAX` (24.8 days). A clamped wait returns with no
/// events before the caller's deadline, which only makes the loop turn once more.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    let Some(timeout) = timeout else {
        return -1;
    };
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    assert!(ms >= 0);
    ms
}

// rustix's `Event` must be the kernel's `epoll_event` for the raw calls to fill it.
const _: () = assert!(size_of::<Event>() == size_of::<libc::epoll_event>());
const _: () = assert!(align_of::<Event>() == align_of::<libc::epoll_event>());

impl Poller for EpollPoller {
    fn register(
        &mut self,
        fd: RawFd,
        _dir: Dir,
        likely_registered: bool,
        stats: &mut Stats,
    ) -> io::Result<Dirs> {
        assert!(fd >= 0);
        // SAFETY: the borrow carries the number into epoll_ctl only; a closed descriptor is
        // EBADF.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        let data = EventData::new_u64(fd as u64);
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        stats.syscalls += 1;
        if likely_registered {
            // Modifying reports the current state once, as adding does.
            match epoll::modify(&self.epoll, source, data, flags) {
                Err(Errno::NOENT) => stats.syscalls += 1,
                result => return result.map(|()| ALL).map_err(io::Error::from),
            }
        }
        match epoll::add(&self.epoll, source, data, flags) {
            Ok(()) => Ok(ALL),
            // Registered by an earlier entry of this descriptor (the engine forgets idle
            // descriptors, not their registrations). Its edges went to that entry: modify it
            // (the same flags), which reports the current state once, as an add does, so
            // that a state already reported (the peer's close) is not waited for again.
            Err(Errno::EXIST) => {
                stats.syscalls += 1;
                epoll::modify(&self.epoll, source, data, flags)
                    .map(|()| ALL)
                    .map_err(io::Error::from)
            }
            Err(errno) => Err(errno.into()),
        }
    }

    fn deregister(&mut self, fd: RawFd, stats: &mut Stats) {
        assert!(fd >= 0);
        // SAFETY: as in `register`.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        stats.syscalls += 1;
        // Named, ignored errors: ENOENT (not registered under this file: the program closed
        // the number and opened another behind the loop's back), EPERM (the same, and the
        // number is now a file epoll cannot watch, a regular file or a directory) and EBADF
        // (already closed); either way nothing of ours is left under this number to end.
        match epoll::delete(&self.epoll, source) {
            Ok(()) | Err(Errno::NOENT | Errno::PERM | Errno::BADF) => {}
            Err(errno) => panic!("epoll_ctl(DEL, {fd}): {errno}"),
        }
    }

    fn has_pending_changes(&self) -> bool {
        false
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<Readiness>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += 1;
        let result = if self.pwait2 {
            self.pwait2_call(timeout)
        } else {
            self.wait_call(timeout_ms(timeout))
        };
        match result {
            Ok(_) => {}
            // A signal ended the wait early: no events this turn; the loop turns again.
            Err(Errno::INTR) => return Ok(()),
            Err(errno) => return Err(errno.into()),
        }
        for event in &self.events {
            // Copies: the kernel's layout is packed on x86_64, so fields cannot be borrowed.
            let Event { flags, data, .. } = *event;
            // A hang-up, the peer's close or an error: edges like any other under EPOLLET,
            // reported in both directions so that every waiter sees the end.
            let hangup = flags.intersects(EventFlags::HUP | EventFlags::ERR | EventFlags::RDHUP);
            let mut dirs = Dirs::NONE;
            if flags.contains(EventFlags::IN) || hangup {
                dirs = dirs.with(Dir::Read);
            }
            if flags.contains(EventFlags::OUT) || hangup {
                dirs = dirs.with(Dir::Write);
            }
            let fd = data.u64() as RawFd;
            assert!(ready.len() < ready.capacity(), "ready list never grows");
            ready.push(Readiness {
                fd,
                dirs,
                closed: hangup,
                error: None,
            });
        }
        Ok(())
    }

    fn events_max(&self) -> usize {
        EVENTS_MAX
    }

    fn wakeup_fd(&self) -> RawFd {
        self.waker.eventfd().expect("the epoll waker is an eventfd")
    }

    fn take_wakeups(&mut self, stats: &mut Stats) -> io::Result<Option<u64>> {
        read_eventfd(&self.waker, stats)
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn workers_signal(&mut self) -> io::Result<Waker> {
        assert!(
            self.workers_signal.is_none(),
            "one workers signal per poller"
        );
        let signal = Waker::with_eventfd(true)?;
        let fd = signal.eventfd().expect("an eventfd waker");
        // SAFETY: the eventfd is owned by `signal`, kept in `self` for the poller's life.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        // Level-triggered and persistent: reported on every wait until read.
        let data = EventData::new_u64(WORKERS_FD as u64);
        epoll::add(&self.epoll, source, data, EventFlags::IN)?;
        self.workers_signal = Some(signal.clone());
        Ok(signal)
    }

    fn take_workers_signal(&mut self, stats: &mut Stats) -> io::Result<()> {
        let signal = self.workers_signal.as_ref().expect("a workers signal");
        read_eventfd(signal, stats).map(|_| ())
    }
}

/// Reads (and so resets) the counter of the non-blocking eventfd behind `waker`: `None` when
/// it was zero.
fn read_eventfd(waker: &Waker, stats: &mut Stats) -> io::Result<Option<u64>> {
    let fd = waker.eventfd().expect("an eventfd waker");
    // SAFETY: the eventfd is owned by `waker`, which outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut count = [0_u8; 8];
    loop {
        stats.syscalls += 1;
        return match rustix::io::read(fd, &mut count) {
            Ok(8) => Ok(Some(u64::from_ne_bytes(count))),
            Ok(n) => panic!("eventfd read returned {n} bytes, not 8"),
            Err(Errno::AGAIN) => Ok(None),
            Err(Errno::INTR) => continue,
            Err(errno) => Err(errno.into()),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::timeout_ms;

    /// `epoll_wait`'s millisecond timeout is rounded up (never early) and clamped to what a
    /// `c_int` holds (a longer wait returns early and the loop waits again), never passed on
    /// to `epoll_pwait2` the way rustix's `epoll::wait` does.
    #[test]
    fn the_millisecond_timeout_rounds_up_and_clamps() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_millis(7))), 7);
        let longest = Duration::from_millis(libc::c_int::MAX as u64);
        assert_eq!(timeout_ms(Some(longest)), libc::c_int::MAX);
        assert_eq!(
            timeout_ms(Some(longest + Duration::from_nanos(1))),
            libc::c_int::MAX
        );
        assert_eq!(
            timeout_ms(Some(Duration::from_secs(30 * 24 * 3600))),
            libc::c_int::MAX
        );
        assert_eq!(
            timeout_ms(Some(Duration::from_nanos(u64::MAX))),
            libc::c_int::MAX
        );
        assert_eq!(timeout_ms(Some(Duration::MAX)), libc::c_int::MAX);
    }
}
