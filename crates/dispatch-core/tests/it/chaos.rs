//! Chaos: random interleavings of operations on real socket pairs, pipes and files, mixed
//! with what callers get wrong and what goes wrong under them: cancels of live and stale
//! operations, descriptors closed under pending operations (by a close operation or by the
//! test itself), callbacks that panic, and loops dropped with operations in flight.
//!
//! How it works: a case is a sequence of steps run on one loop at a time (a drop step drops
//! the loop and goes on with a fresh one). Every operation's tag indexes a record of it; its
//! callback counts its runs, and a planted one panics afterwards (caught around `tick` and
//! the `run_*` calls, silenced in the panic hook). Every descriptor the test creates is
//! tracked with its identity (device and inode): the test holds it, a close operation owns
//! it, or it is closed. At the end the test cancels whatever is pending, runs until idle
//! under a guard timeout whose callback panics (so a hang fails the case instead of hanging
//! the test), drops the loop and its own descriptors, and checks:
//! - each callback ran at most once, and exactly once unless its loop was dropped first; a
//!   planted panic always comes out of the call that ran its callback;
//! - a close operation's descriptor is closed when its callback runs, or when its loop is
//!   dropped before that; a descriptor the test holds is never closed or replaced under it
//!   (a double close by the loop hits one: the kernel hands out the lowest free number);
//! - the process has the same descriptors open as before the case: none leaked, none of the
//!   process's own closed;
//! - no panic but the planted ones, from `tick`, `run_*`, scheduling or `Drop`; no `Err` from
//!   `tick` or `run_*` (a descriptor closed under an operation is that operation's error).
//!
//! Each case runs alone in a child process of its own (the test binary, re-executed): the
//! descriptor counts see only that case, and a case that kills its process (std aborts on a
//! descriptor closed twice) fails and shrinks like any other. The test prints its seed;
//! `CHAOS_SEED=<seed>` replays the run, `CHAOS_CASE='<case>'` (printed with a failure) runs
//! one case, and `PROPTEST_CASES` sets the number of cases.

use std::any::Any;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use dispatch_loop::{BufResult, Io, OpId, Options, ScheduleError, ScheduleErrorKind, Tag};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::check;

/// Enough slots that a case never runs out (40 steps at most): a full loop cannot schedule
/// the cancels that end a case.
const OPS_MAX: u32 = 64;
/// Tag bit of an operation whose callback panics after recording its result.
const PANIC_BIT: Tag = 1 << 62;
/// Tags of the guard timeout and of its cancel.
const GUARD: Tag = 1 << 61;
/// How long the final run may take before the guard calls it a hang.
const GUARD_NS: u64 = 2_000_000_000;
const CASES_DEFAULT: u32 = 256;
const CHILD_ROLE: &str = "chaos";

/// The payload of a planted panic.
struct Planted;
/// The payload of the guard timeout's panic: the final run did not finish.
struct HangGuard;

