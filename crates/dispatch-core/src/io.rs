//! `Io<C>`: the loop. Operations are scheduled from anywhere (usually from inside a callback),
//! each turn hands everything scheduled to the backend in one syscall, and callbacks run
//! afterwards, never while completions are being reaped.
// One unsafe block: handing slot arguments to the backend, whose contract the slot table keeps.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Wait, BACKEND_ENV};
use crate::completion::{buf_value, count_value, discard, fd_value, unit_value};
use crate::operation::{
    Args, BufCallback, Callback, CountCallback, FdCallback, OpId, ScheduleError, ScheduleErrorKind,
    Tag, UnitCallback,
};
use crate::options::Options;
use crate::slots::{Completed, Fifo, Slots, State};
use crate::stats::{BackendKind, Stats};
use crate::waker::Waker;

/// Why `Io::new` failed.
#[derive(Debug)]
pub enum InitError {
    /// The options break a limit; the message names the field.
    InvalidOptions(&'static str),
    /// io_uring cannot be used here; the error says why in words a user can act on.
    #[cfg(target_os = "linux")]
    Unavailable(sys_uring::SetupError),
    /// `DISPATCH_BACKEND` names no backend.
    UnknownBackend(String),
    /// The backend asked for does not exist on this platform (kqueue on Linux, epoll or
    /// io_uring on macOS).
    UnsupportedBackend(BackendKind),
    /// Creating the wake-up descriptor failed (for example `EMFILE`).
    Os(io::Error),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::InvalidOptions(message) => write!(f, "invalid options: {message}"),
            #[cfg(target_os = "linux")]
            InitError::Unavailable(error) => write!(f, "io_uring unavailable: {error}"),
            InitError::UnknownBackend(name) => write!(
                f,
                "{BACKEND_ENV}={name:?} names no backend (use auto, io_uring, epoll, kqueue or \
                 kqueue-fake)"
            ),
            InitError::UnsupportedBackend(kind) => {
                write!(f, "the {kind} backend does not exist on this platform")?;
                if *kind == BackendKind::Kqueue {
                    write!(
                        f,
                        " (on Linux, kqueue-fake runs its logic over a kevent double)"
                    )?;
                }
                Ok(())
            }
            InitError::Os(error) => write!(f, "creating the loop failed: {error}"),
        }
    }
}

impl std::error::Error for InitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InitError::InvalidOptions(_)
            | InitError::UnknownBackend(_)
            | InitError::UnsupportedBackend(_) => None,
            #[cfg(target_os = "linux")]
            InitError::Unavailable(error) => Some(error),
            InitError::Os(error) => Some(error),
        }
    }
}

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
/// - Several sends in flight on one stream socket are served in order on readiness
///   backends; io_uring does not promise an order once they wait for buffer space.
pub struct Io<C> {
    slots: Slots<C>,
    overflow: Fifo,
    completed: Completed,
    backend: Backend,
    stats: Stats,
    running: bool,
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

impl<C> Io<C> {
    /// Creates a loop with `options`' fixed limits. Every allocation the loop makes happens
    /// here.
    ///
    /// # Errors
    /// [`InitError::InvalidOptions`] for a broken limit; [`InitError::Unavailable`] when
    /// io_uring cannot be set up, saying why.
    pub fn new(options: &Options) -> Result<Io<C>, InitError> {
        options.validate().map_err(InitError::InvalidOptions)?;
        let (backend, fallback) = Backend::new(options)?;
        let stats = Stats::new(backend.kind(), fallback);
        Ok(Io {
            slots: Slots::new(options.ops_max),
            overflow: Fifo::EMPTY,
            completed: Completed::new(options.ops_max),
            backend,
            stats,
            running: false,
            in_kernel: 0,
            _not_send: PhantomData,
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Operations scheduled whose callbacks have not run yet.
    pub fn in_flight(&self) -> u32 {
        self.slots.busy()
    }

    /// A handle that wakes this loop from any thread; see [`Io::wait_wakeup`].
    pub fn waker(&self) -> Waker {
        self.backend.waker()
    }

    /// Accepts a connection on the listening socket `listener`. The new socket is
    /// non-blocking and close-on-exec on every backend, and owned by the callback's
    /// `OwnedFd`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn accept(
        &mut self,
        tag: Tag,
        listener: RawFd,
        callback: FdCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(
            tag,
            Args::Accept { fd: listener },
            Callback::Fd(callback),
            (),
        )
    }

    /// Connects the socket `fd` to `addr`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn connect(
        &mut self,
        tag: Tag,
        fd: RawFd,
        addr: SocketAddr,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Connect { fd, addr };
        self.schedule(tag, args, Callback::Unit(callback), ())
    }

    /// Receives into `buf`'s spare capacity (`buf[len..capacity]`); the callback gets the
    /// byte count (0 at end of stream) and `buf` with its length extended by it.
    ///
    /// # Errors
    /// When every slot is in flight, or `buf` has no spare capacity; the error returns `buf`.
    pub fn recv(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        self.schedule_receive(tag, Args::Recv { fd, buf }, callback)
    }

    /// Sends `buf[..]`; the callback gets the byte count sent (possibly short) and `buf`
    /// unchanged. A reset peer is an error result (`EPIPE`, `ECONNRESET`), never a signal.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `buf`.
    pub fn send(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        self.schedule_buf(tag, Args::Send { fd, buf }, callback)
    }

    /// Reads into `buf`'s spare capacity from file offset `offset`; the callback gets the
    /// byte count (0 at end of file) and `buf` with its length extended by it.
    ///
    /// # Errors
    /// When every slot is in flight, or `buf` has no spare capacity; the error returns `buf`.
    pub fn read(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        self.schedule_receive(tag, Args::Read { fd, buf, offset }, callback)
    }

    /// Writes `buf[..]` at file offset `offset`; the callback gets the byte count written.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `buf`.
    pub fn write(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        self.schedule_buf(tag, Args::Write { fd, buf, offset }, callback)
    }

    /// Shuts down the reading side, writing side, or both of the socket `fd`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn shutdown(
        &mut self,
        tag: Tag,
        fd: RawFd,
        how: Shutdown,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.schedule(
            tag,
            Args::Shutdown { fd, how },
            Callback::Unit(callback),
            (),
        )
    }

