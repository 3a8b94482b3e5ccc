//! Edge-triggered registration and remembered readiness: the rules by which the engine tries
//! an operation, parks it, registers its descriptor, and forgets what it knew.
//!
//! - A descriptor is registered once, for both directions, edge-triggered (epoll `EPOLLET`,
//!   kqueue `EV_CLEAR`), the first time one of its operations parks; a table entry remembers
//!   that, and per direction whether the descriptor may be ready.
//! - An operation is tried first unless its direction is known drained (the last try said
//!   `EAGAIN`, or a short transfer on a stream socket), and parks only on `EAGAIN`. Its
//!   queue's turn comes with the next edge of that direction, which runs the queued
//!   operations in order until one would block again. Nothing is armed or re-armed per
//!   operation: the only syscalls are the operations' own and the wait.
//! - No edge is lost: the loop is one thread, readiness is cleared only right after the try
//!   that found the socket empty (or full), and any arrival after that try is a new edge the
//!   next wait reports; one edge serves every operation queued in its direction, since the
//!   queue runs until a try would block.
//! - The entry lives while the engine holds an operation on the descriptor (started, not
//!   reaped), and across the turn between a multishot's result and its re-arm; then it is
//!   forgotten, with no syscall. The program may close the descriptor or reuse its number
//!   once no operation of the loop is on it, so nothing the engine knew about it is kept:
//!   the next operation on that number starts fresh: it tries first, and registers again if
//!   it parks. Registering always makes the kernel report the current state once (epoll:
//!   `ADD`, or `MOD` where `ADD` answers `EEXIST` because the registration is still there;
//!   kqueue: `EV_ADD`), since the edges of what happened before went to the forgotten entry
//!   (a peer's close reported then is never reported again). A registration left in the
//!   kernel for a forgotten descriptor only reports edges the engine ignores, and goes with
//!   the descriptor's last close.
//! - Before the loop closes a descriptor it knows registered (by a live entry, or by the
//!   hint a forgotten one left), the registration ends (`Poller::deregister`). An accept's
//!   new descriptor resets any entry under its number: the kernel reused a number, so what
//!   was known of it is stale.

use std::os::fd::{AsRawFd, RawFd};

use super::ops::{self, Step};
use super::table::{Dir, Dirs, FdTable, Stream, ALL};
use super::{Engine, Place, Poller, Readiness};
use crate::operation::Args;
use crate::outbuf::GATHER_MAX;
use crate::pool::Pool;
use crate::stats::Stats;

/// `Engine::counted`'s "no descriptor".
pub(super) const UNCOUNTED: RawFd = RawFd::MIN + 1;

/// Drops one live operation from `fd`'s entry: when none are left the entry is forgotten, at
/// once (returning whether it had registered the descriptor), or (`goes_on`: a multishot the
/// loop re-arms before the next flush) at that flush if it was not re-armed.
pub(super) fn release(
    fds: &mut FdTable,
    went_idle: &mut Vec<RawFd>,
    fd: RawFd,
    goes_on: bool,
) -> Option<bool> {
    let at = fds
        .find(fd)
        .expect("a live operation's descriptor has an entry");
    let entry = fds.get(at);
    assert!(entry.live > 0);
    entry.live -= 1;
    if entry.live > 0 {
        return None;
    }
    assert!(entry.queues.iter().all(|queue| queue.is_empty()));
    if goes_on {
        assert!(went_idle.len() < went_idle.capacity(), "one per slot");
        went_idle.push(fd);
        return None;
    }
    let registered = entry.registered != Dirs::NONE;
    fds.remove(at);
    Some(registered)
}

/// Which descriptor numbers a forgotten entry left registered: a hint, never trusted for
/// correctness (registering reports the current state whichever syscall does it), only to
/// try epoll's `MOD` before `ADD` for a number a plain receive loop parks on again and again
/// (one syscall instead of `ADD`, `EEXIST`, `MOD`). A fixed bitset over the first
/// `HINT_FDS` numbers, allocated once; higher numbers get no hint.
///
/// A second bitset marks the numbers an accept on a stream listener just returned, so that
/// the connection's first short receive needs no `SO_TYPE` query (one syscall per
/// connection); the first operation on the number takes the mark. Unlike the registration
/// hint it is trusted, and that is sound unless the program closes the accepted socket
/// behind the loop's back and puts a datagram socket under its number before any operation
/// on it: then a short datagram counts as drained once.
pub(super) struct Hints {
    bits: Box<[u64]>,
    streams: Box<[u64]>,
}

