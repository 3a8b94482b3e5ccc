//! The readiness engine, shared by epoll and kqueue: try each operation's syscall first; on
//! `EAGAIN` queue it on its descriptor and direction, registering the descriptor once,
//! edge-triggered, for both directions; when the kernel reports an edge, perform the queued
//! operations of that direction in order. Timers live in a heap and bound each wait with a
//! nanosecond timeout. The backend-specific part is a [`Poller`]: how a descriptor is
//! registered and how events are harvested. `edge.rs` holds the registration rules.
//!
//! How one operation goes: `push` appends the slot to `submitted`; the next `flush` takes it
//! (in scheduling order), performs it or queues it (behind any operation already waiting on
//! the same descriptor and direction, so that order is kept; or at once, without a syscall,
//! where the direction is known drained), waits once in the kernel, then performs what
//! became ready and expires timers; results go to `done`, which `reap` hands to the loop.
//!
//! File operations run inline (`file::perform` from `ops::perform`), or, with
//! `Options::file_workers`, on worker threads (`workers.rs`): `start` hands the operation to
//! them (place `Worker`), and every flush collects what they finished, after consuming the
//! workers signal that woke the wait.

mod edge;
mod msg;
pub(crate) mod ops;
mod poll;
mod pooled;
pub(crate) mod table;
pub(crate) mod workers;

#[cfg(target_os = "linux")]
pub(crate) mod epoll;
pub(crate) mod kqueue;

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use self::ops::{perform, Step};
use self::table::{Dir, Dirs, FdTable, Queue, NONE};
use self::workers::Workers;
use super::{file, Wait};
use crate::completion::TIMEOUT_EXPIRED;
use crate::operation::{Args, OpId};
use crate::pool::Pool;
use crate::stats::Stats;
use crate::timer::TimerHeap;
use crate::waker::Waker;

/// The readiness of one descriptor, as a poller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) fd: RawFd,
    pub(crate) dirs: Dirs,
    /// A hang-up, the peer's close or a pending error (`EPOLLRDHUP`, `EPOLLHUP`,
    /// `EPOLLERR`, `EV_EOF`): a final state, reported in both directions.
    pub(crate) closed: bool,
    /// The errno of a failed registration, if the kernel refused the interest.
    pub(crate) error: Option<i32>,
}

/// The pseudo-descriptor that stands for "the waker fired" where the waker is not a
/// descriptor (kqueue's `EVFILT_USER`).
pub(crate) const WAKE_FD: RawFd = -2;

/// The pseudo-descriptor that stands for "the file workers finished jobs".
pub(crate) const WORKERS_FD: RawFd = -3;

/// The backend-specific half of a readiness backend.
pub(crate) trait Poller {
    /// Registers `fd` for at least `dir`, edge-triggered and persistent (epoll `EPOLLET`,
    /// both directions in one item; kqueue `EV_CLEAR`, the one filter: a listening socket
    /// never gets `EVFILT_WRITE`, which some kernels refuse there); the kernel reports the
    /// current readiness once, then each change. Returns the directions now registered. A
    /// descriptor already registered is not an error; `likely_registered` (an earlier entry
    /// of the number registered it) only says which syscall to try first. May be deferred to
    /// the next `wait` (kqueue's changelist) or immediate (`epoll_ctl`).
    fn register(
        &mut self,
        fd: RawFd,
        dir: Dir,
        likely_registered: bool,
        stats: &mut Stats,
    ) -> io::Result<Dirs>;

    /// Ends `fd`'s registration, before the loop closes it. Errors are ignored: a descriptor
    /// not registered (or no longer open) has nothing to end.
    fn deregister(&mut self, fd: RawFd, stats: &mut Stats);

    /// Whether `set_interest` left changes that only a `wait` delivers.
    fn has_pending_changes(&self) -> bool;

    /// One syscall: delivers pending changes and waits up to `timeout` (`None`: forever),
    /// appending readiness to `ready` (at most its spare capacity).
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<Readiness>,
        stats: &mut Stats,
    ) -> io::Result<()>;

    /// The most readiness reports one `wait` can append.
    fn events_max(&self) -> usize;

    /// The descriptor a wake-up wait waits on (`WAKE_FD` where the waker is no descriptor).
    fn wakeup_fd(&self) -> RawFd;

    /// Takes the wake-ups that arrived, without blocking: `None` if there were none.
    fn take_wakeups(&mut self, stats: &mut Stats) -> io::Result<Option<u64>>;

    /// A waker for this poller's loop.
    fn waker(&self) -> Waker;

    /// Registers a second signal, for the file workers, apart from the program's waker (whose
    /// count `wait_wakeup` reports), and returns the handle that triggers it. Its readiness
    /// is reported as [`WORKERS_FD`] until `take_workers_signal`.
    fn workers_signal(&mut self) -> io::Result<Waker>;

    /// Consumes the workers signal after a wait reported [`WORKERS_FD`].
    fn take_workers_signal(&mut self, stats: &mut Stats) -> io::Result<()>;
}

