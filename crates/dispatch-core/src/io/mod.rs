//! `Io<C>`: the loop. Operations are scheduled from anywhere (usually from inside a callback),
//! each turn hands everything scheduled to the backend in one syscall, and callbacks run
//! afterwards, never while completions are being reaped.

mod callback;
mod deadline;
mod dispatch;
mod drop;
mod file;
mod msg;
mod ops;
mod poll;
mod queue;
mod reap;
mod schedule;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::callback::Callback;
pub use self::callback::{
    AcceptCallback, BufCallback, CountCallback, FdCallback, FileCallback, FileVectoredCallback,
    IoBuf, PoolSendCallback, PooledCallback, StatCallback, UnitCallback, VectoredCallback,
};
pub use self::callback::{DatagramCallback, MsgCallback};
pub use self::callback::{PollCallback, PollShotCallback};
use self::deadline::Deadlines;
use crate::aligned::{AlignedBuf, RegisteredSet};
use crate::backend::{Backend, PushError, Wait};
use crate::clock::{Clock, Stall};
use crate::error::InitError;
use crate::options::Options;
use crate::pool::Pool;
use crate::slots::{Completed, Fifo, Slots, State};
use crate::stats::Stats;
use crate::waker::Waker;

/// The simulated world a loop may be built on; without the `sim` feature, a type with no
/// values, so that `build` has one shape either way.
#[cfg(feature = "sim")]
type SimWorld = crate::sim::Sim;
#[cfg(not(feature = "sim"))]
type SimWorld = std::convert::Infallible;

