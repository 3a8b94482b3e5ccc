//! `Io<C>`: the loop. Operations are scheduled from anywhere (usually from inside a callback),
//! each turn hands everything scheduled to the backend in one syscall, and callbacks run
//! afterwards, never while completions are being reaped.
// One unsafe block: handing slot arguments to the backend, whose contract the slot table keeps.
#![allow(unsafe_code)]

mod deadline;
mod ops;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use self::deadline::Deadlines;
use crate::backend::{Backend, Wait};
use crate::completion::{buf_value, count_value, discard, fd_value, unit_value};
use crate::error::InitError;
use crate::operation::{Args, Callback};
use crate::options::Options;
use crate::slots::{Completed, Fifo, Slots, State};
use crate::stats::Stats;
use crate::waker::Waker;

/// How long `Io`'s drop waits for the kernel to give back operations it cancelled before it
/// leaks their memory rather than free memory the kernel could still write.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// The I/O loop, generic over the application's context `C`, which callbacks receive.
///
/// `Io` is deliberately not `Send`: one loop per thread. Use [`Io::waker`] to reach it from
/// other threads.
///
/// A receive and a send on a socket pair; the buffer moves into each operation and comes back
/// with its result:
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use dispatch_core::{BufResult, Io, Options, Tag};
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
/// bug), the loop still answers every operation exactly once and never hangs on cancel or
/// drop, but what the pending operations report differs: on io_uring the kernel holds the
/// file until they finish or are cancelled; on epoll and kqueue the registration vanishes
/// with the descriptor, and an operation that cannot wait any more fails (`EBADF`, or the
/// kernel's errno).
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
///   not (tested on Linux 6.18).
/// - **epoll** (Linux, when io_uring is blocked or missing) and **kqueue** (FreeBSD, macOS):
///   the loop tries each operation with a non-blocking syscall and waits for readiness only
///   when it would block; recv and send use `MSG_DONTWAIT`, and accept and connect switch the
///   socket to non-blocking mode. File operations (read and write at an offset, fsync,
///   openat, close) run inline, blocking the loop for their duration.
/// - Sockets the loop accepts are non-blocking and close-on-exec on every backend.
/// - Cancel answers alike everywhere (see [`Io::cancel`]); file offsets and blocking opens
///   differ as [`Io::read`], [`Io::write`] and [`Io::openat`] say.
/// - Several sends in flight on one stream socket are served in order on readiness
///   backends; io_uring does not promise an order once they wait for buffer space.
pub struct Io<C> {
    slots: Slots<C>,
    overflow: Fifo,
    completed: Completed,
    backend: Backend,
    stats: Stats,
    /// Set while `tick` or a `run_*` drives the loop (a guard clears it, even when a
    /// callback panics), so that driving it from a callback is caught.
    running: bool,
    /// Per-operation deadlines (`set_deadline`).
    deadlines: Deadlines,
    /// `stop` was called: the run in progress (or the next) returns after its turn.
    stop_requested: bool,
    /// Operations handed to the backend whose completion has not been reaped.
    in_kernel: u32,
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
    }
}