/// The descriptor numbers `Hints` covers.
const HINT_FDS: usize = 1 << 16;

impl Hints {
    pub(super) fn new() -> Hints {
        Hints {
            bits: vec![0; HINT_FDS / 64].into_boxed_slice(),
            streams: vec![0; HINT_FDS / 64].into_boxed_slice(),
        }
    }

    pub(super) fn set(&mut self, fd: RawFd, registered: bool) {
        set_bit(&mut self.bits, fd, registered);
    }

    pub(super) fn get(&self, fd: RawFd) -> bool {
        get_bit(&self.bits, fd)
    }

    /// Marks `fd` as a stream socket an accept just returned (or unmarks it).
    pub(super) fn set_stream(&mut self, fd: RawFd, stream: bool) {
        set_bit(&mut self.streams, fd, stream);
    }

    /// Takes `fd`'s accepted-stream mark.
    pub(super) fn take_stream(&mut self, fd: RawFd) -> bool {
        let stream = get_bit(&self.streams, fd);
        set_bit(&mut self.streams, fd, false);
        stream
    }
}

fn set_bit(bits: &mut [u64], fd: RawFd, value: bool) {
    let Ok(n) = usize::try_from(fd) else {
        return;
    };
    if n < HINT_FDS {
        let bit = 1_u64 << (n % 64);
        if value {
            bits[n / 64] |= bit;
        } else {
            bits[n / 64] &= !bit;
        }
    }
}

fn get_bit(bits: &[u64], fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|n| n < HINT_FDS && bits[n / 64] & (1 << (n % 64)) != 0)
}

/// The direction and length of a transfer whose short result may say "drained".
fn transfer(args: &Args, pool: Option<&Pool>) -> Option<(Dir, usize)> {
    let cap = |len: usize| len.min(i32::MAX as usize);
    match args {
        Args::Recv { buf, .. } => Some((Dir::Read, cap(buf.capacity() - buf.len()))),
        // A datagram never says "drained": the next one may be queued behind it.
        Args::RecvPooled { datagram: true, .. } => None,
        Args::RecvPooled { .. } => pool.map(|pool| (Dir::Read, cap(pool.buffer_size() as usize))),
        Args::Send { buf, .. } => Some((Dir::Write, cap(buf.len()))),
        Args::SendPooled { buf, .. } => Some((Dir::Write, cap(buf.len()))),
        Args::SendVectored { bufs, .. } => {
            let len = bufs.iter().take(GATHER_MAX).map(|buf| buf.len()).sum();
            Some((Dir::Write, cap(len)))
        }
        _ => None,
    }
}

/// What `getsockopt(SO_TYPE)` says of `fd`, for the short-transfer rule.
fn stream_of(fd: RawFd, stats: &mut Stats) -> Stream {
    if ops::is_stream_socket(fd, stats) {
        Stream::Yes
    } else {
        Stream::No
    }
}

impl<P: Poller> Engine<P> {
    /// Starts an operation that may wait for readiness (or a close, or a shutdown).
    pub(super) fn start_io(
        &mut self,
        idx: u32,
        args: &mut [Args],
        pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) {
        let i = idx as usize;
        if let Args::Close { fd } = &args[i] {
            self.before_close(fd.as_raw_fd(), stats);
        }
        self.per.multishot[i] = args[i].is_multishot();
        let Some((fd, dir)) = self.direction(&args[i]) else {
            let (step, flags) = self.try_op(idx, args, pool, false, stats);
            let Step::Done(result) = step else {
                unreachable!("{} cannot wait", args[i].label())
            };
            return self.complete_with(idx, result, flags);
        };
        let at = self.fds.find_or_insert(fd);
        if !self.fds.get(at).polls.is_empty() {
            // Waiting polls look first, before this operation may take what they wait for.
            self.run_polls(at, args, stats);
        }
        if self.fds.get(at).live == 0 && self.hints.take_stream(fd) {
            self.fds.get(at).stream = Stream::Yes;
        }
        let entry = self.fds.get(at);
        entry.live += 1;
        self.per.counted[i] = fd;
        // Behind an operation already waiting in this direction: queue without trying, so
        // that order is kept. Known drained: queue without trying, the next edge says when.
        if !entry.queues[dir as usize].is_empty() || !entry.ready.contains(dir) {
            return self.enqueue(idx, at, dir, stats);
        }
        if self.try_at(idx, at, dir, args, pool, stats) {
            self.enqueue(idx, at, dir, stats);
        }
    }