    /// Closes `fd`, which the operation owns from now on. A close cannot be cancelled.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `fd`, still open.
    pub fn close(
        &mut self,
        tag: Tag,
        fd: OwnedFd,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<OwnedFd>> {
        let Some(idx) = self.slots.alloc() else {
            return Err(self.exhausted(fd));
        };
        Ok(self.start(idx, tag, Args::Close { fd }, Callback::Unit(callback)))
    }

    /// Flushes `fd`'s data and metadata to stable storage (`fsync`).
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn fsync(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(tag, Args::Fsync { fd }, Callback::Unit(callback), ())
    }

    /// Opens `path` relative to the directory `dir` (`libc::AT_FDCWD` for the working
    /// directory) with `open(2)` `flags` and `mode`; `O_CLOEXEC` is always added. The new
    /// descriptor is owned by the callback's `OwnedFd`.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `path`.
    pub fn openat(
        &mut self,
        tag: Tag,
        dir: RawFd,
        path: CString,
        flags: i32,
        mode: u32,
        callback: FdCallback<C>,
    ) -> Result<OpId, ScheduleError<CString>> {
        let Some(idx) = self.slots.alloc() else {
            return Err(self.exhausted(path));
        };
        let args = Args::Openat {
            dir,
            path,
            flags,
            mode,
        };
        Ok(self.start(idx, tag, args, Callback::Fd(callback)))
    }

    /// Completes with `Ok(())` after `timeout_ns` nanoseconds (never earlier), or with
    /// `ECANCELED` if cancelled first.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn timeout(
        &mut self,
        tag: Tag,
        timeout_ns: u64,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule(
            tag,
            Args::Timeout { timeout_ns },
            Callback::Unit(callback),
            (),
        )
    }

    /// Cancels the operation `target`. The target's callback still runs exactly once: with
    /// `ECANCELED`, or with its real result if it completed first (an accepted socket or
    /// opened file then reaches its callback and is never leaked). This callback gets
    /// `Ok(())` when the target was cancelled, `ENOENT` when there was nothing to cancel
    /// (completed, or a stale id), `EALREADY` when it could no longer be stopped.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn cancel(
        &mut self,
        tag: Tag,
        target: OpId,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let Some(idx) = self.slots.alloc() else {
            return Err(self.exhausted(()));
        };
        let slot = &mut self.slots[idx];
        slot.tag = tag;
        slot.callback = Callback::Unit(callback);
        self.slots.set_args(idx, Args::Cancel { target });
        let id = self.slots.id(idx);
        match self
            .slots
            .lookup(target)
            .map(|target_idx| (target_idx, self.slots[target_idx].state))
        {
            None | Some((_, State::Completed)) => self.complete_now(idx, -libc::ENOENT),
            Some((target_idx, State::Overflow)) => {
                if matches!(self.slots.args(target_idx), Args::Close { .. }) {
                    self.complete_now(idx, -libc::EALREADY);
                } else {
                    let removed = self.overflow.remove(self.slots.as_mut_slice(), target_idx);
                    assert!(removed, "slot {target_idx} in state Overflow is not queued");
                    self.complete_now(target_idx, -libc::ECANCELED);
                    self.complete_now(idx, 0);
                }
            }
            Some((_, State::Kernel)) => self.enqueue(idx),
            Some((_, State::Free)) => unreachable!("lookup never returns a free slot"),
        }
        Ok(id)
    }