/// Where an operation is inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Idle,
    Submitted,
    Waiting(RawFd, Dir),
    /// A poll waiting on the descriptor (`poll.rs`).
    Polling(RawFd),
    Timer,
    /// Handed to the file workers (queued or running).
    Worker,
    Done,
}

/// The engine's per-slot tables.
struct PerSlot {
    /// Per slot: the operation's `user_data`, its place, its list link, connect state. Each
    /// of these per-slot tables reserves room for every slot at start-up and is written only
    /// as far as the highest slot pushed (`reach`), so untouched slots cost no memory.
    pub(super) user_data: Vec<u64>,
    pub(super) place: Vec<Place>,
    pub(super) next: Vec<u32>,
    pub(super) connecting: Vec<bool>,
    /// Per slot: the descriptor whose entry counts the operation as live (`edge::UNCOUNTED`
    /// if none), and whether its success means a multishot goes on.
    pub(super) counted: Vec<RawFd>,
    pub(super) multishot: Vec<bool>,
}

/// The readiness engine over a poller `P`.
pub(crate) struct Engine<P> {
    poller: P,
    origin: Instant,
    /// Per slot: what the engine knows of each operation (boxed: the engine is a variant of
    /// the loop's backend enum, and six vectors inline in it made io_uring's push 21
    /// instructions dearer per operation, callgrind's `nop_cost`).
    per: Box<PerSlot>,
    submitted: Queue,
    fds: FdTable,
    /// Descriptors whose last operation was a multishot's intermediate result: forgotten at
    /// the next flush unless the loop re-armed it (`edge::forget_idle`).
    went_idle: Vec<RawFd>,
    /// Operations queued on descriptors.
    parked: u32,
    /// Descriptor numbers a forgotten entry registered (`edge::Hints`).
    hints: edge::Hints,
    /// Whether the last flush asked the kernel for events.
    waited_last: bool,
    timers: TimerHeap,
    /// Results not yet reaped: `(user_data, result, flags)`.
    done: Vec<(u64, i32, u32)>,
    /// Intermediate results (`F_MORE`) of datagram multishots, which take a burst per try
    /// (`pooled::recv_datagrams`), not yet reaped: handed over before `done`, so that each
    /// comes before its operation's final result. Never longer than `pooled::SHOTS_MAX`.
    shots: Vec<pooled::Shot>,
    ready: Vec<Readiness>,
    /// The file workers, if the loop has any.
    workers: Option<Workers>,
    /// Operations handed to the workers and not yet collected.
    in_workers: u32,
}

/// The most readiness events harvested by one wait.
pub(crate) const EVENTS_MAX: usize = 256;

impl<P: Poller> Engine<P> {
    /// An engine for `ops_max` slots over `poller`, performing file operations on
    /// `file_workers` threads (0: inline).
    pub(crate) fn new(mut poller: P, ops_max: u32, file_workers: u32) -> io::Result<Engine<P>> {
        let slots = ops_max as usize;
        let events_max = poller.events_max();
        let workers = if file_workers > 0 {
            let signal = poller.workers_signal()?;
            Some(Workers::start(file_workers, ops_max, signal)?)
        } else {
            None
        };
        Ok(Engine {
            poller,
            origin: Instant::now(),
            per: Box::new(PerSlot {
                user_data: Vec::with_capacity(slots),
                place: Vec::with_capacity(slots),
                next: Vec::with_capacity(slots),
                connecting: Vec::with_capacity(slots),
                counted: Vec::with_capacity(slots),
                multishot: Vec::with_capacity(slots),
            }),
            submitted: Queue::EMPTY,
            // Live entries (at most one per slot, plus the waker) and entries gone idle in
            // the last reap.
            fds: FdTable::new(2 * ops_max + 2),
            went_idle: Vec::with_capacity(slots),
            parked: 0,
            hints: edge::Hints::new(),
            waited_last: false,
            timers: TimerHeap::new(ops_max),
            done: Vec::with_capacity(slots),
            shots: Vec::with_capacity(pooled::SHOTS_MAX),
            ready: Vec::with_capacity(events_max),
            workers,
            in_workers: 0,
        })
    }