    /// Tries the operation in slot `idx` on the entry at `at`; completes it, or clears the
    /// direction's readiness and returns `true` when it would block.
    fn try_at(
        &mut self,
        idx: u32,
        at: usize,
        dir: Dir,
        args: &mut [Args],
        pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) -> bool {
        let i = idx as usize;
        let transfer = transfer(&args[i], pool.as_deref());
        let nonblocking = self.fds.get(at).nonblocking;
        let (step, flags) = self.try_op(idx, args, pool, nonblocking, stats);
        let entry = self.fds.get(at);
        if matches!(args[i], Args::Accept { .. }) {
            // Set by the accept's own fcntl (or it failed, and its error is the result).
            entry.nonblocking = true;
        }
        let result = match step {
            Step::Wait(fd, wait_dir) => {
                assert_eq!((fd, wait_dir), (entry.fd, dir));
                entry.ready = entry.ready.without(dir);
                return true;
            }
            Step::Done(result) => result,
        };
        if let Some((transfer_dir, len)) = transfer {
            if result > 0 && (result as usize) < len && !entry.closed {
                self.short_transfer(at, transfer_dir, stats);
            }
        }
        if matches!(args[i], Args::Accept { .. }) && result >= 0 {
            // The listener's type, asked once while the engine holds its accepts.
            if self.fds.get(at).stream == Stream::Unknown {
                self.fds.get(at).stream = stream_of(self.fds.get(at).fd, stats);
            }
            let stream = self.fds.get(at).stream == Stream::Yes;
            self.met_new_fd(result, stream);
        }
        self.complete_with(idx, result, flags);
        false
    }

    /// A receive or send moved less than it asked: on a stream socket the receive queue was
    /// empty (or the send buffer full) at that moment, and what changes it later is a new
    /// edge, so the direction counts as drained (tokio does the same). Not on datagram or
    /// record sockets, where a short receive is one small message and more may be queued;
    /// nor after a hang-up or error, which no edge will report again.
    fn short_transfer(&mut self, at: usize, dir: Dir, stats: &mut Stats) {
        let entry = self.fds.get(at);
        if entry.stream == Stream::Unknown {
            entry.stream = stream_of(entry.fd, stats);
        }
        if entry.stream == Stream::Yes {
            entry.ready = entry.ready.without(dir);
        }
    }

    /// The kernel handed out `fd` anew (an accept; `stream`: on a stream listener): an entry
    /// under that number is stale.
    fn met_new_fd(&mut self, fd: RawFd, stream: bool) {
        self.hints.set(fd, false);
        self.hints.set_stream(fd, stream);
        if let Some(at) = self.fds.find(fd) {
            let entry = self.fds.get(at);
            entry.registered = Dirs::NONE;
            entry.ready = ALL;
            entry.closed = false;
            entry.stream = Stream::Unknown;
            entry.nonblocking = false;
        }
    }

    /// Ends the registration of a descriptor the loop is about to close, if it knows one.
    fn before_close(&mut self, fd: RawFd, stats: &mut Stats) {
        let mut registered = self.hints.get(fd);
        self.hints.set(fd, false);
        self.hints.set_stream(fd, false);
        if let Some(at) = self.fds.find(fd) {
            let entry = self.fds.get(at);
            registered |= entry.registered != Dirs::NONE;
            entry.registered = Dirs::NONE;
        }
        if registered {
            self.poller.deregister(fd, stats);
        }
    }

