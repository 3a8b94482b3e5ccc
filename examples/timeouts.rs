//! Timeouts and cancel: timers that fire in deadline order, a receive with a deadline, a
//! receive the program gives up on, and a cancel that comes too late.
//!
//! ```text
//! cargo run -p examples --example timeouts
//! ```
//!
//! - `io.timeout(tag, ns, callback)` completes with `Ok(())` after `ns` nanoseconds, never
//!   earlier, or with `ECANCELED` if cancelled first.
//! - `io.set_deadline(id, ns)` bounds an operation already in flight: if it has not completed
//!   `ns` nanoseconds from now, the loop cancels it and its callback gets `ETIMEDOUT`. A
//!   deadline takes no slot, and costs no syscall unless it fires; call it again to move it
//!   (an idle timeout pushed back on every message).
//! - `io.cancel(tag, target, callback)` stops the operation whose scheduling returned the
//!   `OpId` `target`. The target's callback still runs, exactly once: with `ECANCELED`, or
//!   with its real result if it completed first. The cancel's own callback answers from
//!   what the target was when the cancel was scheduled: `Ok(())` (its callback had not run
//!   yet: that callback says whether it was cancelled), `ENOENT` (nothing left to cancel:
//!   its callback has run, the id is stale), `EALREADY` (a close, which cannot be stopped).
//!   Cancels have a slot budget of their own.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use dispatch_loop::{BufResult, Io, OpId, Options, Tag};

/// Any error, for `main` and its helpers.
type BoxError = Box<dyn std::error::Error>;

const MS: u64 = 1_000_000;
const RECV: Tag = 1;
const GIVE_UP: Tag = 2;

struct Ctx {
    /// The tags of the timers, in the order they fired.
    fired: Vec<Tag>,
    /// The receive in flight.
    recv: Option<OpId>,
    /// What became of the last receive.
    outcome: Option<io::Result<usize>>,
    /// What the last cancel answered.
    cancelled: Option<io::Result<()>>,
}

fn on_timer(ctx: &mut Ctx, _: &mut Io<Ctx>, tag: Tag, result: io::Result<()>) {
    match result {
        Ok(()) => ctx.fired.push(tag),
        Err(error) => eprintln!("timeouts: timer {tag}: {error}"),
    }
}

fn on_recv(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, (result, _buf): BufResult) {
    ctx.recv = None;
    ctx.outcome = Some(result);
}

/// The program gives up on the receive: it cancels it, if it is still in flight.
fn on_give_up(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, _: io::Result<()>) {
    let Some(recv) = ctx.recv else { return };
    let on_cancel = |ctx: &mut Ctx, _: &mut Io<Ctx>, _, result| ctx.cancelled = Some(result);
    if let Err(error) = io.cancel(GIVE_UP, recv, on_cancel) {
        eprintln!("timeouts: cannot cancel: {error}");
    }
}

fn recv(io: &mut Io<Ctx>, ctx: &mut Ctx, socket: &UnixStream) -> Result<OpId, BoxError> {
    let buf = Vec::with_capacity(64);
    let id = io.recv(RECV, socket.as_raw_fd(), buf, on_recv)?;
    ctx.recv = Some(id);
    Ok(id)
}

/// The receive's error after a run, or why there was none.
fn failed_recv(ctx: &mut Ctx) -> Result<io::Error, BoxError> {
    match ctx.outcome.take() {
        Some(Err(error)) => Ok(error),
        Some(Ok(n)) => Err(format!("the receive got {n} bytes, though nothing was sent").into()),
        None => Err("the receive never completed".into()),
    }
}

fn main() -> Result<(), BoxError> {
    // At most two operations in flight: a receive and a timer (cancels have their own budget).
    let mut io: Io<Ctx> = Io::new(&Options::new(2))?;
    let mut ctx = Ctx {
        fired: Vec::new(),
        recv: None,
        outcome: None,
        cancelled: None,
    };
    println!("timeouts: backend {}", io.stats().backend);

    // Two timers, scheduled out of order, fire in deadline order.
    for ms in [20, 10] {
        io.timeout(ms, ms * MS, on_timer)?;
    }
    io.run_until_idle(&mut ctx)?;
    assert_eq!(ctx.fired, [10, 20]);
    println!("timers of 20 and 10 ms fired in the order {:?}", ctx.fired);

    let (socket, mut peer) = UnixStream::pair()?;

    // A receive with a 50 ms deadline, and nobody writes: ETIMEDOUT, never early.
    let started = Instant::now();
    let id = recv(&mut io, &mut ctx, &socket)?;
    io.set_deadline(id, 50 * MS)?;
    io.run_until_idle(&mut ctx)?;
    let error = failed_recv(&mut ctx)?;
    assert_eq!(error.raw_os_error(), Some(libc::ETIMEDOUT));
    assert!(started.elapsed() >= Duration::from_millis(50));
    println!(
        "a receive with a 50 ms deadline, no data: {error} after {:?}",
        started.elapsed()
    );

    // A receive the program gives up on after 20 ms, with an explicit cancel: ECANCELED.
    recv(&mut io, &mut ctx, &socket)?;
    io.timeout(GIVE_UP, 20 * MS, on_give_up)?;
    io.run_until_idle(&mut ctx)?;
    let error = failed_recv(&mut ctx)?;
    assert_eq!(error.raw_os_error(), Some(libc::ECANCELED));
    assert!(matches!(ctx.cancelled.take(), Some(Ok(()))));
    println!("a receive cancelled after 20 ms: {error}; the cancel answered Ok");

    // Data waiting: the receive completes at once, and a cancel afterwards is too late: its
    // id is stale, there is nothing to cancel.
    std::io::Write::write_all(&mut peer, b"hello")?;
    let id = recv(&mut io, &mut ctx, &socket)?;
    io.run_until_idle(&mut ctx)?;
    let received = ctx.outcome.take().ok_or("the receive never completed")??;
    let on_cancel = |ctx: &mut Ctx, _: &mut Io<Ctx>, _, result| ctx.cancelled = Some(result);
    io.cancel(GIVE_UP, id, on_cancel)?;
    io.run_until_idle(&mut ctx)?;
    let late = ctx.cancelled.take().ok_or("the cancel never completed")?;
    let late = late.expect_err("a completed receive cannot be cancelled");
    assert_eq!(late.raw_os_error(), Some(libc::ENOENT));
    println!("a receive with data waiting: {received} bytes; cancelling it afterwards: {late}");
    Ok(())
}