    /// How many file workers the engine has (0: file operations run inline).
    pub(crate) fn file_workers(&self) -> u32 {
        self.workers.as_ref().map_or(0, |workers| workers.count())
    }

    pub(crate) fn waker(&self) -> Waker {
        self.poller.waker()
    }

    /// Queues slot `idx` for the next flush. Never full: the engine has a place for every
    /// slot.
    pub(crate) fn push(&mut self, idx: u32, user_data: u64) {
        let i = idx as usize;
        if i >= self.per.place.len() {
            self.reach(i);
        }
        assert_eq!(self.per.place[i], Place::Idle, "slot {idx} pushed twice");
        self.per.user_data[i] = user_data;
        self.per.place[i] = Place::Submitted;
        self.per.connecting[i] = false;
        self.submitted.push(&mut self.per.next, idx);
    }

    /// Extends the per-slot tables to slot `i`, within the room reserved at start-up (slots
    /// are handed out lowest first, so this writes only what the load has reached).
    #[cold]
    fn reach(&mut self, i: usize) {
        assert!(
            i < self.per.place.capacity(),
            "slot {i} past the engine's slots"
        );
        let len = i + 1;
        self.per.user_data.resize(len, 0);
        self.per.place.resize(len, Place::Idle);
        self.per.next.resize(len, NONE);
        self.per.connecting.resize(len, false);
        self.per.counted.resize(len, edge::UNCOUNTED);
        self.per.multishot.resize(len, false);
    }

    fn complete(&mut self, idx: u32, result: i32) {
        self.complete_with(idx, result, 0);
    }