    /// Parks slot `idx` on the entry at `at` in `dir`, registering the descriptor for `dir`
    /// if this entry has not. A refused registration fails every operation waiting on it.
    pub(super) fn enqueue(&mut self, idx: u32, at: usize, dir: Dir, stats: &mut Stats) {
        let fd = self.fds.get(at).fd;
        self.per.place[idx as usize] = Place::Waiting(fd, dir);
        self.fds.get(at).queues[dir as usize].push(&mut self.per.next, idx);
        self.parked += 1;
        if self.fds.get(at).registered.contains(dir) {
            return;
        }
        let likely_registered = self.hints.get(fd);
        match self.poller.register(fd, dir, likely_registered, stats) {
            Ok(dirs) => {
                let entry = self.fds.get(at);
                entry.registered = entry.registered.union(dirs);
            }
            Err(error) => self.fail_waiters(at, error.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    /// Completes every operation waiting on the descriptor at `at` with `-errno`.
    pub(super) fn fail_waiters(&mut self, at: usize, errno: i32) {
        assert!(errno > 0);
        for dir in Dir::BOTH {
            while let Some(idx) = self.fds.get(at).queues[dir as usize].pop(&mut self.per.next) {
                assert!(self.parked > 0);
                self.parked -= 1;
                self.complete(idx, -errno);
            }
        }
        self.fail_polls(at, errno);
    }

    /// Forgets the descriptors that went idle with a multishot's result and were not
    /// re-armed by the loop meanwhile (after the flush started what was submitted).
    pub(super) fn forget_idle(&mut self) {
        for idle_idx in 0..self.went_idle.len() {
            let fd = self.went_idle[idle_idx];
            if let Some(at) = self.fds.find(fd) {
                let entry = self.fds.get(at);
                if entry.live == 0 {
                    let registered = entry.registered != Dirs::NONE;
                    self.fds.remove(at);
                    self.hints.set(fd, registered);
                }
            }
        }
        self.went_idle.clear();
    }

    /// An edge (or a refused registration) for one descriptor.
    pub(super) fn on_ready(
        &mut self,
        readiness: Readiness,
        args: &mut [Args],
        mut pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) {
        // A descriptor the engine holds nothing on: an edge of a forgotten registration.
        let Some(at) = self.fds.find(readiness.fd) else {
            return;
        };
        if let Some(errno) = readiness.error {
            // The kernel refused the registration: waiting would never end.
            self.fds.get(at).registered = Dirs::NONE;
            return self.fail_waiters(at, errno);
        }
        {
            let entry = self.fds.get(at);
            entry.ready = entry.ready.union(readiness.dirs);
            entry.closed |= readiness.closed;
        }
        // Polls first: they only look, so the operations queued behind find what they saw.
        self.run_polls(at, args, stats);
        for dir in Dir::BOTH {
            if readiness.dirs.contains(dir) {
                self.run_queue(at, dir, args, pool.as_deref_mut(), stats);
            }
        }
    }

    /// Performs the operations waiting on `at` in `dir`, in order, while the direction is
    /// ready: until one would block, or a short transfer says the socket is drained.
    fn run_queue(
        &mut self,
        at: usize,
        dir: Dir,
        args: &mut [Args],
        mut pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) {
        loop {
            let entry = self.fds.get(at);
            let head = entry.queues[dir as usize].head;
            if head == super::table::NONE || !entry.ready.contains(dir) {
                return;
            }
            let popped = entry.queues[dir as usize].pop(&mut self.per.next);
            assert_eq!(popped, Some(head));
            assert!(self.parked > 0);
            self.parked -= 1;
            self.per.place[head as usize] = Place::Submitted;
            if self.try_at(head, at, dir, args, pool.as_deref_mut(), stats) {
                // Back at the head of its queue, order kept.
                self.push_front(head, at, dir);
                return;
            }
        }
    }

    /// Puts `idx` back at the head of the entry's queue in `dir`.
    fn push_front(&mut self, idx: u32, at: usize, dir: Dir) {
        let fd = self.fds.get(at).fd;
        let queue = &mut self.fds.get(at).queues[dir as usize];
        assert_eq!(self.per.next[idx as usize], super::table::NONE);
        self.per.next[idx as usize] = queue.head;
        if queue.tail == super::table::NONE {
            queue.tail = idx;
        }
        queue.head = idx;
        self.per.place[idx as usize] = Place::Waiting(fd, dir);
        self.parked += 1;
    }
}