    /// Does nothing, and completes with `Ok(())` on the next turn after going through the
    /// backend like any operation: it measures the loop's own cost per operation, and lets a
    /// callback continue work after the completions already pending.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn nop(&mut self, tag: Tag, callback: UnitCallback<C>) -> Result<OpId, ScheduleError<()>> {
        self.schedule(tag, Args::Nop, Callback::Unit(callback), ())
    }

    /// Completes after the next [`Waker::wake`] (at once if a wake-up is already pending),
    /// with the number of wake-ups it coalesced. Keeps the loop busy until then, so
    /// `run_until_idle` will not return while it is pending.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn wait_wakeup(
        &mut self,
        tag: Tag,
        callback: CountCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Wakeup;
        self.schedule(tag, args, Callback::Count(callback), ())
    }

    /// One turn that never blocks: submits everything scheduled, reaps what completed, runs
    /// those callbacks. Operations the callbacks schedule go out with the next turn.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit call; the loop stays usable.
    pub fn tick(&mut self, ctx: &mut C) -> io::Result<()> {
        self.enter_running();
        let result = self.turn(ctx, Wait::Poll);
        self.running = false;
        result
    }

    /// Runs the loop for `ns` nanoseconds: each turn submits everything scheduled in one
    /// syscall and blocks in the kernel until a completion or the deadline, then runs the
    /// callbacks. Returns at the deadline (an idle loop sleeps, it never spins); `ns == 0`
    /// is one non-blocking turn.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit call; the loop stays usable.
    pub fn run_for_ns(&mut self, ctx: &mut C, ns: u64) -> io::Result<()> {
        self.enter_running();
        let deadline = Instant::now() + Duration::from_nanos(ns);
        let result = loop {
            if let Err(error) = self.turn(ctx, Wait::Until(deadline)) {
                break Err(error);
            }
            if Instant::now() >= deadline {
                break Ok(());
            }
        };
        self.running = false;
        result
    }

    /// Runs the loop until no operation is in flight (callbacks included: work they schedule
    /// keeps it running). Blocks as long as operations are pending, however long that is.
    ///
    /// # Errors
    /// An unexpected error from the kernel's submit call; the loop stays usable.
    pub fn run_until_idle(&mut self, ctx: &mut C) -> io::Result<()> {
        self.enter_running();
        let mut result = Ok(());
        while self.slots.busy() > 0 {
            if let Err(error) = self.turn(ctx, Wait::Forever) {
                result = Err(error);
                break;
            }
        }
        self.running = false;
        result
    }

    fn enter_running(&mut self) {
        assert!(
            !self.running,
            "Io driven re-entrantly: tick/run called from a callback"
        );
        self.running = true;
    }

    /// One turn: submit (draining the overflow queue into the SQ), wait, reap, dispatch.
    fn turn(&mut self, ctx: &mut C, wait: Wait) -> io::Result<()> {
        assert!(self.running);
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
        // Completions already known (cancels of parked operations, EINTR retries) must not
        // wait behind a blocking syscall.
        let wait = if self.completed.is_empty() {
            wait
        } else {
            Wait::Poll
        };
        let wait = if wait == Wait::Forever && self.slots.busy() == 0 {
            Wait::Poll
        } else {
            wait
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
            let idx = slots.kernel_slot(OpId::from_user_data(user_data));
            assert!(*in_kernel > 0);
            *in_kernel -= 1;
            if result == -libc::EINTR {
                // EINTR never escapes the layer: the operation goes out again.
                slots[idx].state = State::Overflow;
                overflow.push(slots.as_mut_slice(), idx);
                return;
            }
            let slot = &mut slots[idx];
            slot.state = State::Completed;
            slot.result = result;
            completed.push(idx);
        });
    }

    /// Runs the callbacks of everything completed so far. Completions that callbacks cause
    /// (cancels of parked operations) wait for the next turn, so a turn always ends.
    fn dispatch(&mut self, ctx: &mut C) {
        let batch = self.completed.take_batch();
        for &idx in &batch {
            let slot = &mut self.slots[idx];
            assert_eq!(slot.state, State::Completed);
            let tag = slot.tag;
            let result = slot.result;
            let callback = std::mem::replace(&mut slot.callback, Callback::None);
            let args = self.slots.take_args(idx);
            self.slots.release(idx);
            self.stats.ops_completed += 1;
            match callback {
                Callback::Fd(callback) => callback(ctx, self, tag, fd_value(args, result)),
                Callback::Buf(callback) => callback(ctx, self, tag, buf_value(args, result)),
                Callback::Unit(callback) => callback(ctx, self, tag, unit_value(args, result)),
                Callback::Count(callback) => callback(ctx, self, tag, count_value(args, result)),
                Callback::None => unreachable!("slot {idx} completed without a callback"),
            }
        }
        self.completed.restore(batch);
    }

    fn schedule<T>(
        &mut self,
        tag: Tag,
        args: Args,
        callback: Callback<C>,
        value: T,
    ) -> Result<OpId, ScheduleError<T>> {
        let Some(idx) = self.slots.alloc() else {
            return Err(self.exhausted(value));
        };
        Ok(self.start(idx, tag, args, callback))
    }

    fn schedule_buf(
        &mut self,
        tag: Tag,
        args: Args,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        let Some(idx) = self.slots.alloc() else {
            let buf = match args {
                Args::Recv { buf, .. }
                | Args::Send { buf, .. }
                | Args::Read { buf, .. }
                | Args::Write { buf, .. } => buf,
                _ => unreachable!("schedule_buf takes buffer operations only"),
            };
            return Err(self.exhausted(buf));
        };
        Ok(self.start(idx, tag, args, Callback::Buf(callback)))
    }

    /// `schedule_buf` for operations that fill the buffer's spare capacity, which must exist:
    /// a 0-byte receive would look like end of file.
    fn schedule_receive(
        &mut self,
        tag: Tag,
        args: Args,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        let (Args::Recv { buf, .. } | Args::Read { buf, .. }) = &args else {
            unreachable!("schedule_receive takes recv and read only")
        };
        if buf.len() == buf.capacity() {
            let (Args::Recv { buf, .. } | Args::Read { buf, .. }) = args else {
                unreachable!()
            };
            return Err(ScheduleError {
                kind: ScheduleErrorKind::NoSpareCapacity,
                value: buf,
            });
        }
        self.schedule_buf(tag, args, callback)
    }

    fn exhausted<T>(&self, value: T) -> ScheduleError<T> {
        ScheduleError {
            kind: ScheduleErrorKind::SlotsExhausted {
                ops_max: self.slots.capacity(),
            },
            value,
        }
    }

    fn start(&mut self, idx: u32, tag: Tag, args: Args, callback: Callback<C>) -> OpId {
        // `alloc` asserted the slot free; `set_args` asserts it held no arguments.
        let slot = &mut self.slots[idx];
        slot.tag = tag;
        slot.callback = callback;
        let id = OpId {
            idx,
            generation: slot.generation,
        };
        self.slots.set_args(idx, args);
        self.enqueue(idx);
        id
    }
}