    fn complete_with(&mut self, idx: u32, result: i32, flags: u32) {
        let i = idx as usize;
        assert!(matches!(
            self.per.place[i],
            Place::Submitted
                | Place::Waiting(..)
                | Place::Polling(_)
                | Place::Timer
                | Place::Worker
        ));
        self.per.place[i] = Place::Done;
        assert!(
            self.done.len() < self.done.capacity(),
            "done list never grows"
        );
        self.done.push((self.per.user_data[i], result, flags));
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts everything submitted, waits once, performs what became ready, expires timers.
    pub(crate) fn flush(
        &mut self,
        wait: Wait,
        args: &mut [Args],
        mut pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let mut started = 0;
        while let Some(idx) = self.submitted.pop(&mut self.per.next) {
            started += 1;
            self.start(idx, args, pool.as_deref_mut(), stats);
        }
        stats.batch_max = stats.batch_max.max(started);
        self.forget_idle();
        // Jobs finished meanwhile (or taken back by a cancel) make the wait a poll.
        self.collect(args, stats);
        let timeout = self.timeout(wait);
        let idle = timeout == Some(Duration::ZERO)
            && !self.poller.has_pending_changes()
            && self.nothing_armed();
        // With results to hand over, the wait could only be a poll: one turn in two skips
        // it. The edges stay in the kernel for the next turn's wait, which comes as soon as
        // the callbacks have run (their operations start first, often completing at once,
        // and then the wait harvests for them too); every second turn looks, so no
        // descriptor starves while others keep completing without a wait.
        let skip = self.has_results() && self.waited_last && !self.poller.has_pending_changes();
        self.waited_last = !idle && !skip;
        if self.waited_last {
            self.ready.clear();
            self.poller.wait(timeout, &mut self.ready, stats)?;
            for event in 0..self.ready.len() {
                let readiness = self.ready[event];
                if readiness.fd == WORKERS_FD {
                    // Consumed before collecting: a job finished after `collect` signals
                    // again, so none waits unseen while the loop sleeps.
                    self.poller.take_workers_signal(stats)?;
                    continue;
                }
                self.on_ready(readiness, args, pool.as_deref_mut(), stats);
            }
            self.collect(args, stats);
        }
        let now_ns = self.now_ns();
        while let Some(idx) = self.timers.pop_expired(now_ns) {
            self.per.place[idx as usize] = Place::Timer;
            self.complete(idx, TIMEOUT_EXPIRED);
        }
        Ok(())
    }

    /// Takes back what the file workers finished: each job's arguments go back to their
    /// slot, and the operation completes with the job's result.
    fn collect(&mut self, args: &mut [Args], stats: &mut Stats) {
        if self.in_workers == 0 {
            return;
        }
        let Some(workers) = self.workers.as_ref() else {
            unreachable!("operations in workers without workers");
        };
        let mut finished = 0;
        let done = &mut self.done;
        let (place, user_data) = (&mut self.per.place, &self.per.user_data);
        workers.collect(|job| {
            let i = OpId::idx_of_user_data(job.user_data) as usize;
            assert_eq!(place[i], Place::Worker);
            assert_eq!(user_data[i], job.user_data);
            assert!(
                matches!(args[i], Args::Empty),
                "a slot out in a worker holds nothing"
            );
            args[i] = job.args;
            place[i] = Place::Done;
            stats.worker_syscalls += job.syscalls;
            assert!(done.len() < done.capacity(), "done list never grows");
            done.push((job.user_data, job.result, 0));
            finished += 1;
        });
        assert!(finished <= self.in_workers);
        self.in_workers -= finished;
    }

    /// Hands the file operation in slot `idx` to the workers; its arguments go with it.
    fn hand_to_workers(&mut self, idx: u32, args: &mut [Args]) {
        let i = idx as usize;
        let Some(workers) = self.workers.as_ref() else {
            unreachable!("hand_to_workers without workers");
        };
        let job_args = std::mem::replace(&mut args[i], Args::Empty);
        self.per.place[i] = Place::Worker;
        self.in_workers += 1;
        workers.submit(self.per.user_data[i], job_args);
    }

    /// No operation waits for readiness (an edge that comes meanwhile stays in the kernel
    /// until a later wait harvests it).
    fn nothing_armed(&self) -> bool {
        self.parked == 0
    }

    /// How long the wait may block.
    fn timeout(&self, wait: Wait) -> Option<Duration> {
        if self.has_results() {
            return Some(Duration::ZERO);
        }
        let timer = self
            .timers
            .peek_deadline_ns()
            .map(|deadline_ns| Duration::from_nanos(deadline_ns.saturating_sub(self.now_ns())));
        let wait = match wait {
            Wait::Poll => Some(Duration::ZERO),
            Wait::Forever => None,
            Wait::Within(left_ns) => Some(Duration::from_nanos(left_ns)),
        };
        match (wait, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles one submitted operation. Never fails: whatever goes wrong becomes the
    /// operation's result, so that no operation taken off a queue is ever abandoned.
    fn start(&mut self, idx: u32, args: &mut [Args], pool: Option<&mut Pool>, stats: &mut Stats) {
        let i = idx as usize;
        if self.workers.is_some() && file::is_file(&args[i]) {
            return self.hand_to_workers(idx, args);
        }
        match &mut args[i] {
            Args::Nop => self.complete(idx, 0),
            Args::Timeout { timeout_ns } => {
                let deadline_ns = self.now_ns().saturating_add(*timeout_ns);
                self.per.place[i] = Place::Timer;
                self.timers.insert(idx, deadline_ns);
            }
            Args::Cancel { target } => {
                let result = self.cancel(target.user_data());
                self.complete(idx, result);
            }
            Args::Poll { .. } => self.start_poll(idx, args, stats),
            _ => self.start_io(idx, args, pool, stats),
        }
    }

    /// The descriptor and direction an operation would wait on, if it can wait.
    fn direction(&self, args: &Args) -> Option<(RawFd, Dir)> {
        match *args {
            Args::Accept { fd, .. } | Args::Recv { fd, .. } | Args::RecvPooled { fd, .. }
                if fd >= 0 =>
            {
                Some((fd, Dir::Read))
            }
            Args::RecvMsg { fd, .. } if fd >= 0 => Some((fd, Dir::Read)),
            Args::SendMsg { fd, .. } if fd >= 0 => Some((fd, Dir::Write)),
            Args::Connect { fd, .. }
            | Args::Send { fd, .. }
            | Args::SendPooled { fd, .. }
            | Args::SendVectored { fd, .. }
                if fd >= 0 =>
            {
                Some((fd, Dir::Write))
            }
            Args::Wakeup => Some((self.poller.wakeup_fd(), Dir::Read)),
            _ => None,
        }
    }

    /// Tries the operation once: the step, and the flags of its completion.
    fn try_op(
        &mut self,
        idx: u32,
        args: &mut [Args],
        pool: Option<&mut Pool>,
        nonblocking: bool,
        stats: &mut Stats,
    ) -> (Step, u32) {
        let i = idx as usize;
        let step = match &args[i] {
            // The listener was put in non-blocking mode by an earlier accept of this entry.
            Args::Accept { fd, .. } if *fd >= 0 && nonblocking => ops::accept_ready(*fd, stats),
            Args::Wakeup => match self.poller.take_wakeups(stats) {
                Ok(Some(wakeups)) => Step::Done(i32::try_from(wakeups).unwrap_or(i32::MAX)),
                Ok(None) => Step::Wait(self.poller.wakeup_fd(), Dir::Read),
                Err(error) => Step::Done(-error.raw_os_error().unwrap_or(libc::EIO)),
            },
            Args::RecvPooled {
                fd,
                datagram: true,
                multishot,
            } => {
                let pool = pool.expect("a pooled receive has a pool");
                let burst = multishot.then_some((self.per.user_data[i], &mut self.shots));
                return pooled::recv_datagrams(*fd, pool, stats, burst);
            }
            Args::RecvPooled { fd, .. } => {
                let pool = pool.expect("a pooled receive has a pool");
                return pooled::recv(*fd, pool, stats);
            }
            Args::SendPooled { fd, buf } => pooled::send(*fd, buf, stats),
            Args::SendMsg { .. } | Args::RecvMsg { .. } => msg::perform(&mut args[i], stats),
            _ => perform(&mut args[i], &mut self.per.connecting[i], stats),
        };
        (step, 0)
    }

    /// Cancels the operation `user_data` if the engine still holds it: `0`, or `-ENOENT`.
    fn cancel(&mut self, user_data: u64) -> i32 {
        let idx = OpId::idx_of_user_data(user_data);
        let i = idx as usize;
        if i >= self.per.place.len() || self.per.user_data[i] != user_data {
            return -libc::ENOENT;
        }
        match self.per.place[i] {
            Place::Idle | Place::Done => return -libc::ENOENT,
            Place::Submitted => {
                let removed = self.submitted.remove(&mut self.per.next, idx);
                assert!(removed);
            }
            Place::Waiting(fd, dir) => {
                let at = self.fds.find(fd).expect("a waiting operation's descriptor");
                let removed = self.fds.get(at).queues[dir as usize].remove(&mut self.per.next, idx);
                assert!(removed);
                assert!(self.parked > 0);
                self.parked -= 1;
                // The registration stays: it is persistent, and the entry goes when the
                // cancelled operation is reaped.
            }
            Place::Polling(fd) => self.unpark_poll(idx, fd),
            Place::Timer => self.timers.remove(idx),
            Place::Worker => {
                // Queued: it comes back with `ECANCELED` at the next collect. Running: it
                // ends with its real result, as an operation the kernel is performing does.
                let workers = self.workers.as_ref().expect("a worker's operation");
                workers.take_back(user_data);
                return 0;
            }
        }
        self.complete(idx, -libc::ECANCELED);
        0
    }

    /// Hands up to `max` results to `f`, oldest first, and forgets them; their slots become
    /// idle. The rest wait for the next reap.
    pub(crate) fn reap(&mut self, mut max: u32, mut f: impl FnMut(u64, i32, u32)) {
        if !self.shots.is_empty() {
            // Intermediate results: their operations go on, in place.
            let count = self.shots.len().min(max as usize);
            for (user_data, result, flags) in self.shots.drain(..count) {
                f(user_data, result, flags);
            }
            max -= count as u32;
        }
        let count = self.done.len().min(max as usize);
        for (user_data, result, flags) in self.done.drain(..count) {
            let idx = OpId::idx_of_user_data(user_data) as usize;
            assert_eq!(self.per.place[idx], Place::Done);
            self.per.place[idx] = Place::Idle;
            let fd = std::mem::replace(&mut self.per.counted[idx], edge::UNCOUNTED);
            if fd != edge::UNCOUNTED {
                // A multishot's success is re-armed by the loop before the next flush.
                let goes_on = self.per.multishot[idx] && result > 0;
                let idle = edge::release(&mut self.fds, &mut self.went_idle, fd, goes_on);
                if let Some(registered) = idle {
                    self.hints.set(fd, registered);
                }
            }
            f(user_data, result, flags);
        }
    }

    /// Whether results wait to be reaped.
    pub(crate) fn has_results(&self) -> bool {
        !self.done.is_empty() || !self.shots.is_empty()
    }

    /// Puts pool buffers handed back by dropped handles among the free ones; how many.
    pub(crate) fn recycle(&mut self, pool: &mut Pool) -> u32 {
        pool.take_returned_into_free()
    }

    /// Cancels `user_data`'s operation for `Io`'s drop; its result arrives with `reap`.
    pub(crate) fn cancel_for_drop(&mut self, user_data: u64, _stats: &mut Stats) -> io::Result<()> {
        let result = self.cancel(user_data);
        assert!(result == 0 || result == -libc::ENOENT);
        Ok(())
    }

    /// Sends a cancel of `user_data` again (see `io/deadline.rs`): performed at once, as a
    /// drop's cancel is, its answer to nobody.
    pub(crate) fn resend_cancel(&mut self, user_data: u64, stats: &mut Stats) -> bool {
        self.cancel_for_drop(user_data, stats).is_ok()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