impl<C> Io<C> {
    /// Creates a loop with `options`' fixed limits. Every allocation the loop makes happens
    /// here.
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
        options.validate().map_err(InitError::InvalidOptions)?;
        let (backend, fallback) = Backend::new(options)?;
        let stats = Stats::new(backend.kind(), fallback);
        let slots = Slots::new(options.ops_max);
        let completed = Completed::new(slots.capacity());
        let deadlines = Deadlines::new(slots.capacity());
        Ok(Io {
            deadlines,
            slots,
            overflow: Fifo::EMPTY,
            completed,
            backend,
            stats,
            running: false,
            stop_requested: false,
            in_kernel: 0,
            _not_send: PhantomData,
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Operations (cancels included) scheduled whose callbacks have not run yet.
    pub fn in_flight(&self) -> u32 {
        self.slots.busy()
    }

    /// A handle that wakes this loop from any thread; see [`Io::wait_wakeup`].
    pub fn waker(&self) -> Waker {
        self.backend.waker()
    }

    /// Ends the [`Io::run_for_ns`] or [`Io::run_until_idle`] in progress once the callbacks
    /// of the current turn have run (or, called outside a run, the next run after its first
    /// turn). Operations in flight stay in flight; run the loop again to complete them.
    ///
    /// From a callback, this is how a server stops on a request. From another thread (a
    /// signal handler's thread, say), keep a [`Io::wait_wakeup`] pending whose callback
    /// calls `stop`, and call [`Waker::wake`]: the wake-up ends the wait in the kernel at
    /// once, on every backend.
    ///
    /// ```
    /// use dispatch_core::{Io, Options};
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
        Running::enter(self).turn(ctx, Wait::Poll)
    }

    /// Runs the loop for `ns` nanoseconds: each turn submits everything scheduled in one
    /// syscall and blocks in the kernel until a completion or the deadline, then runs the
    /// callbacks. Returns at the deadline (an idle loop sleeps, it never spins), or after the
    /// turn in which [`Io::stop`] was called; `ns == 0` is one non-blocking turn. `u64::MAX`
    /// runs until `stop`.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit or wait call; the loop stays usable.
    ///
    /// # Panics
    /// As [`Io::tick`].
    pub fn run_for_ns(&mut self, ctx: &mut C, ns: u64) -> io::Result<()> {
        let mut io = Running::enter(self);
        let deadline = Instant::now().checked_add(Duration::from_nanos(ns));
        let wait = deadline.map_or(Wait::Forever, Wait::Until);
        loop {
            io.turn(ctx, wait)?;
            if io.take_stop() || deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(());
            }
        }
    }