type Identity = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdKind {
    SocketEnd,
    PipeRead,
    PipeWrite,
    File,
    /// Opened by an `openat` operation; its callback handed it to the test.
    Opened,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdState {
    /// The test holds it.
    Held,
    /// Owned by the close operation with this index.
    Closing(usize),
    Closed,
    /// Closed or replaced under the test (reported); its number is forgotten, not closed.
    Lost,
}

/// A descriptor the test created.
struct Tracked {
    kind: FdKind,
    raw: RawFd,
    identity: Identity,
    fd: Option<OwnedFd>,
    state: FdState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Recv,
    Send,
    Read,
    Write,
    Timeout,
    Nop,
    Wakeup,
    Openat,
    /// A cancel of the operation with this index.
    Cancel(usize),
    /// A close of the tracked descriptor with this index.
    Close(usize),
}

/// One scheduled operation; its index is its tag.
#[derive(Debug)]
struct Op {
    kind: OpKind,
    /// The loop it was scheduled on (the case's first is 0; each drop starts the next).
    loop_n: u32,
    id: OpId,
    runs: u32,
    /// The errno its callback got (0 for success), once it ran.
    result: Option<i32>,
    /// The capacity of the buffer it was given, which must come back.
    capacity: usize,
}

/// The loop's context: what the callbacks record.
#[derive(Default)]
struct Chaos {
    fds: Vec<Tracked>,
    ops: Vec<Op>,
    violations: Vec<String>,
    loop_n: u32,
    /// Operations of the current loop whose callbacks have not run.
    pending: usize,
    guard: Option<OpId>,
    /// Planted panics thrown by callbacks.
    planted: usize,
}

impl Chaos {
    fn violation(&mut self, message: String) {
        self.violations.push(message);
    }

    /// Records a callback's run; returns the operation's index.
    fn ran(&mut self, tag: Tag, errno: i32) -> usize {
        let idx = (tag & !PANIC_BIT) as usize;
        let loop_n = self.loop_n;
        let op = &mut self.ops[idx];
        op.runs += 1;
        let (kind, runs) = (op.kind, op.runs);
        if runs > 1 {
            self.violation(format!("op {idx} ({kind:?}): callback ran {runs} times"));
            return idx;
        }
        op.result = Some(errno);
        if op.loop_n != loop_n {
            self.violation(format!(
                "op {idx} ({kind:?}): callback ran after its loop's drop"
            ));
            return idx;
        }
        self.pending -= 1;
        let allowed = match kind {
            OpKind::Timeout | OpKind::Nop | OpKind::Wakeup => {
                matches!(errno, 0 | libc::ECANCELED)
            }
            OpKind::Cancel(_) => matches!(errno, 0 | libc::ENOENT | libc::EALREADY),
            // The close owned a valid descriptor: EBADF means someone closed it first.
            OpKind::Close(_) => errno == 0,
            // Anything an operation on a possibly closed descriptor can get, but the
            // kernel-internal errnos (512 to 530), which must never reach a callback.
            _ => !(512..=530).contains(&errno),
        };
        if !allowed {
            self.violation(format!("op {idx} ({kind:?}): errno {errno}"));
        }
        idx
    }

    /// After a callback recorded its run: ends the guard once nothing else is pending, and
    /// panics if the operation was planted to.
    fn after(&mut self, io: &mut Io<Chaos>, tag: Tag) {
        if self.pending == 0 {
            if let Some(guard) = self.guard.take() {
                // Every slot but the guard's is free, so this cannot fail.
                io.cancel(GUARD | 1, guard, on_guard_cancel).unwrap();
            }
        }
        if tag & PANIC_BIT != 0 {
            self.planted += 1;
            std::panic::panic_any(Planted);
        }
    }

    /// A close operation's callback ran: its descriptor must be closed (or its number taken
    /// by something new).
    fn closed(&mut self, op: usize, fd: usize) {
        let tracked = &mut self.fds[fd];
        let (raw, state) = (tracked.raw, tracked.state);
        tracked.state = FdState::Closed;
        if state != FdState::Closing(op) {
            self.violation(format!(
                "op {op}: close of descriptor {raw} in state {state:?}"
            ));
        }
        if identity_of(raw) == Some(self.fds[fd].identity) {
            self.violation(format!("op {op}: close succeeded, but {raw} is still open"));
        }
    }

    /// Tracks a new descriptor. Its number must not be one the test holds: the kernel hands
    /// out only free numbers, so that one was closed under the test.
    fn track(&mut self, kind: FdKind, fd: OwnedFd) -> usize {
        let raw = fd.as_raw_fd();
        let identity = identity_of(raw).expect("a new descriptor is open");
        let held = |t: &Tracked| t.state == FdState::Held && t.raw == raw;
        if let Some(old) = self.fds.iter().position(held) {
            let old_kind = self.fds[old].kind;
            self.violation(format!(
                "descriptor {raw} ({old_kind:?}), held by the test, was closed under it: a new \
                 {kind:?} got its number"
            ));
            self.lose(old);
        }
        self.fds.push(Tracked {
            kind,
            raw,
            identity,
            fd: Some(fd),
            state: FdState::Held,
        });
        self.fds.len() - 1
    }

    /// Forgets a descriptor closed or replaced under the test, without closing its number.
    fn lose(&mut self, fd: usize) {
        if let Some(owned) = self.fds[fd].fd.take() {
            let _ = owned.into_raw_fd();
        }
        self.fds[fd].state = FdState::Lost;
    }

    /// What happened to every operation and descriptor, for a failure's message.
    fn record(&self) -> String {
        let ops = self.ops.iter().enumerate().map(|(idx, op)| {
            let Op {
                kind,
                loop_n,
                runs,
                result,
                ..
            } = op;
            format!("  op {idx}: {kind:?} on loop {loop_n}: errno {result:?}, ran {runs}x")
        });
        let fds = self.fds.iter().enumerate().map(|(idx, fd)| {
            let Tracked {
                kind, raw, state, ..
            } = fd;
            format!("  fd {idx}: {kind:?} {raw}, {state:?}")
        });
        let lines: Vec<String> = ops.chain(fds).collect();
        format!("what happened:\n{}", lines.join("\n"))
    }

    /// Every descriptor the test holds is still the one it created.
    fn check_held(&mut self, when: &str) {
        for fd in 0..self.fds.len() {
            let t = &self.fds[fd];
            if t.state == FdState::Held && identity_of(t.raw) != Some(t.identity) {
                let (raw, kind) = (t.raw, t.kind);
                self.violation(format!(
                    "descriptor {raw} ({kind:?}), held by the test, was closed or replaced \
                     under it {when}"
                ));
                self.lose(fd);
            }
        }
    }
}

fn errno<T>(result: &io::Result<T>) -> i32 {
    result
        .as_ref()
        .err()
        .map_or(0, |error| error.raw_os_error().unwrap_or(-1))
}

fn on_buf(c: &mut Chaos, io: &mut Io<Chaos>, tag: Tag, (result, buf): BufResult) {
    let op = c.ran(tag, errno(&result));
    let capacity = c.ops[op].capacity;
    if buf.capacity() != capacity {
        let got = buf.capacity();
        c.violation(format!(
            "op {op}: buffer of {capacity} came back with {got}"
        ));
    }
    if result.is_ok_and(|n| n > capacity) {
        c.violation(format!("op {op}: more bytes than the buffer holds"));
    }
    c.after(io, tag);
}

fn on_unit(c: &mut Chaos, io: &mut Io<Chaos>, tag: Tag, result: io::Result<()>) {
    let op = c.ran(tag, errno(&result));
    if let (OpKind::Close(fd), 1) = (c.ops[op].kind, c.ops[op].runs) {
        c.closed(op, fd);
    }
    c.after(io, tag);
}

fn on_count(c: &mut Chaos, io: &mut Io<Chaos>, tag: Tag, result: io::Result<u64>) {
    let op = c.ran(tag, errno(&result));
    if matches!(result, Ok(0)) {
        c.violation(format!("op {op}: a wake-up wait completed with 0 wake-ups"));
    }
    c.after(io, tag);
}

fn on_fd(c: &mut Chaos, io: &mut Io<Chaos>, tag: Tag, result: io::Result<OwnedFd>) {
    let errno = errno(&result);
    // Tracked before anything can panic, so that a planted panic leaks nothing.
    if let Ok(fd) = result {
        c.track(FdKind::Opened, fd);
    }
    c.ran(tag, errno);
    c.after(io, tag);
}

fn on_guard(_: &mut Chaos, _: &mut Io<Chaos>, _: Tag, result: io::Result<()>) {
    if result.is_ok() {
        std::panic::panic_any(HangGuard);
    }
}

fn on_guard_cancel(_: &mut Chaos, _: &mut Io<Chaos>, _: Tag, _: io::Result<()>) {}

/// The device and inode behind `raw`, or `None` when `raw` is not open.
#[allow(unsafe_code)]
// `st_dev` and `st_ino` are `u64` on Linux but not everywhere.
#[allow(clippy::unnecessary_cast)]
fn identity_of(raw: RawFd) -> Option<Identity> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` reads only the number and writes one `stat` into the buffer, which is
    // one `stat` large; on a closed number it fails with EBADF and writes nothing.
    let rc = unsafe { libc::fstat(raw, stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `fstat` succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

/// The process's open descriptors below 4096, probed with `fcntl(F_GETFD)`.
#[allow(unsafe_code)]
fn open_fds() -> BTreeSet<RawFd> {
    (0..4096)
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the descriptor's flags; a closed number fails with
            // EBADF and changes nothing.
            unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
        })
        .collect()
}

/// What a descriptor is, for messages (Linux only; "?" elsewhere).
fn describe(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or_else(|_| "?".to_owned(), |path| path.display().to_string())
}

#[derive(Debug, Clone)]
enum Step {
    Recv {
        fd: usize,
        len: u8,
        panics: bool,
    },
    Send {
        fd: usize,
        len: u8,
        panics: bool,
    },
    Read {
        fd: usize,
        offset: u16,
        len: u8,
        panics: bool,
    },
    Write {
        fd: usize,
        offset: u16,
        len: u8,
        panics: bool,
    },
    Timeout {
        us: u16,
        panics: bool,
    },
    Nop {
        panics: bool,
    },
    WaitWakeup {
        panics: bool,
    },
    Wake,
    Openat {
        panics: bool,
    },
    /// Cancels the n-th operation of the current loop (modulo their number), live or not.
    Cancel {
        op: usize,
        panics: bool,
    },
    /// Hands a descriptor the test holds to a close operation.
    CloseOp {
        fd: usize,
        panics: bool,
    },
    /// The test closes a descriptor it holds, whatever is pending on it.
    TestClose {
        fd: usize,
    },
    /// The test writes to a descriptor it holds (feeding a pending receive on its peer).
    TestWrite {
        fd: usize,
        len: u8,
    },
    NewPair,
    NewPipe,
    Tick,
    RunForUs(u16),
    DropIo,
}

fn step() -> impl Strategy<Value = Step> {
    let fd = any::<usize>;
    let len = || 1_u8..=64;
    let panics = || proptest::bool::weighted(0.15);
    prop_oneof![
        4 => (fd(), len(), panics()).prop_map(|(fd, len, panics)| Step::Recv { fd, len, panics }),
        3 => (fd(), len(), panics()).prop_map(|(fd, len, panics)| Step::Send { fd, len, panics }),
        2 => (fd(), 0_u16..4096, len(), panics())
            .prop_map(|(fd, offset, len, panics)| Step::Read { fd, offset, len, panics }),
        2 => (fd(), 0_u16..4096, len(), panics())
            .prop_map(|(fd, offset, len, panics)| Step::Write { fd, offset, len, panics }),
        2 => (0_u16..2000, panics()).prop_map(|(us, panics)| Step::Timeout { us, panics }),
        2 => panics().prop_map(|panics| Step::Nop { panics }),
        2 => panics().prop_map(|panics| Step::WaitWakeup { panics }),
        1 => Just(Step::Wake),
        1 => panics().prop_map(|panics| Step::Openat { panics }),
        3 => (any::<usize>(), panics()).prop_map(|(op, panics)| Step::Cancel { op, panics }),
        2 => (fd(), panics()).prop_map(|(fd, panics)| Step::CloseOp { fd, panics }),
        2 => fd().prop_map(|fd| Step::TestClose { fd }),
        2 => (fd(), len()).prop_map(|(fd, len)| Step::TestWrite { fd, len }),
        1 => Just(Step::NewPair),
        1 => Just(Step::NewPipe),
        4 => Just(Step::Tick),
        2 => (0_u16..2000).prop_map(Step::RunForUs),
        1 => Just(Step::DropIo),
    ]
}

/// A panic payload, sorted.
enum Caught {
    Planted,
    Hang,
    Other(String),
}

fn caught(payload: &(dyn Any + Send)) -> Caught {
    if payload.is::<Planted>() {
        Caught::Planted
    } else if payload.is::<HangGuard>() {
        Caught::Hang
    } else {
        let message = if let Some(message) = payload.downcast_ref::<&str>() {
            (*message).to_owned()
        } else if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else {
            "a panic with a payload of another type".to_owned()
        };
        let at = LAST_PANIC_AT.lock().unwrap_or_else(PoisonError::into_inner);
        Caught::Other(format!("{message} (at {at})"))
    }
}

/// One case: the loop, its context, and what the test needs to go on after a drop.
struct Case {
    io: Option<Io<Chaos>>,
    chaos: Chaos,
    options: Options,
    dir: PathBuf,
    opened: u32,
    /// Planted panics that came out of `tick` and `run_*`.
    planted_caught: usize,
    /// Set by a panic that was not planted: the loop cannot be trusted any further.
    aborted: bool,
}

impl Case {
    fn new(io: Io<Chaos>, options: Options, dir: PathBuf) -> Case {
        let mut case = Case {
            io: Some(io),
            chaos: Chaos::default(),
            options,
            dir,
            opened: 0,
            planted_caught: 0,
            aborted: false,
        };
        for _ in 0..2 {
            case.new_pair();
        }
        case.new_pipe();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(case.dir.join("file"))
            .unwrap();
        case.chaos.track(FdKind::File, file.into());
        case
    }

    fn new_pair(&mut self) {
        let (a, b) = UnixStream::pair().unwrap();
        self.chaos.track(FdKind::SocketEnd, a.into());
        self.chaos.track(FdKind::SocketEnd, b.into());
    }

    fn new_pipe(&mut self) {
        let (read, write) = rustix::pipe::pipe().unwrap();
        self.chaos.track(FdKind::PipeRead, read);
        self.chaos.track(FdKind::PipeWrite, write);
    }

    fn io(&mut self) -> &mut Io<Chaos> {
        self.io.as_mut().expect("a loop")
    }

    /// The n-th descriptor the test holds (modulo their number).
    fn pick(&self, n: usize) -> Option<usize> {
        let held = |&fd: &usize| self.chaos.fds[fd].state == FdState::Held;
        let count = (0..self.chaos.fds.len()).filter(held).count();
        if count == 0 {
            return None;
        }
        (0..self.chaos.fds.len()).filter(held).nth(n % count)
    }

    /// Runs one step; a panic that was not planted aborts the case.
    fn step(&mut self, n: usize, step: &Step) {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.apply(step)));
        if let Err(payload) = outcome {
            self.on_panic(&*payload, &format!("in step {n} ({step:?})"));
        }
        self.chaos.check_held(&format!("by step {n} ({step:?})"));
    }

    fn on_panic(&mut self, payload: &(dyn Any + Send), when: &str) {
        match caught(payload) {
            Caught::Planted => self.planted_caught += 1,
            Caught::Hang => {
                let ops = self.chaos.ops.iter().enumerate();
                let pending: Vec<String> = ops
                    .filter(|(_, op)| op.loop_n == self.chaos.loop_n && op.runs == 0)
                    .map(|(idx, op)| format!("op {idx} ({:?})", op.kind))
                    .collect();
                let pending = pending.join(", ");
                let message = format!("hang {when}: never completed: {pending}");
                self.chaos.violation(message);
                self.aborted = true;
            }
            Caught::Other(message) => {
                self.chaos.violation(format!("panic {when}: {message}"));
                self.aborted = true;
            }
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Recv { fd, len, panics } => self.recv(fd, len, panics),
            Step::Send { fd, len, panics } => self.send(fd, len, panics),
            Step::Read {
                fd,
                offset,
                len,
                panics,
            } => self.read(fd, offset, len, panics),
            Step::Write {
                fd,
                offset,
                len,
                panics,
            } => self.write(fd, offset, len, panics),
            Step::Timeout { us, panics } => {
                let ns = u64::from(us) * 1000;
                let _ = self.schedule(OpKind::Timeout, 0, panics, |io, tag| {
                    io.timeout(tag, ns, on_unit)
                });
            }
            Step::Nop { panics } => {
                let _ = self.schedule(OpKind::Nop, 0, panics, |io, tag| io.nop(tag, on_unit));
            }
            Step::WaitWakeup { panics } => {
                let _ = self.schedule(OpKind::Wakeup, 0, panics, |io, tag| {
                    io.wait_wakeup(tag, on_count)
                });
            }
            Step::Wake => {
                if let Err(error) = self.io().waker().wake() {
                    self.chaos.violation(format!("wake failed: {error}"));
                }
            }
            Step::Openat { panics } => self.openat(panics),
            Step::Cancel { op, panics } => self.cancel(op, panics),
            Step::CloseOp { fd, panics } => self.close_op(fd, panics),
            Step::TestClose { fd } => self.test_close(fd),
            Step::TestWrite { fd, len } => self.test_write(fd, len),
            Step::NewPair => self.new_pair(),
            Step::NewPipe => self.new_pipe(),
            Step::Tick => self.drive("tick", |io, chaos| io.tick(chaos)),
            Step::RunForUs(us) => {
                let ns = u64::from(us) * 1000;
                self.drive("run_for_ns", |io, chaos| io.run_for_ns(chaos, ns));
            }
            Step::DropIo => self.drop_loop(),
        }
    }

    /// Runs the loop with `run`; a planted panic passes through to `step`.
    fn drive(
        &mut self,
        name: &str,
        run: impl FnOnce(&mut Io<Chaos>, &mut Chaos) -> io::Result<()>,
    ) {
        let io = self.io.as_mut().expect("a loop");
        if let Err(error) = run(io, &mut self.chaos) {
            self.chaos.violation(format!("{name} failed: {error}"));
        }
    }

    /// Schedules one operation with `start`, recording it first; returns its index, or the
    /// value a failed schedule gave back.
    fn schedule<T>(
        &mut self,
        kind: OpKind,
        capacity: usize,
        panics: bool,
        start: impl FnOnce(&mut Io<Chaos>, Tag) -> Result<OpId, ScheduleError<T>>,
    ) -> Result<usize, T> {
        let idx = self.chaos.ops.len();
        let tag = idx as Tag | if panics { PANIC_BIT } else { 0 };
        let in_flight = self.io().in_flight();
        match start(self.io.as_mut().expect("a loop"), tag) {
            Ok(id) => {
                self.chaos.ops.push(Op {
                    kind,
                    loop_n: self.chaos.loop_n,
                    id,
                    runs: 0,
                    result: None,
                    capacity,
                });
                self.chaos.pending += 1;
                Ok(idx)
            }
            Err(error) => {
                let full = ScheduleErrorKind::SlotsExhausted { ops_max: OPS_MAX };
                if error.kind != full || in_flight != OPS_MAX {
                    let kind = error.kind;
                    let message = format!("{kind:?} with {in_flight} of {OPS_MAX} in flight");
                    self.chaos.violation(message);
                }
                Err(error.value)
            }
        }
    }

    fn recv(&mut self, fd: usize, len: u8, panics: bool) {
        let Some(fd) = self.pick(fd) else { return };
        let raw = self.chaos.fds[fd].raw;
        let buf = Vec::with_capacity(usize::from(len));
        let _ = self.schedule(OpKind::Recv, buf.capacity(), panics, |io, tag| {
            io.recv(tag, raw, buf, on_buf)
        });
    }

    fn send(&mut self, fd: usize, len: u8, panics: bool) {
        let Some(fd) = self.pick(fd) else { return };
        let raw = self.chaos.fds[fd].raw;
        let buf = vec![len; usize::from(len)];
        let _ = self.schedule(OpKind::Send, buf.capacity(), panics, |io, tag| {
            io.send(tag, raw, buf, on_buf)
        });
    }

    fn read(&mut self, fd: usize, offset: u16, len: u8, panics: bool) {
        let Some(fd) = self.pick(fd) else { return };
        let raw = self.chaos.fds[fd].raw;
        let buf = Vec::with_capacity(usize::from(len));
        let _ = self.schedule(OpKind::Read, buf.capacity(), panics, |io, tag| {
            io.read(tag, raw, buf, u64::from(offset), on_buf)
        });
    }

    fn write(&mut self, fd: usize, offset: u16, len: u8, panics: bool) {
        let Some(fd) = self.pick(fd) else { return };
        let raw = self.chaos.fds[fd].raw;
        let buf = vec![len; usize::from(len)];
        let _ = self.schedule(OpKind::Write, buf.capacity(), panics, |io, tag| {
            io.write(tag, raw, buf, u64::from(offset), on_buf)
        });
    }

    /// Opens (creating it) a file of its own, so that its identity is its own.
    fn openat(&mut self, panics: bool) {
        self.opened += 1;
        let path = self.dir.join(format!("opened-{}", self.opened));
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let flags = libc::O_RDWR | libc::O_CREAT;
        let _ = self.schedule(OpKind::Openat, 0, panics, |io, tag| {
            io.openat(tag, dispatch_loop::AT_FDCWD, path, flags, 0o600, on_fd)
        });
    }

    /// Cancels an operation of the current loop, pending or long completed (not a cancel).
    fn cancel(&mut self, n: usize, panics: bool) {
        let loop_n = self.chaos.loop_n;
        let targets: Vec<usize> = (0..self.chaos.ops.len())
            .filter(|&op| {
                let op = &self.chaos.ops[op];
                op.loop_n == loop_n && !matches!(op.kind, OpKind::Cancel(_))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let target = targets[n % targets.len()];
        let _ = self.cancel_op(target, panics);
    }

    fn cancel_op(&mut self, target: usize, panics: bool) -> Result<usize, ()> {
        let id = self.chaos.ops[target].id;
        self.schedule(OpKind::Cancel(target), 0, panics, |io, tag| {
            io.cancel(tag, id, on_unit)
        })
    }

    fn close_op(&mut self, fd: usize, panics: bool) {
        let Some(fd) = self.pick(fd) else { return };
        let owned = self.chaos.fds[fd].fd.take().expect("held");
        match self.schedule(OpKind::Close(fd), 0, panics, |io, tag| {
            io.close(tag, owned, on_unit)
        }) {
            Ok(op) => self.chaos.fds[fd].state = FdState::Closing(op),
            Err(owned) => self.chaos.fds[fd].fd = Some(owned),
        }
    }

    fn test_close(&mut self, fd: usize) {
        let Some(fd) = self.pick(fd) else { return };
        self.chaos.check_held("before the test closed one");
        let tracked = &mut self.chaos.fds[fd];
        if tracked.state == FdState::Held {
            drop(tracked.fd.take());
            tracked.state = FdState::Closed;
        }
    }

    /// Writes without blocking where that is possible, and few enough bytes in all that a
    /// pipe never fills; errors (a closed peer, a read-only end) are expected.
    fn test_write(&mut self, fd: usize, len: u8) {
        let Some(fd) = self.pick(fd) else { return };
        let tracked = &self.chaos.fds[fd];
        let owned = tracked.fd.as_ref().expect("held").as_fd();
        let buf = vec![len; usize::from(len)];
        let _ = match tracked.kind {
            FdKind::SocketEnd => rustix::net::send(owned, &buf, rustix::net::SendFlags::DONTWAIT),
            FdKind::PipeWrite => rustix::io::write(owned, &buf),
            FdKind::File | FdKind::Opened => rustix::io::pwrite(owned, &buf, 0),
            FdKind::PipeRead => Ok(0),
        };
    }

    /// Drops the loop with whatever is in flight, checks what it owned is closed, and goes
    /// on with a fresh loop.
    fn drop_loop(&mut self) {
        self.drop_io("dropping the loop");
        let loop_n = self.chaos.loop_n;
        for fd in 0..self.chaos.fds.len() {
            let FdState::Closing(op) = self.chaos.fds[fd].state else {
                continue;
            };
            let Tracked { raw, identity, .. } = self.chaos.fds[fd];
            self.chaos.fds[fd].state = FdState::Closed;
            if self.chaos.ops[op].loop_n == loop_n && identity_of(raw) == Some(identity) {
                let message = format!("dropping the loop left {raw}, owned by close op {op}, open");
                self.chaos.violation(message);
            }
        }
        self.chaos.loop_n += 1;
        self.chaos.pending = 0;
        self.chaos.guard = None;
        self.io = Some(check::io(&self.options).expect("a loop as before"));
    }

    fn drop_io(&mut self, when: &str) {
        let io = self.io.take();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(io))) {
            let message = match caught(&*payload) {
                Caught::Other(message) => message,
                Caught::Planted | Caught::Hang => "a callback ran".to_owned(),
            };
            self.chaos
                .violation(format!("Drop panicked {when}: {message}"));
        }
    }
}

impl Case {
    /// Ends the case on a live loop: cancels everything pending, then runs until idle
    /// under the guard.
    fn finish(&mut self) {
        let loop_n = self.chaos.loop_n;
        // Not the cancels: io_uring can cancel a cancel, which then gets ECANCELED itself.
        let pending: Vec<usize> = (0..self.chaos.ops.len())
            .filter(|&op| {
                let op = &self.chaos.ops[op];
                op.loop_n == loop_n && op.runs == 0 && !matches!(op.kind, OpKind::Cancel(_))
            })
            .collect();
        for target in pending {
            if self.cancel_op(target, false).is_err() {
                return;
            }
        }
        if self.chaos.pending > 0 {
            match self.io().timeout(GUARD, GUARD_NS, on_guard) {
                Ok(guard) => self.chaos.guard = Some(guard),
                Err(_) => {
                    self.chaos.violation("no slot for the guard".to_owned());
                    return;
                }
            }
        }
        // Each planted panic ends one call; whatever else is pending runs on the next.
        for _ in 0..self.chaos.ops.len() + 2 {
            let io = self.io.as_mut().expect("a loop");
            match catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut self.chaos))) {
                Ok(Ok(())) => return self.check_idle(),
                Ok(Err(error)) => {
                    let message = format!("run_until_idle failed: {error}");
                    self.chaos.violation(message);
                }
                Err(payload) => {
                    self.on_panic(&*payload, "in the final run_until_idle");
                    if self.aborted {
                        return;
                    }
                }
            }
        }
        let message = "run_until_idle never returned Ok".to_owned();
        self.chaos.violation(message);
    }

    /// After the final run: every operation of the live loop ran, every ECANCELED came from a
    /// cancel, and every planted panic came out of the loop.
    fn check_idle(&mut self) {
        let in_flight = self.io().in_flight();
        if in_flight != 0 {
            let message = format!("{in_flight} operations in flight after run_until_idle");
            self.chaos.violation(message);
        }
        let loop_n = self.chaos.loop_n;
        let mut messages = Vec::new();
        for (idx, op) in self.chaos.ops.iter().enumerate() {
            if op.loop_n == loop_n && op.runs == 0 {
                messages.push(format!("op {idx} ({:?}): callback never ran", op.kind));
            }
        }
        // A cancel's `Ok` may also mean "requested, but the target completed first", so only
        // this direction holds: ECANCELED comes from a cancel that succeeded, or from one
        // whose callback never ran because its loop was dropped first.
        for (idx, op) in self.chaos.ops.iter().enumerate() {
            let cancelled_by =
                |c: &Op| c.kind == OpKind::Cancel(idx) && matches!(c.result, Some(0) | None);
            if op.result == Some(libc::ECANCELED) && !self.chaos.ops.iter().any(cancelled_by) {
                messages.push(format!(
                    "op {idx} got ECANCELED, but no cancel of it succeeded"
                ));
            }
        }
        let planted = self.chaos.planted;
        if planted != self.planted_caught {
            let caught = self.planted_caught;
            messages.push(format!(
                "{planted} planted panics, {caught} came out of the loop"
            ));
        }
        self.chaos.violations.extend(messages);
    }

    /// Drops the loop, then every descriptor the test holds (each checked first).
    fn close_all(&mut self) {
        self.drop_io("at the end of the case");
        self.chaos.check_held("by the end of the case");
        for tracked in &mut self.chaos.fds {
            if tracked.state == FdState::Held {
                drop(tracked.fd.take());
                tracked.state = FdState::Closed;
            }
        }
    }
}

/// Runs one case in this process (a child); returns its violations.
fn check_case(steps: &[Step], sq_entries: u32) -> Result<(), String> {
    let before = open_fds();
    let mut options = Options::new(OPS_MAX);
    options.uring.sq_entries = sq_entries;
    let Some(io) = check::io::<Chaos>(&options) else {
        return Ok(());
    };
    let dir = check::temp_path("chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let mut case = Case::new(io, options, dir.clone());
    for (n, step) in steps.iter().enumerate() {
        if case.aborted {
            break;
        }
        case.step(n, step);
    }
    if !case.aborted {
        case.finish();
    }
    case.close_all();
    let mut violations = std::mem::take(&mut case.chaos.violations);
    let record = case.chaos.record();
    drop(case);
    let after = open_fds();
    for fd in after.difference(&before) {
        violations.push(format!("descriptor {fd} leaked: {}", describe(*fd)));
    }
    for fd in before.difference(&after) {
        violations.push(format!(
            "descriptor {fd}, open before the case, was closed by it"
        ));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    if violations.is_empty() {
        return Ok(());
    }
    let all = violations.join("\n  ");
    Err(format!(
        "{} violations:\n  {all}\n{record}",
        violations.len()
    ))
}

/// Where the last panic happened, for the message of one that was not planted.
static LAST_PANIC_AT: Mutex<String> = Mutex::new(String::new());

/// Planted panics and the guard's print nothing; others print as usual (and become
/// violations that name their location).
fn quiet_planted_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(location) = info.location() {
            let mut at = LAST_PANIC_AT.lock().unwrap_or_else(PoisonError::into_inner);
            *at = location.to_string();
        }
        let payload = info.payload();
        if !(payload.is::<Planted>() || payload.is::<HangGuard>()) {
            default(info);
        }
    }));
}

/// A case as text, one step's `Debug` after another: what a child runs, and what a failure
/// prints for `CHAOS_CASE`.
fn encode(steps: &[Step], sq_entries: u32) -> String {
    let steps: Vec<String> = steps.iter().map(|step| format!("{step:?}")).collect();
    format!("{sq_entries}; {}", steps.join("; "))
}

fn decode(text: &str) -> (Vec<Step>, u32) {
    let mut parts = text.split(';').map(str::trim);
    let sq_entries = parts.next().unwrap().parse().expect("sq_entries first");
    let steps = parts.filter(|part| !part.is_empty()).map(decode_step);
    (steps.collect(), sq_entries)
}

/// One step from its `Debug`: the variant's name, then its fields' values in order.
fn decode_step(text: &str) -> Step {
    let tokens: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|token| !token.is_empty())
        .collect();
    let values: Vec<u64> = (tokens[1..].iter())
        .filter_map(|&token| match token {
            "true" => Some(1),
            "false" => Some(0),
            _ => token.parse().ok(),
        })
        .collect();
    let fd = || values[0] as usize;
    let len = |at: usize| values[at] as u8;
    let panics = |at: usize| values[at] != 0;
    match tokens[0] {
        "Recv" => Step::Recv {
            fd: fd(),
            len: len(1),
            panics: panics(2),
        },
        "Send" => Step::Send {
            fd: fd(),
            len: len(1),
            panics: panics(2),
        },
        "Read" => Step::Read {
            fd: fd(),
            offset: values[1] as u16,
            len: len(2),
            panics: panics(3),
        },
        "Write" => Step::Write {
            fd: fd(),
            offset: values[1] as u16,
            len: len(2),
            panics: panics(3),
        },
        "Timeout" => Step::Timeout {
            us: values[0] as u16,
            panics: panics(1),
        },
        "Nop" => Step::Nop { panics: panics(0) },
        "WaitWakeup" => Step::WaitWakeup { panics: panics(0) },
        "Wake" => Step::Wake,
        "Openat" => Step::Openat { panics: panics(0) },
        "Cancel" => Step::Cancel {
            op: values[0] as usize,
            panics: panics(1),
        },
        "CloseOp" => Step::CloseOp {
            fd: fd(),
            panics: panics(1),
        },
        "TestClose" => Step::TestClose { fd: fd() },
        "TestWrite" => Step::TestWrite {
            fd: fd(),
            len: len(1),
        },
        "NewPair" => Step::NewPair,
        "NewPipe" => Step::NewPipe,
        "Tick" => Step::Tick,
        "RunForUs" => Step::RunForUs(values[0] as u16),
        "DropIo" => Step::DropIo,
        name => panic!("no step {name:?} in {text:?}"),
    }
}

const TEST: &str = "chaos::random_chaos_keeps_every_contract";
const CASE_ENV: &str = "CHAOS_CASE";

/// Runs the case `encoded` alone in a child process: `Err` with what it printed (less
/// backtraces) unless it passed. A case that kills its process (an abort on a descriptor
/// closed twice) fails like any other, and shrinks.
fn run_child(encoded: &str) -> Result<(), String> {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--test-threads", "1", "--nocapture"])
        .env(check::CHILD_ENV, CHILD_ROLE)
        .env(CASE_ENV, encoded)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && stdout.contains("1 passed") {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let backtrace = |line: &&str| {
        let line = line.trim_start();
        line.starts_with("at ")
            || line
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
    };
    let printed: Vec<&str> = stderr.lines().filter(|line| !backtrace(line)).collect();
    Err(format!("{}\n{}", output.status, printed.join("\n")))
}

fn config() -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES_DEFAULT;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        config.max_shrink_time = 60_000;
    }
    config.failure_persistence = None;
    config
}

fn seed() -> u64 {
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        return seed.parse().expect("CHAOS_SEED is a number");
    }
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Generates cases from the seed, runs each in a child, and shrinks a failing one.
fn run_cases() {
    let seed = seed();
    let config = config();
    let cases = config.cases;
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).unwrap_or_default();
    eprintln!("chaos: seed {seed} (replay: CHAOS_SEED={seed}), {cases} cases, backend {backend:?}");
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed.to_le_bytes(); 4].concat());
    let mut runner = TestRunner::new_with_rng(config, rng);
    // Small submission queues half the time: parking is where slots change hands.
    let sq_entries = prop_oneof![1_u32..=2, 3_u32..=8];
    let strategy = (proptest::collection::vec(step(), 1..40), sq_entries);
    let result = runner.run(&strategy, |(steps, sq_entries)| {
        run_child(&encode(&steps, sq_entries)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (steps, sq_entries))) => panic!(
            "chaos seed {seed}: the minimal failing case:\n{steps:#?}\nsq_entries = \
             {sq_entries}\nwhich failed with: {reason}\nreplay: {CASE_ENV}='{}'",
            encode(&steps, sq_entries)
        ),
        Err(TestError::Abort(reason)) => panic!("chaos seed {seed}: aborted: {reason}"),
    }
}

/// The child's part: one case, from `CHAOS_CASE`.
fn run_one_case() {
    let encoded = std::env::var(CASE_ENV).expect("the case to run");
    let (steps, sq_entries) = decode(&encoded);
    quiet_planted_panics();
    let result = check_case(&steps, sq_entries);
    drop(std::panic::take_hook());
    if let Err(violations) = result {
        panic!("{violations}");
    }
}

#[test]
fn random_chaos_keeps_every_contract() {
    match check::child_role() {
        Some(role) if role == CHILD_ROLE => run_one_case(),
        Some(_) => {}
        None => match std::env::var(CASE_ENV) {
            Ok(encoded) => {
                if let Err(output) = run_child(&encoded) {
                    panic!("the case failed: {output}");
                }
            }
            Err(_) => run_cases(),
        },
    }
}
