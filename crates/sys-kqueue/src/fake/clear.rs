//! `EV_CLEAR` for the double's read and write filters, modelled with the kernel's own edges:
//! one inner epoll instance per filter, each descriptor in it edge-triggered (`EPOLLET`),
//! keyed by its registration's serial number. kqueue reports an `EV_CLEAR` event once per
//! change of state (new bytes, new room, the peer's close) and then resets it; `EPOLLET`
//! reports each such change once, including the state found when the descriptor is added,
//! as `EV_ADD` does. Linux only: elsewhere the real kqueue is there to test against.
//!
//! kqueue drops a descriptor's registrations when the number is closed, even if a `dup` keeps
//! the file open; epoll keeps an item while the file lives. So the double checks, at every
//! call, that each number still names the file it was registered with (`fstat`'s device and
//! inode), dropping the registration otherwise, and ignores events of items whose serial no
//! registration carries any more.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use crate::filter::Filter;

/// A file's identity: what a number named when it was registered.
pub(super) type Identity = (u64, u64);

/// `fstat(fd)`'s device and inode: `EBADF` for a closed number.
pub(super) fn identity(fd: usize) -> Result<Identity, Errno> {
    let fd = i32::try_from(fd).map_err(|_| Errno::BADF)?;
    if fd < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the borrow lasts for this one `fstat`, which only reads the file's metadata.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = rustix::fs::fstat(borrowed)?;
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

/// The two inner epoll instances.
pub(super) struct Edges {
    read: OwnedFd,
    write: OwnedFd,
    events: Vec<Event>,
}

/// An edge taken from an inner instance: the registration's serial, its filter, and whether
/// the peer closed or an error is pending (`EV_EOF`).
pub(super) struct Edge {
    pub(super) serial: u64,
    pub(super) filter: Filter,
    pub(super) eof: bool,
}

impl Edges {
    pub(super) fn new(events_max: usize) -> io::Result<Edges> {
        Ok(Edges {
            read: epoll::create(CreateFlags::CLOEXEC)?,
            write: epoll::create(CreateFlags::CLOEXEC)?,
            events: Vec::with_capacity(events_max.max(1)),
        })
    }

    fn instance(&self, filter: Filter) -> &OwnedFd {
        match filter {
            Filter::Read => &self.read,
            Filter::Write => &self.write,
            Filter::User => unreachable!("user events are not descriptors"),
        }
    }

    /// Watches `fd` for `filter`'s edges under `serial`; a watch already there is replaced,
    /// so the current state is reported again, as re-adding a kqueue event does.
    pub(super) fn watch(&self, filter: Filter, fd: usize, serial: u64) -> Result<(), Errno> {
        self.unwatch(filter, fd);
        let flags = match filter {
            Filter::Read => EventFlags::IN | EventFlags::RDHUP | EventFlags::ET,
            _ => EventFlags::OUT | EventFlags::ET,
        };
        let fd = i32::try_from(fd).map_err(|_| Errno::BADF)?;
        // SAFETY: the borrow carries the number into one epoll_ctl; closed is EBADF.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        epoll::add(
            self.instance(filter),
            borrowed,
            EventData::new_u64(serial),
            flags,
        )
    }

    /// Stops watching `fd` for `filter`. Errors are ignored: a closed number (`EBADF`) or one
    /// that names another file now (`ENOENT`) has no item of ours to remove; a stale item of
    /// a file a `dup` keeps open only reports a serial nobody carries.
    pub(super) fn unwatch(&self, filter: Filter, fd: usize) {
        let Ok(fd) = i32::try_from(fd) else {
            return;
        };
        // SAFETY: as in `watch`.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = epoll::delete(self.instance(filter), borrowed);
    }

    /// The instances, for the caller's `poll`: readable while they hold edges.
    pub(super) fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.read.as_fd(), self.write.as_fd()]
    }

    /// Takes every edge the instances hold, without blocking.
    pub(super) fn take(&mut self, mut f: impl FnMut(Edge)) -> io::Result<()> {
        for filter in [Filter::Read, Filter::Write] {
            loop {
                self.events.clear();
                let capacity = self.events.capacity();
                let instance = match filter {
                    Filter::Read => &self.read,
                    _ => &self.write,
                };
                let n = match epoll::wait(instance, spare_capacity(&mut self.events), Some(&zero()))
                {
                    Ok(n) => n,
                    Err(Errno::INTR) => continue,
                    Err(errno) => return Err(errno.into()),
                };
                for event in &self.events {
                    let Event { flags, data, .. } = *event;
                    let eof = flags.intersects(EventFlags::HUP | EventFlags::ERR | rdhup(filter));
                    f(Edge {
                        serial: data.u64(),
                        filter,
                        eof,
                    });
                }
                if n < capacity {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The peer's close counts as `EV_EOF` for the read filter only.
fn rdhup(filter: Filter) -> EventFlags {
    match filter {
        Filter::Read => EventFlags::RDHUP,
        _ => EventFlags::empty(),
    }
}

fn zero() -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }
}