    /// Runs the loop until no operation is in flight (callbacks included: work they schedule
    /// keeps it running), or until the turn in which [`Io::stop`] was called. Blocks as long
    /// as operations are pending, however long that is.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit or wait call; the loop stays usable.
    ///
    /// # Panics
    /// As [`Io::tick`].
    pub fn run_until_idle(&mut self, ctx: &mut C) -> io::Result<()> {
        let mut io = Running::enter(self);
        while io.slots.busy() > 0 || !io.completed.is_empty() {
            io.turn(ctx, Wait::Forever)?;
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
    fn turn(&mut self, ctx: &mut C, wait: Wait) -> io::Result<()> {
        assert!(self.running);
        self.expire_deadlines();
        // Park nothing longer than needed: while operations wait for SQ room, submit what fits
        // and refill, without blocking.
        self.refill();
        while !self.overflow.is_empty() {
            let args = self.slots.args_table();
            self.backend
                .flush(Wait::Poll, self.in_kernel, args, &mut self.stats)?;
            self.reap();
            self.refill();
        }
        // Completions already known (cancels of parked operations, EINTR retries, callbacks
        // a panic left for later) must not wait behind a blocking syscall, and a loop with
        // nothing in flight has nothing to wait for.
        let nothing_to_wait_for = wait == Wait::Forever && self.slots.busy() == 0;
        let wait = if !self.completed.is_empty() || nothing_to_wait_for {
            Wait::Poll
        } else {
            // The next deadline ends the wait, so that it is expired on time.
            match (wait, self.deadlines.earliest()) {
                (Wait::Forever, Some(deadline)) => Wait::Until(deadline),
                (Wait::Until(until), Some(deadline)) => Wait::Until(until.min(deadline)),
                (wait, _) => wait,
            }
        };
        let args = self.slots.args_table();
        self.backend
            .flush(wait, self.in_kernel, args, &mut self.stats)?;
        self.reap();
        self.dispatch(ctx);
        Ok(())
    }

    /// Moves parked operations into the SQ while it has room, oldest first.
    fn refill(&mut self) {
        while let Some(idx) = self.overflow.peek() {
            assert_eq!(self.slots[idx].state, State::Overflow);
            if !self.push(idx) {
                return;
            }
            let popped = self.overflow.pop(self.slots.as_mut_slice());
            assert_eq!(popped, Some(idx));
        }
    }

    /// Hands slot `idx` to the backend; `false` when the SQ is full.
    fn push(&mut self, idx: u32) -> bool {
        let user_data = self.slots.id(idx).user_data();
        let args = &mut self.slots.args_table()[idx as usize];
        // SAFETY: the argument table is allocated once and never moved or resized, and a
        // slot's arguments are only taken out after the backend reports its completion
        // (`reap` then `dispatch`), or in `Drop` after every operation the kernel held has
        // completed.
        let pushed = unsafe { self.backend.push(idx, user_data, args) };
        if pushed.is_err() {
            return false;
        }
        self.slots[idx].state = State::Kernel;
        self.in_kernel += 1;
        self.stats.ops_submitted += 1;
        true
    }

    /// Sends a new operation to the SQ, or parks it behind any already parked.
    fn enqueue(&mut self, idx: u32) {
        if self.overflow.is_empty() && self.push(idx) {
            return;
        }
        self.park(idx);
    }

    fn park(&mut self, idx: u32) {
        self.slots[idx].state = State::Overflow;
        self.overflow.push(self.slots.as_mut_slice(), idx);
        self.stats.overflow_parked += 1;
        self.stats.overflow_len_max = self.stats.overflow_len_max.max(self.overflow.len());
    }

    /// Completes slot `idx` with `result` without the kernel (it never reached it).
    fn complete_now(&mut self, idx: u32, result: i32) {
        let slot = &mut self.slots[idx];
        assert!(matches!(slot.state, State::Free | State::Overflow));
        slot.state = State::Completed;
        slot.result = result;
        self.completed.push(idx);
    }

    /// Moves every ready completion to the completed queue; runs no callback.
    fn reap(&mut self) {
        let slots = &mut self.slots;
        let completed = &mut self.completed;
        let overflow = &mut self.overflow;
        let in_kernel = &mut self.in_kernel;
        self.backend.reap(|user_data, result| {
            let idx = slots.kernel_slot(user_data);
            assert!(*in_kernel > 0);
            *in_kernel -= 1;
            let result = match (result, slots.args(idx)) {
                // A close is never retried: the descriptor is released whatever close
                // returned, and its number may already belong to someone else.
                (result, Args::Close { .. }) if result == -libc::EINTR => 0,
                // io_uring: the target is being performed and will complete on its own; the
                // cancel was requested, as on readiness backends, and the target's callback
                // tells the outcome.
                (result, Args::Cancel { .. }) if result == -libc::EALREADY => 0,
                // EINTR never escapes the layer: the operation goes out again.
                (result, _) if result == -libc::EINTR => {
                    slots[idx].state = State::Overflow;
                    overflow.push(slots.as_mut_slice(), idx);
                    return;
                }
                // The loop cancelled it because its deadline passed.
                (result, _) if result == -libc::ECANCELED && slots[idx].timed_out => {
                    -libc::ETIMEDOUT
                }
                (result, _) => result,
            };
            let slot = &mut slots[idx];
            slot.state = State::Completed;
            slot.result = result;
            completed.push(idx);
        });
    }

    /// Runs the callbacks of everything completed so far. Each slot leaves the completed
    /// queue and is released before its callback runs, so a panicking callback leaves the
    /// loop consistent: the rest of the batch stays queued for the next turn. Completions
    /// that callbacks cause (cancels of parked operations) wait for the next turn, so a turn
    /// always ends.
    fn dispatch(&mut self, ctx: &mut C) {
        self.completed.start_batch();
        while let Some(idx) = self.completed.next_in_batch() {
            let slot = &mut self.slots[idx];
            assert_eq!(slot.state, State::Completed);
            let tag = slot.tag;
            let result = slot.result;
            let callback = std::mem::replace(&mut slot.callback, Callback::None);
            let args = self.slots.take_args(idx);
            self.deadlines.forget(idx);
            self.slots.release(idx);
            if let Callback::Internal = callback {
                drop(unit_value(args, result));
                continue;
            }
            self.stats.ops_completed += 1;
            match callback {
                Callback::Fd(callback) => callback(ctx, self, tag, fd_value(args, result)),
                Callback::Buf(callback) => callback(ctx, self, tag, buf_value(args, result)),
                Callback::Unit(callback) => callback(ctx, self, tag, unit_value(args, result)),
                Callback::Count(callback) => callback(ctx, self, tag, count_value(args, result)),
                Callback::None | Callback::Internal => {
                    unreachable!("slot {idx} completed without a callback")
                }
            }
        }
    }
}

impl<C> Drop for Io<C> {
    /// Releases every slot exactly once, whatever its state, without running callbacks:
    /// parked operations are dropped (buffers freed, a parked close's descriptor closed);
    /// operations the kernel holds are cancelled and reaped until it has given all of them
    /// back, so that no buffer is freed while the kernel may write it; completed ones are
    /// converted and dropped (descriptors the kernel created are closed, a performed close is
    /// not repeated).
    fn drop(&mut self) {
        while let Some(idx) = self.overflow.pop(self.slots.as_mut_slice()) {
            assert_eq!(self.slots[idx].state, State::Overflow);
            self.slots[idx].state = State::Completed;
            drop(self.slots.take_args(idx));
        }
        if !self.drain_kernel() {
            eprintln!(
                "dispatch-core: {} operations still in the kernel after \
                 {DROP_REAP_TIMEOUT:?}; \
                 leaking their memory rather than freeing it under the kernel",
                self.in_kernel
            );
            self.slots.leak();
            return;
        }
        // Everything left is ours alone.
        let slots = &mut self.slots;
        self.completed.drain(|idx| {
            assert_eq!(slots[idx].state, State::Completed);
            let result = slots[idx].result;
            slots[idx].state = State::Free;
            discard(slots.take_args(idx), result);
        });
        for idx in 0..self.slots.capacity() {
            let state = self.slots[idx].state;
            assert!(
                matches!(state, State::Free | State::Completed),
                "slot {idx} left in state {state:?} by drop"
            );
            assert!(matches!(self.slots.args(idx), Args::Empty));
        }
    }
}

impl<C> Io<C> {
    /// For `Drop`: cancels every operation the kernel holds and reaps until all have come
    /// back (their results discarded). `false` if the kernel kept some past the timeout.
    fn drain_kernel(&mut self) -> bool {
        for idx in 0..self.slots.capacity() {
            if self.slots[idx].state != State::Kernel {
                continue;
            }
            let user_data = self.slots.id(idx).user_data();
            if let Err(error) = self.backend.cancel_for_drop(user_data, &mut self.stats) {
                eprintln!("dispatch-core: cancel on drop failed: {error}");
            }
        }
        let deadline = Instant::now() + DROP_REAP_TIMEOUT;
        while self.in_kernel > 0 && Instant::now() < deadline {
            let turn_deadline = Instant::now() + Duration::from_millis(100);
            let args = self.slots.args_table();
            let wait = Wait::Until(turn_deadline);
            if let Err(error) = self
                .backend
                .flush(wait, self.in_kernel, args, &mut self.stats)
            {
                eprintln!("dispatch-core: reaping on drop failed: {error}");
                return false;
            }
            let slots = &mut self.slots;
            let in_kernel = &mut self.in_kernel;
            self.backend.reap(|user_data, result| {
                let idx = slots.kernel_slot(user_data);
                slots[idx].state = State::Free;
                *in_kernel -= 1;
                discard(slots.take_args(idx), result);
            });
        }
        self.in_kernel == 0
    }
}