/// How long `Io`'s drop waits for the kernel to give back operations it cancelled before it
/// leaks their memory rather than free memory the kernel could still write.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// The I/O loop, generic over the application's context `C`, which callbacks receive.
///
/// `Io` is deliberately not `Send` (checked at compile time; nor is it `Sync`): one loop per
/// thread, its pool buffers counted without atomics. Use [`Io::waker`] (a [`crate::Waker`],
/// `Send + Sync`) to reach it from other threads.
///
/// A receive and a send on a socket pair; the buffer moves into each operation and comes back
/// with its result:
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use dispatch_loop::{BufResult, Io, Options, Tag};
///
/// struct Ctx { socket: UnixStream, got: Vec<u8> }
///
/// fn on_recv(ctx: &mut Ctx, io: &mut Io<Ctx>, tag: Tag, (result, buf): BufResult) {
///     assert_eq!(result.expect("recv"), buf.len());
///     ctx.got.extend_from_slice(&buf);
///     // Echo it back: scheduled from a callback, submitted with the next turn.
///     io.send(tag, ctx.socket.as_raw_fd(), buf, |_, _, _, (sent, _)| {
///         sent.expect("send");
///     })
///     .expect("a free slot");
/// }
///
/// let (socket, mut peer) = UnixStream::pair().unwrap();
/// let mut io: Io<Ctx> = Io::new(&Options::new(8)).expect("a backend");
/// let mut ctx = Ctx { socket, got: Vec::new() };
/// io.recv(1, ctx.socket.as_raw_fd(), Vec::with_capacity(64), on_recv).expect("a free slot");
/// peer.write_all(b"ping").unwrap();
/// io.run_until_idle(&mut ctx).expect("run");
/// assert_eq!(ctx.got, b"ping");
/// let mut echoed = [0; 4];
/// std::io::Read::read_exact(&mut peer, &mut echoed).unwrap();
/// assert_eq!(&echoed, b"ping");
/// println!("{:?}", io.stats());
/// ```
///
/// # Descriptors
/// The loop borrows the descriptors its operations name (`RawFd`); only [`Io::close`] takes
/// one over. Never close a descriptor while an operation on it is in flight: cancel the
/// operations, wait for their callbacks, then close. If a program does close one early (a
/// bug), the loop still answers every operation exactly once when it is cancelled, and
/// never hangs on cancel or drop, but the backends differ: on io_uring the kernel holds the
/// file until the pending operations finish or are cancelled; on epoll and kqueue the
/// registration vanishes with the descriptor, so an operation already waiting on it waits
/// until it is cancelled (or its deadline passes), and a later operation on the same number
/// fails (`EBADF`, or whatever the kernel answers for a number reused meanwhile).
///
/// On epoll and kqueue a descriptor is registered with the kernel once, edge-triggered for
/// both directions, the first time one of its operations would block, and stays registered
/// while the loop holds operations on it; [`Io::close`] ends the registration before it
/// closes the descriptor. Between operations the loop remembers nothing about a descriptor
/// (it trusts no registration it did not see live), so a program may close a descriptor
/// the loop used and reuse its number for another (its own `close`, `dup2` onto it, a new
/// socket) once no operation is in flight on it, even from the callback that received the
/// last result: the next operation on the number tries first and registers it anew. A
/// `dup` of a descriptor is a descriptor of its own, registered on its own; closing one of
/// the two through the loop leaves the other working. The one cost of closing a descriptor
/// outside the loop: where a `dup` keeps its file open, epoll keeps reporting that file's
/// edges under the old number until the last copy closes, which makes the loop try an
/// operation on that number in vain (never a wrong result: an operation only completes on
/// what its own syscall returns).
///
/// # Callbacks
/// A callback may schedule operations, cancel them and call [`Io::stop`]. It must not drive
/// the loop it runs in (`tick`, `run_*`: that panics) nor replace it (`std::mem::swap` of
/// the `Io`). If a callback panics, the panic propagates out of `tick`/`run_*` and the loop
/// stays usable (see [`Io::tick`]).
///
/// # Portability
/// The same program runs on every backend; what differs is who performs each operation and
/// how many syscalls that costs (see [`crate::Stats::syscalls`]):
/// - **io_uring** (Linux, the default): the kernel performs each operation; one
///   `io_uring_enter` per turn submits the whole batch and waits. Sockets may be blocking or
///   not (tested on Linux 6.18). A file operation whose opcode the kernel lacks (`FTRUNCATE`
///   before 6.9, `MKDIRAT` before 5.15, ...) runs as a syscall in the loop's thread, with
///   the same callback ([`crate::UringFeatures::file_opcodes`]).
/// - **epoll** (Linux, when io_uring is blocked or missing) and **kqueue** (FreeBSD, macOS):
///   the loop tries each operation with a non-blocking syscall and waits for readiness only
///   when it would block, on a registration made once per descriptor (`EPOLLET`,
///   `EV_CLEAR`; see Descriptors); recv and send use `MSG_DONTWAIT`, and accept and connect
///   switch the socket to non-blocking mode. After a receive or send on a stream socket
///   that moved less than asked, the next one in that direction waits for readiness without
///   a try (the socket was drained or full), as tokio does; on datagram sockets a short
///   receive says nothing, and every receive is tried. File operations run as syscalls,
///   inline in the loop's thread or on worker threads: see Files below.
/// - Sockets the loop accepts are non-blocking and close-on-exec on every backend.
/// - Cancel answers alike everywhere (see [`Io::cancel`]); file offsets and blocking opens
///   differ as [`Io::read`], [`Io::write`] and [`Io::openat`] say; `RWF_*` flags exist on
///   Linux only ([`Io::read_vectored`]), `RENAME_NOREPLACE` not on FreeBSD
///   ([`Io::renameat`]), `fdatasync` is `fsync` on macOS, and [`crate::FileStat`]'s
///   direct-I/O alignment is reported on Linux only.
/// - Several sends in flight on one stream socket are served in order on readiness
///   backends; io_uring does not promise an order once they wait for buffer space.
/// - **sim** (`dispatch_loop::sim`, built with the `sim` feature; only when asked for:
///   `Io::new_sim`, `Options::backend` or `DISPATCH_BACKEND=sim`): operations are performed
///   on a simulated world in virtual time (`run_for_ns` returns without sleeping; `tick`
///   never moves the clock), over simulated sockets and files only, with seeded faults; a
///   run that could only wait forever returns an error instead of blocking. The module's
///   documentation lists every difference.
///
/// # Files
/// Readiness cannot wait on regular files, so on epoll and kqueue the loop performs each file
/// operation (reads and writes at an offset, plain and vectored, fsync and fdatasync,
/// fallocate, ftruncate, statx, openat, renameat, unlinkat, mkdirat) as a syscall:
/// - inline, in the loop's thread, when [`Options::file_workers`] is 0: no thread hand-off,
///   but the loop serves nothing else until the syscall returns (an `fsync` of a few hundred
///   MiB of dirty pages stalls every socket of the loop for as long as it takes);
/// - on `file_workers` threads started by `Io::new` (one by default), otherwise: the
///   operation is queued for a worker, and its result comes back through the loop's wait
///   like any other completion, so the sockets are served meanwhile. What a callback
///   receives is the same either way; one worker also keeps inline's order (one operation
///   at a time, in scheduling order), while several run operations in flight together
///   concurrently, as io_uring does.
///   Cancels and deadlines take back an operation no worker has started (`ECANCELED`,
///   `ETIMEDOUT`); one a worker is performing ends with its real result, as an operation the
///   kernel is performing does on io_uring. Dropping the `Io` waits for the operations the
///   workers are performing (one syscall per worker), up to 10 s.
///
/// `close` runs inline on every descriptor. io_uring performs file operations in the kernel
/// (in its own workers where they would block) and ignores `file_workers`; so does the
/// simulator, whose disk is in memory. See [`Options::file_workers`] for the default and the
/// measurement behind it.
pub struct Io<C> {
    slots: Slots<Callback<C>>,
    overflow: Fifo,
    /// Pooled receives that found the pool empty, waiting for buffers to come back.
    buffer_wait: Fifo,
    /// Operations reaped but not over, for the backend again with the next turn.
    again: Fifo,
    /// Targets whose cancel the kernel may have lost (it answered "not found" or "already
    /// running" while they were in flight), in the reap under way, until `reap` times the
    /// resends of their cancels; always empty between reaps.
    resend: Fifo,
    completed: Completed,
    /// The receive buffer pool, if `Options::pool` asked for one. Fields drop in declaration
    /// order, so this drops before `backend`: sound because the io_uring backend holds its
    /// own reference to the pool's memory while its provided-buffer ring names the buffers
    /// (and drop has taken every operation back from the kernel, or leaked the memory).
    pool: Option<Pool>,
    /// The registered buffers (`Options::registered`), lent by `registered_buf`.
    registered: Option<Arc<RegisteredSet>>,
    /// Pool buffers handed to callbacks (or to the kernel by a pooled send) and not taken
    /// back yet.
    pool_lent: u32,
    backend: Backend,
    stats: Stats,
    /// Set while `tick` or a `run_*` drives the loop (a guard clears it, even when a
    /// callback panics), so that driving it from a callback is caught.
    running: bool,
    /// Per-operation deadlines (`set_deadline`).
    deadlines: Deadlines,
    /// `stop` was called: the run in progress returns after its turn; the next run, if none
    /// is in progress, after one turn that does not wait.
    stop_requested: bool,
    /// Operations handed to the backend whose completion has not been reaped.
    in_kernel: u32,
    /// Where `run_for_ns` and deadlines get the time: monotonic, or virtual under `sim`.
    clock: Clock,
    _not_send: PhantomData<*mut ()>,
}