impl<C> Drop for Io<C> {
    /// Cancels everything the kernel holds and reaps until it has given all of it back, so
    /// that no buffer is freed while the kernel may write it; descriptors that operations
    /// produced or owned are closed. Callbacks do not run.
    fn drop(&mut self) {
        // Parked operations never reached the kernel: dropping their arguments frees buffers
        // and closes the descriptor a parked close owns.
        while let Some(idx) = self.overflow.pop(self.slots.as_mut_slice()) {
            drop(self.slots.take_args(idx));
        }
        let mut pending = 0_u32;
        for idx in 0..self.slots.capacity() {
            if self.slots[idx].state != State::Kernel {
                continue;
            }
            pending += 1;
            let user_data = self.slots.id(idx).user_data();
            if let Err(error) = self.backend.cancel_for_drop(user_data, &mut self.stats) {
                eprintln!("dispatch-core: cancel on drop failed: {error}");
            }
        }
        let deadline = Instant::now() + DROP_REAP_TIMEOUT;
        while pending > 0 && Instant::now() < deadline {
            let turn_deadline = Instant::now() + Duration::from_millis(100);
            let args = self.slots.args_table();
            let wait = Wait::Until(turn_deadline);
            if let Err(error) = self.backend.flush(wait, pending, args, &mut self.stats) {
                eprintln!("dispatch-core: reaping on drop failed: {error}");
                break;
            }
            let slots = &mut self.slots;
            self.backend.reap(|user_data, result| {
                let idx = slots
                    .lookup(OpId::from_user_data(user_data))
                    .expect("known slot");
                assert_eq!(slots[idx].state, State::Kernel);
                slots[idx].state = State::Completed;
                slots[idx].result = result;
                pending -= 1;
                discard(slots.take_args(idx), result);
            });
        }
        if pending > 0 {
            eprintln!(
                "dispatch-core: {pending} operations still in the kernel after \
                 {DROP_REAP_TIMEOUT:?}; \
                 leaking their memory rather than freeing it under the kernel"
            );
            self.slots.leak();
            return;
        }
        // Everything left is ours alone: converting results closes descriptors the kernel
        // created, and dropping arguments closes descriptors a close never got to.
        let slots = &mut self.slots;
        self.completed.drain(|idx| {
            assert_eq!(slots[idx].state, State::Completed);
            let result = slots[idx].result;
            discard(slots.take_args(idx), result);
        });
    }
}