impl<C> fmt::Debug for Io<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("in_flight", &self.in_flight())
            .field("overflow", &self.overflow.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// How long a turn may wait, on the loop's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Never block.
    Poll,
    /// Until this time (nanoseconds on the loop's clock) at the latest.
    At(u64),
    /// Until at least one completion.
    Forever,
}

/// Marks the loop as running for as long as it lives, and clears the mark when dropped,
/// including while a panicking callback unwinds: the loop stays usable after a panic.
struct Running<'io, C>(&'io mut Io<C>);

impl<'io, C> Running<'io, C> {
    fn enter(io: &'io mut Io<C>) -> Running<'io, C> {
        assert!(
            !io.running,
            "Io driven re-entrantly: tick/run called from a callback"
        );
        io.running = true;
        Running(io)
    }
}

impl<C> Deref for Running<'_, C> {
    type Target = Io<C>;
    fn deref(&self) -> &Io<C> {
        self.0
    }
}

impl<C> DerefMut for Running<'_, C> {
    fn deref_mut(&mut self) -> &mut Io<C> {
        self.0
    }
}

impl<C> Drop for Running<'_, C> {
    fn drop(&mut self) {
        self.0.running = false;
        if std::thread::panicking() {
            // A stop asked for by a callback of the run a panic ended must not end the next.
            self.0.stop_requested = false;
        }
    }
}

impl<C> Io<C> {
    /// Creates a loop with `options`' fixed limits. Every table the loop uses is allocated
    /// here, at full size (its pages are backed only as slots are first used); afterwards
    /// the loop allocates only once per slot the first time that slot sends or writes
    /// vectored on io_uring (its gather of iovecs, kept for reuse), and once per
    /// [`Io::statx`] (the kernel's answer, freed before its callback runs).
    ///
    /// # Errors
    /// - [`InitError::InvalidOptions`]: a limit is broken; the message names the field.
    /// - [`InitError::Unavailable`] (Linux): io_uring was forced (by `Options::backend` or
    ///   `DISPATCH_BACKEND`) and cannot be set up here; the error says why. Automatic
    ///   selection falls back to epoll instead.
    /// - [`InitError::UnknownBackend`]: `DISPATCH_BACKEND` names no backend.
    /// - [`InitError::UnsupportedBackend`]: the backend asked for does not exist on this
    ///   platform.
    /// - [`InitError::Os`]: creating the backend's descriptors failed (for example `EMFILE`).
    pub fn new(options: &Options) -> Result<Io<C>, InitError> {
        Io::build(options, None)
    }

    /// Creates a loop on the simulated world `sim` (see `dispatch_loop::sim`), whatever
    /// `options.backend` and `DISPATCH_BACKEND` say: virtual time, simulated sockets and
    /// files, `sim`'s seed and faults. One loop at a time runs on a world.
    ///
    /// # Errors
    /// As [`Io::new`]; [`InitError::Os`] when a loop already runs on `sim`.
    #[cfg(feature = "sim")]
    pub fn new_sim(options: &Options, sim: &crate::sim::Sim) -> Result<Io<C>, InitError> {
        Io::build(options, Some(sim))
    }

    /// The simulated world this loop runs on; `None` on every other backend.
    #[cfg(feature = "sim")]
    pub fn sim(&self) -> Option<&crate::sim::Sim> {
        self.backend.sim()
    }

    fn build(options: &Options, sim: Option<&SimWorld>) -> Result<Io<C>, InitError> {
        options.validate().map_err(InitError::InvalidOptions)?;
        let mut pool = (options.pool.buffers > 0).then(|| {
            let count = u16::try_from(options.pool.buffers).expect("validated: at most 32768");
            Pool::new(count, options.pool.buffer_size)
        });
        let (mut backend, fallback) = match sim {
            #[cfg(feature = "sim")]
            Some(sim) => (Backend::new_sim(options, sim)?, None),
            _ => Backend::new(options, pool.as_mut())?,
        };
        let registered = (options.registered.buffers > 0).then(|| {
            let count = u16::try_from(options.registered.buffers).expect("validated: <= 16384");
            let set = RegisteredSet::new(count, options.registered.buffer_size as usize);
            backend.register_buffers(&set);
            set
        });
        let mut stats = Stats::new(backend.kind(), fallback);
        stats.batch_wait_us = backend.batch_wait_us();
        stats.uring = backend.uring_features();
        stats.file_workers = backend.file_workers();
        let clock = backend.clock().unwrap_or_else(Clock::real);
        let slots = Slots::new(options.ops_max);
        // Room for one final result per slot, one result per pool buffer (each intermediate
        // result of a multishot receive holds one), and as many again for multishot accepts;
        // the loop reaps no more than fits.
        let completed = Completed::new(slots.capacity() * 2 + options.pool.buffers);
        let deadlines = Deadlines::new(slots.capacity());
        Ok(Io {
            deadlines,
            slots,
            overflow: Fifo::EMPTY,
            buffer_wait: Fifo::EMPTY,
            again: Fifo::EMPTY,
            resend: Fifo::EMPTY,
            completed,
            pool,
            registered,
            pool_lent: 0,
            backend,
            stats,
            running: false,
            stop_requested: false,
            in_kernel: 0,
            clock,
            _not_send: PhantomData,
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The most operations in flight at once (`Options::ops_max`; cancels have as many
    /// slots of their own).
    pub fn ops_max(&self) -> u32 {
        self.slots.ops_max()
    }

    /// Operations (cancels included) scheduled whose callbacks have not run yet.
    pub fn in_flight(&self) -> u32 {
        self.slots.busy()
    }

    /// Pool buffers lent out: held by [`crate::PoolBuf`] handles (or by pooled sends in
    /// flight). A dropped handle's buffer counts until the next turn takes it back. 0
    /// without a pool. A receive in progress (the kernel or a syscall filling a buffer) is
    /// not counted; `Stats::pool_waits` shows when the pool runs short.
    pub fn pool_buffers_lent(&self) -> u32 {
        self.pool_lent
    }

    /// Lends one of the loop's registered buffers (`Options::registered`): an empty
    /// [`AlignedBuf`] of `registered.buffer_size` bytes, page-aligned, which goes back to the
    /// loop's set when dropped (from any thread). Read into it or write from it with
    /// [`Io::read`] and [`Io::write`] as with any aligned buffer: on io_uring, where the set
    /// was registered with the kernel ([`crate::UringFeatures::registered_buffers`]), those
    /// become `READ_FIXED` and `WRITE_FIXED`, which skip pinning the buffer's pages on each
    /// operation; elsewhere they are plain reads and writes. `None` when every buffer is
    /// lent, or the loop has none. Measured on 4 KiB `O_DIRECT` reads and writes at depth
    /// 32 (`cargo xtask bench --storage-only`, docs/BENCHMARKS.md): 11–13% less CPU per
    /// operation than plain aligned buffers, the same IOPS.
    pub fn registered_buf(&mut self) -> Option<AlignedBuf> {
        self.registered.as_ref()?.lend()
    }

    /// Buffers in the pool (`Options::pool.buffers`; 0 without a pool), lent or not.
    pub fn pool_buffers(&self) -> u32 {
        self.pool.as_ref().map_or(0, |pool| u32::from(pool.count()))
    }

    /// The size of each pool buffer (`Options::pool.buffer_size`; 0 without a pool).
    pub fn pool_buffer_size(&self) -> u32 {
        self.pool.as_ref().map_or(0, |pool| pool.buffer_size())
    }

    /// A handle that wakes this loop from any thread; see [`Io::wait_wakeup`].
    pub fn waker(&self) -> Waker {
        self.backend.waker()
    }

    /// Ends the [`Io::run_for_ns`] or [`Io::run_until_idle`] in progress once the callbacks
    /// of the current turn have run. Called outside a run, it ends the next run after one
    /// turn that does not wait: that turn submits what is scheduled, reaps what is ready and
    /// runs those callbacks, and the run returns even if nothing was ready (a [`Io::tick`],
    /// being such a turn, answers it too). Operations in flight stay in flight; run the loop
    /// again to complete them. A stop asked for by a callback whose run a panic ended is
    /// forgotten.
    ///
    /// From a callback, this is how a server stops on a request. From another thread (a
    /// signal handler's thread, say), keep a [`Io::wait_wakeup`] pending whose callback
    /// calls `stop`, and call [`Waker::wake`]: the wake-up ends the wait in the kernel at
    /// once, on every backend.
    ///
    /// ```
    /// use dispatch_loop::{Io, Options};
    ///
    /// let mut io: Io<()> = Io::new(&Options::new(4)).expect("a backend");
    /// io.wait_wakeup(0, |_, io, _, _| io.stop()).expect("a free slot");
    /// let waker = io.waker();
    /// let thread = std::thread::spawn(move || waker.wake().expect("wake"));
    /// io.run_for_ns(&mut (), u64::MAX).expect("run"); // returns once woken
    /// thread.join().unwrap();
    /// ```
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// One turn that never blocks: submits everything scheduled, reaps what completed, runs
    /// those callbacks. Operations the callbacks schedule go out with the next turn.
    ///
    /// If a callback panics, the panic propagates out of `tick` (and `run_*`); the loop stays
    /// usable: the callbacks of the rest of that turn's completions run on the next turn,
    /// none is lost or run twice, and dropping the loop instead releases everything exactly
    /// once.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit or wait call; the loop stays usable.
    ///
    /// # Panics
    /// When called from a callback: a callback may schedule, cancel and `stop`, but never
    /// drive the loop it runs in (nor replace it, as with `std::mem::swap`).
    pub fn tick(&mut self, ctx: &mut C) -> io::Result<()> {
        Running::enter(self).poll_turn(ctx)
    }

    /// One turn that never blocks, then the stop asked for before or during it is answered:
    /// a tick, and a run that a stop asked for before it ends at once.
    fn poll_turn(&mut self, ctx: &mut C) -> io::Result<()> {
        self.turn(ctx, Until::Poll)?;
        self.take_stop();
        Ok(())
    }

    /// Runs the loop for `ns` nanoseconds: each turn submits everything scheduled in one
    /// syscall and blocks in the kernel until a completion or the deadline, then runs the
    /// callbacks. Returns at the deadline (an idle loop sleeps, it never spins), or after the
    /// turn in which [`Io::stop`] was called (after one turn that does not wait, when `stop`
    /// was called before the run); `ns == 0` is one non-blocking turn. `u64::MAX` runs until
    /// `stop`. On `sim` the nanoseconds are virtual: the simulated clock jumps
    /// from event to event and the call returns when it reaches the deadline, without
    /// sleeping (see `dispatch_loop::sim`). Since simulated time passes only while the loop
    /// waits, work that completes in every turn without waiting (a multishot poll of an
    /// always-ready simulated socket or file) would hold the clock at one instant: there the
    /// call also returns after 65,536 turns in a row at one virtual instant, so that it stays
    /// bounded; call it again to go on.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit or wait call; the loop stays usable.
    ///
    /// # Panics
    /// As [`Io::tick`].
    pub fn run_for_ns(&mut self, ctx: &mut C, ns: u64) -> io::Result<()> {
        let mut io = Running::enter(self);
        if io.stop_requested {
            return io.poll_turn(ctx);
        }
        // Never `Until::Forever`, even for `u64::MAX`: that means "until nothing is in
        // flight" (`run_until_idle`), and a loop with nothing in flight must still sleep here.
        let mut stall = Stall::new(&io.clock);
        let deadline_ns = stall.instant_ns().saturating_add(ns);
        loop {
            io.turn(ctx, Until::At(deadline_ns))?;
            let now_ns = io.clock.now_ns();
            if io.take_stop() || now_ns >= deadline_ns || stall.stalled(&io.clock, now_ns) {
                return Ok(());
            }
        }
    }

    /// Runs the loop until no operation is in flight (callbacks included: work they schedule
    /// keeps it running), or until the turn in which [`Io::stop`] was called (one turn that
    /// does not wait, when `stop` was called before the run). Blocks as long as operations
    /// are pending, however long that is.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit or wait call; the loop stays usable. On
    /// `sim`, also a simulated deadlock: operations wait that no simulated event can ever
    /// complete (the error names the seed).
    ///
    /// # Panics
    /// As [`Io::tick`].
    pub fn run_until_idle(&mut self, ctx: &mut C) -> io::Result<()> {
        let mut io = Running::enter(self);
        if io.stop_requested {
            return io.poll_turn(ctx);
        }
        while io.slots.busy() > 0 || !io.completed.is_empty() {
            io.turn(ctx, Until::Forever)?;
            if io.take_stop() {
                break;
            }
        }
        Ok(())
    }

    fn take_stop(&mut self) -> bool {
        std::mem::take(&mut self.stop_requested)
    }

    /// One turn: submit (draining the overflow queue into the SQ), wait, reap, dispatch.
    fn turn(&mut self, ctx: &mut C, until: Until) -> io::Result<()> {
        assert!(self.running);
        self.expire_deadlines();
        self.recycle_buffers();
        // What the last turn reaped but is not over goes to the backend again (the
        // callbacks' new operations went straight to it).
        while let Some(idx) = self.again.pop(self.slots.as_mut_slice()) {
            assert_eq!(self.slots[idx].state, State::Again);
            self.slots[idx].state = State::Overflow;
            self.overflow.push(self.slots.as_mut_slice(), idx);
        }
        // Park nothing longer than needed: while operations wait for SQ room, submit what fits
        // and refill, without blocking.
        self.refill();
        let reaped_from = self.completed.filled();
        let mut expired = 0;
        while !self.overflow.is_empty() {
            let args = self.slots.args_table();
            let pool = self.pool.as_mut();
            self.backend
                .flush(Wait::Poll, self.in_kernel, args, pool, &mut self.stats)?;
            expired += self.reap();
            self.refill();
            if self.reap_room() == 0 {
                break;
            }
        }
        // Completions already known (cancels of parked operations, EINTR retries, callbacks
        // a panic left for later, results a full queue left in the backend) must not wait
        // behind a blocking syscall, and a loop with nothing in flight has nothing to wait
        // for.
        let nothing_to_wait_for = until == Until::Forever && self.slots.busy() == 0;
        let known = !self.completed.is_empty() || self.backend.has_results();
        let until = if known || nothing_to_wait_for {
            Until::Poll
        } else {
            // The next deadline ends the wait, so that it is expired on time.
            match (until, self.deadlines.earliest_ns()) {
                (Until::Forever, Some(deadline_ns)) => Until::At(deadline_ns),
                (Until::At(at_ns), Some(deadline_ns)) => Until::At(at_ns.min(deadline_ns)),
                (until, _) => until,
            }
        };
        let wait = match until {
            Until::Poll => Wait::Poll,
            Until::Forever => Wait::Forever,
            Until::At(at_ns) => Wait::Within(at_ns.saturating_sub(self.clock.now_ns())),
        };
        let args = self.slots.args_table();
        let pool = self.pool.as_mut();
        self.backend
            .flush(wait, self.in_kernel, args, pool, &mut self.stats)?;
        expired += self.reap();
        if expired > 1 {
            self.order_expired(reaped_from);
        }
        self.dispatch(ctx);
        Ok(())
    }
}
