//! Zero heap allocations per operation in steady state, counted by a global allocator.
//!
//! The count is per thread (other tests run concurrently on their own threads, and the wide
//! test's waking thread allocates as it likes), kept in a const-initialised thread-local that
//! itself never allocates: only what the loop's thread allocates is counted. Beside it, the
//! file workers' allocations (threads named `dispatch-file-N`, `Options::file_workers`) are
//! counted together in an atomic, for the file workload through workers.
//!
//! Two workloads: a ping-pong whose sends and receives all complete on their first try, and
//! a wide one that counts every other path a steady-state loop takes (a receive armed before
//! its data arrives, timeouts and cancels of pending operations, nops, wake-ups from another
//! thread, and an SQ too small for a turn's batch). Both assert the backend that really ran,
//! so that a silent fallback cannot pass for the backend asked for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dispatch_loop::{
    BackendKind, BufResult, Io, OpId, Options, OutBuf, PoolBuf, PoolOptions, Shot, Stats, Tag,
    Waker,
};

use crate::check;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Whether this thread is a file worker: unknown until its first allocation.
    static IS_WORKER: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Allocations made by file workers, of every loop in the process.
static WORKER_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Counts one allocation of the calling thread.
fn count_allocation() {
    ALLOCATIONS.with(|count| count.set(count.get() + 1));
    let is_worker = IS_WORKER.with(|known| {
        let is_worker = known.get().unwrap_or_else(is_file_worker);
        known.set(Some(is_worker));
        is_worker
    });
    if is_worker {
        WORKER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the calling thread is a file worker, from the name the kernel keeps for it (read
/// without allocating: this runs inside the allocator).
#[allow(unsafe_code)]
fn is_file_worker() -> bool {
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: `name` has room for the longest thread name (16 bytes on Linux, 64 on macOS
    // and FreeBSD) and its terminating zero.
    let rc = unsafe { libc::pthread_getname_np(libc::pthread_self(), name.as_mut_ptr(), 64) };
    if rc != 0 {
        return false;
    }
    // SAFETY: on success the name is zero-terminated within `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    name.to_bytes().starts_with(b"dispatch-file-")
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` unchanged; counting touches only thread-locals
// and an atomic, and asks the thread's name without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout`, per the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded unchanged under the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made so far by the calling thread.
pub(crate) fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The counter sees this thread's allocations (a broken counter would pass every test).
pub(crate) fn assert_counting() {
    let before = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(allocations(), before + 1, "the counting allocator counts");
}

/// The backend `DISPATCH_BACKEND` asks for; when unset (or `auto`), io_uring where it can be
/// set up here, else epoll (kqueue off Linux).
fn expected_backend() -> BackendKind {
    if let Ok(name) = std::env::var(dispatch_loop::BACKEND_ENV) {
        if !name.is_empty() && name != "auto" {
            return BackendKind::from_name(&name).expect("DISPATCH_BACKEND names a backend");
        }
    }
    if cfg!(target_os = "linux") {
        let mut options = Options::new(4);
        options.backend = Some(BackendKind::IoUring);
        match Io::<()>::new(&options) {
            Ok(_) => BackendKind::IoUring,
            Err(_) => BackendKind::Epoll,
        }
    } else {
        BackendKind::Kqueue
    }
}

fn assert_backend(stats: &Stats) {
    assert_eq!(
        stats.backend,
        expected_backend(),
        "the loop runs on the backend asked for (fallback: {:?})",
        stats.fallback
    );
}

const MESSAGE: usize = 64;
const ROUNDS: u64 = 25_000;

/// A ping-pong: client sends, server receives and echoes, client receives: four operations a
/// round, each scheduled from the previous one's callback with the same buffer.
struct PingPong {
    client: TcpStream,
    server: TcpStream,
    rounds_left: u64,
    ops: u64,
    allocations_at_warm: Option<u64>,
}

const CLIENT_SEND: Tag = 0;
const SERVER_RECV: Tag = 1;
const SERVER_SEND: Tag = 2;
const CLIENT_RECV: Tag = 3;

fn on_done(pp: &mut PingPong, io: &mut Io<PingPong>, tag: Tag, (result, mut buf): BufResult) {
    let n = result.unwrap();
    assert_eq!(n, MESSAGE, "loopback moves 64 bytes whole");
    pp.ops += 1;
    let (client, server) = (pp.client.as_raw_fd(), pp.server.as_raw_fd());
    match tag {
        CLIENT_SEND => {
            buf.clear();
            io.recv(SERVER_RECV, server, buf, on_done).unwrap();
        }
        SERVER_RECV => {
            io.send(SERVER_SEND, server, buf, on_done).unwrap();
        }
        SERVER_SEND => {
            buf.clear();
            io.recv(CLIENT_RECV, client, buf, on_done).unwrap();
        }
        CLIENT_RECV => {
            pp.rounds_left -= 1;
            if pp.rounds_left == ROUNDS - 100 {
                pp.allocations_at_warm = Some(allocations());
            }
            if pp.rounds_left > 0 {
                io.send(CLIENT_SEND, client, buf, on_done).unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_hundred_thousand_sends_and_receives_allocate_nothing() {
    assert_counting();
    let Some(mut io) = check::io::<PingPong>(&Options::new(8)) else {
        return;
    };
    assert_backend(&io.stats());
    let (client, server) = check::tcp_pair();
    let mut pp = PingPong {
        client,
        server,
        rounds_left: ROUNDS,
        ops: 0,
        allocations_at_warm: None,
    };
    io.send(
        CLIENT_SEND,
        pp.client.as_raw_fd(),
        vec![7; MESSAGE],
        on_done,
    )
    .unwrap();
    io.run_until_idle(&mut pp).unwrap();
    let after = allocations();
    assert_eq!(pp.ops, ROUNDS * 4);
    assert!(pp.ops >= 100_000);
    let warm = pp.allocations_at_warm.expect("warm-up finished");
    assert_eq!(
        after - warm,
        0,
        "allocations in steady state over {} operations",
        pp.ops
    );
    eprintln!("{:?}", io.stats());
}

/// The wide workload's rounds. Each round is two batches, each larger than the 4-entry SQ:
///
/// 1. a receive on `server`, whose data is sent only later, so it waits (readiness backends
///    arm interest for it); a receive on `idle`, where nothing ever arrives; a 60 s timeout;
///    a nop; a zero timeout; a wake-up wait;
/// 2. from the nop's callback: the send that feeds the first receive; cancels of the idle
///    receive and of the long timeout (both pending in the kernel); a cancel of the nop
///    itself (a stale id); another nop and zero timeout.
///
/// When only the wake-up wait is left, the round asks the waking thread for a wake-up, so
/// the loop blocks in the kernel on it alone; its callback starts the next round. Every
/// buffer goes back and forth between the context and the loop.
struct Wide {
    server: UnixStream,
    client: UnixStream,
    idle: UnixStream,
    recv_buf: Option<Vec<u8>>,
    send_buf: Option<Vec<u8>>,
    idle_buf: Option<Vec<u8>>,
    long_timeout: Option<OpId>,
    idle_recv: Option<OpId>,
    nop: Option<OpId>,
    /// Operations of this round whose callbacks have not run.
    left: u32,
    sent: bool,
    wake_requested: bool,
    rounds_left: u64,
    ops: u64,
    at_warm: Option<(u64, u64, Stats)>,
    wakes: Arc<WakeRequests>,
    waking_thread: std::thread::Thread,
}

/// What the loop's thread and the waking thread share: wake-ups asked for, and when to stop.
#[derive(Default)]
struct WakeRequests {
    requested: AtomicU64,
    stop: AtomicBool,
}

const WIDE_ROUNDS: u64 = 9_000;
const WIDE_WARM_ROUNDS: u64 = 100;
/// Operations in one round.
const WIDE_ROUND_OPS: u64 = 12;
const LONG_TIMEOUT_NS: u64 = 60_000_000_000;

const RECV: Tag = 10;
const IDLE_RECV: Tag = 11;
const LONG_TIMEOUT: Tag = 12;
const NOP: Tag = 13;
const ZERO_TIMEOUT: Tag = 14;
const WAKEUP: Tag = 15;
const SEND: Tag = 16;
const CANCEL_IDLE_RECV: Tag = 17;
const CANCEL_LONG_TIMEOUT: Tag = 18;
const CANCEL_STALE: Tag = 19;
const SECOND_NOP: Tag = 20;
const SECOND_ZERO_TIMEOUT: Tag = 21;

fn errno<T>(result: &io::Result<T>) -> Option<i32> {
    result
        .as_ref()
        .err()
        .map(|error| error.raw_os_error().unwrap())
}

fn start_round(w: &mut Wide, io: &mut Io<Wide>) {
    assert_eq!(w.left, 0);
    w.sent = false;
    w.wake_requested = false;
    let server = w.server.as_raw_fd();
    let idle = w.idle.as_raw_fd();
    io.recv(RECV, server, w.recv_buf.take().unwrap(), on_wide_buf)
        .unwrap();
    let idle_recv = io.recv(IDLE_RECV, idle, w.idle_buf.take().unwrap(), on_wide_buf);
    w.idle_recv = Some(idle_recv.unwrap());
    w.long_timeout = Some(
        io.timeout(LONG_TIMEOUT, LONG_TIMEOUT_NS, on_wide_unit)
            .unwrap(),
    );
    w.nop = Some(io.nop(NOP, on_wide_unit).unwrap());
    io.timeout(ZERO_TIMEOUT, 0, on_wide_unit).unwrap();
    io.wait_wakeup(WAKEUP, on_wide_wakeup).unwrap();
    w.left = 6;
}

/// The round's second batch, scheduled from the nop's callback.
fn second_batch(w: &mut Wide, io: &mut Io<Wide>) {
    let client = w.client.as_raw_fd();
    io.send(SEND, client, w.send_buf.take().unwrap(), on_wide_buf)
        .unwrap();
    let idle_recv = w.idle_recv.take().unwrap();
    io.cancel(CANCEL_IDLE_RECV, idle_recv, on_wide_unit)
        .unwrap();
    let long_timeout = w.long_timeout.take().unwrap();
    io.cancel(CANCEL_LONG_TIMEOUT, long_timeout, on_wide_unit)
        .unwrap();
    let nop = w.nop.take().unwrap();
    io.cancel(CANCEL_STALE, nop, on_wide_unit).unwrap();
    io.nop(SECOND_NOP, on_wide_unit).unwrap();
    io.timeout(SECOND_ZERO_TIMEOUT, 0, on_wide_unit).unwrap();
    w.left += 6;
}

/// One callback done: counts it and, when only the wake-up wait is left, asks for its
/// wake-up.
fn finish_one(w: &mut Wide) {
    w.ops += 1;
    w.left -= 1;
    if w.left == 1 && !w.wake_requested {
        w.wake_requested = true;
        w.wakes.requested.fetch_add(1, Ordering::Release);
        w.waking_thread.unpark();
    }
}

fn on_wide_buf(w: &mut Wide, _: &mut Io<Wide>, tag: Tag, (result, mut buf): BufResult) {
    match tag {
        RECV => {
            assert_eq!(
                result.unwrap(),
                MESSAGE,
                "a socket pair moves 64 bytes whole"
            );
            assert!(w.sent, "the receive completed before its data was sent");
            buf.clear();
            w.recv_buf = Some(buf);
        }
        IDLE_RECV => {
            assert_eq!(errno(&result), Some(libc::ECANCELED));
            assert!(buf.is_empty());
            w.idle_buf = Some(buf);
        }
        SEND => {
            assert_eq!(result.unwrap(), MESSAGE);
            w.sent = true;
            w.send_buf = Some(buf);
        }
        _ => unreachable!("tag {tag}"),
    }
    finish_one(w);
}

fn on_wide_unit(w: &mut Wide, io: &mut Io<Wide>, tag: Tag, result: io::Result<()>) {
    match tag {
        LONG_TIMEOUT => assert_eq!(errno(&result), Some(libc::ECANCELED)),
        NOP => {
            result.unwrap();
            second_batch(w, io);
        }
        CANCEL_STALE => assert_eq!(errno(&result), Some(libc::ENOENT)),
        ZERO_TIMEOUT | CANCEL_IDLE_RECV | CANCEL_LONG_TIMEOUT | SECOND_NOP
        | SECOND_ZERO_TIMEOUT => result.unwrap(),
        _ => unreachable!("tag {tag}"),
    }
    finish_one(w);
}

fn on_wide_wakeup(w: &mut Wide, io: &mut Io<Wide>, tag: Tag, result: io::Result<u64>) {
    assert_eq!(tag, WAKEUP);
    assert!(
        w.wake_requested,
        "a wake-up arrived before it was asked for"
    );
    assert_eq!(result.unwrap(), 1, "one wake-up asked for, one counted");
    finish_one(w);
    assert_eq!(w.left, 0, "the wake-up wait is the round's last operation");
    w.rounds_left -= 1;
    if w.rounds_left == WIDE_ROUNDS - WIDE_WARM_ROUNDS {
        w.at_warm = Some((allocations(), w.ops, io.stats()));
    }
    if w.rounds_left > 0 {
        start_round(w, io);
    }
}

/// The waking thread: one `Waker::wake` per wake-up requested, parked in between.
fn wake_on_request(waker: &Waker, wakes: &WakeRequests) {
    let mut served = 0;
    loop {
        if served < wakes.requested.load(Ordering::Acquire) {
            waker.wake().unwrap();
            served += 1;
        } else if wakes.stop.load(Ordering::Acquire) {
            return;
        } else {
            std::thread::park();
        }
    }
}

#[test]
fn a_hundred_thousand_waits_timeouts_cancels_and_wakeups_allocate_nothing() {
    assert_counting();
    let mut options = Options::new(16);
    options.uring.sq_entries = 4;
    let Some(mut io) = check::io::<Wide>(&options) else {
        return;
    };
    assert_backend(&io.stats());
    let wakes = Arc::new(WakeRequests::default());
    let waker = io.waker();
    let thread = std::thread::spawn({
        let wakes = Arc::clone(&wakes);
        move || wake_on_request(&waker, &wakes)
    });
    let (server, client) = UnixStream::pair().unwrap();
    let (idle, _idle_peer) = UnixStream::pair().unwrap();
    let mut w = Wide {
        server,
        client,
        idle,
        recv_buf: Some(Vec::with_capacity(MESSAGE)),
        send_buf: Some(vec![7; MESSAGE]),
        idle_buf: Some(Vec::with_capacity(MESSAGE)),
        long_timeout: None,
        idle_recv: None,
        nop: None,
        left: 0,
        sent: false,
        wake_requested: false,
        rounds_left: WIDE_ROUNDS,
        ops: 0,
        at_warm: None,
        wakes: Arc::clone(&wakes),
        waking_thread: thread.thread().clone(),
    };
    start_round(&mut w, &mut io);
    io.run_until_idle(&mut w).unwrap();
    let after = allocations();
    let stats = io.stats();
    wakes.stop.store(true, Ordering::Release);
    thread.thread().unpark();
    thread.join().unwrap();

    assert_eq!(w.ops, WIDE_ROUNDS * WIDE_ROUND_OPS);
    let (allocations_at_warm, ops_at_warm, stats_at_warm) = w.at_warm.expect("warm-up finished");
    let counted = w.ops - ops_at_warm;
    assert!(counted >= 100_000, "{counted} operations counted");
    eprintln!("{counted} operations after warm-up; {stats:?}");
    assert_eq!(
        after - allocations_at_warm,
        0,
        "allocations in steady state over {counted} operations"
    );
    assert_eq!(stats.ops_completed - stats_at_warm.ops_completed, counted);
    assert_backend(&stats);
    if check::on_io_uring(&io) {
        assert!(
            stats.overflow_parked > stats_at_warm.overflow_parked,
            "the 4-entry SQ overflowed after warm-up: {stats:?}"
        );
    }
}

/// A zero-copy echo over pooled multishot receives: the client sends from a `Vec`, the
/// server's multishot receive lands in a pool buffer that is sent back as it is
/// (`send_pooled` every other round, a vectored send of it the others, from a list kept for
/// its capacity), and the client's own multishot receive gets the echo, whose callback
/// sends the next message. Four callbacks a round; buffers go back to the pool when their
/// handles drop.
struct PooledEcho {
    client: TcpStream,
    server: TcpStream,
    message: Option<Vec<u8>>,
    rounds_left: u64,
    callbacks: u64,
    at_warm: Option<u64>,
    receives: [Option<OpId>; 2],
    /// The vectored send's list, between sends.
    spare: Vec<OutBuf>,
}

const POOLED_ROUNDS: u64 = 25_000;

fn on_client_sent(e: &mut PooledEcho, _: &mut Io<PooledEcho>, _: Tag, (sent, buf): BufResult) {
    assert_eq!(sent.unwrap(), MESSAGE);
    e.callbacks += 1;
    e.message = Some(buf);
}

fn on_server_data(e: &mut PooledEcho, io: &mut Io<PooledEcho>, tag: Tag, shot: Shot<PoolBuf>) {
    e.callbacks += 1;
    if !shot.more {
        // The final callback: the cancel that ends the test.
        assert_eq!(e.rounds_left, 0, "ended early: {:?}", shot.result);
        return;
    }
    let buf = shot.result.unwrap();
    if e.rounds_left.is_multiple_of(2) {
        io.send_pooled(tag, e.server.as_raw_fd(), buf, on_server_sent)
            .unwrap();
    } else {
        let mut bufs = std::mem::take(&mut e.spare);
        bufs.push(OutBuf::from(buf));
        io.send_vectored(tag, e.server.as_raw_fd(), bufs, on_server_gathered)
            .unwrap();
    }
}

fn on_server_gathered(e: &mut PooledEcho, _: &mut Io<PooledEcho>, _: Tag, sent: Gathered) {
    let (sent, mut bufs) = sent;
    assert_eq!(sent.unwrap(), MESSAGE, "loopback sends 64 bytes whole");
    OutBuf::consume(&mut bufs, MESSAGE);
    assert!(bufs.is_empty());
    e.spare = bufs;
    e.callbacks += 1;
}

type Gathered = (io::Result<usize>, Vec<OutBuf>);

fn on_server_sent(e: &mut PooledEcho, _: &mut Io<PooledEcho>, _: Tag, (sent, buf): PoolSent) {
    assert_eq!(sent.unwrap(), buf.len(), "loopback sends 64 bytes whole");
    e.callbacks += 1;
}

type PoolSent = (io::Result<usize>, PoolBuf);

fn on_client_data(e: &mut PooledEcho, io: &mut Io<PooledEcho>, _: Tag, shot: Shot<PoolBuf>) {
    e.callbacks += 1;
    if !shot.more {
        assert_eq!(e.rounds_left, 0, "ended early: {:?}", shot.result);
        return;
    }
    assert_eq!(shot.result.unwrap().len(), MESSAGE);
    e.rounds_left -= 1;
    if e.rounds_left == POOLED_ROUNDS - 100 {
        e.at_warm = Some(allocations());
    }
    if e.rounds_left == 0 {
        for id in e.receives.into_iter().flatten() {
            io.cancel(9, id, |_, _, _, _| {}).unwrap();
        }
        return;
    }
    let message = e.message.take().expect("the previous send completed");
    io.send(0, e.client.as_raw_fd(), message, on_client_sent)
        .unwrap();
}

#[test]
fn a_pooled_multishot_echo_allocates_nothing() {
    assert_counting();
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(8, 256);
    let Some(mut io) = check::io::<PooledEcho>(&options) else {
        return;
    };
    assert_backend(&io.stats());
    let (client, server) = check::tcp_pair();
    let mut e = PooledEcho {
        client,
        server,
        message: None,
        rounds_left: POOLED_ROUNDS,
        callbacks: 0,
        at_warm: None,
        receives: [None; 2],
        spare: Vec::new(),
    };
    e.receives[0] = Some(
        io.recv_multishot(1, e.server.as_raw_fd(), on_server_data)
            .unwrap(),
    );
    e.receives[1] = Some(
        io.recv_multishot(2, e.client.as_raw_fd(), on_client_data)
            .unwrap(),
    );
    io.send(0, e.client.as_raw_fd(), vec![7; MESSAGE], on_client_sent)
        .unwrap();
    io.run_until_idle(&mut e).unwrap();
    let after = allocations();
    assert_eq!(e.rounds_left, 0);
    assert!(e.callbacks >= 100_000, "{} callbacks", e.callbacks);
    let warm = e.at_warm.expect("warm-up finished");
    assert_eq!(
        after - warm,
        0,
        "allocations in steady state over {} callbacks",
        e.callbacks
    );
    io.tick(&mut e).unwrap();
    assert_eq!(io.pool_buffers_lent(), 0, "every buffer back");
    eprintln!("{:?}", io.stats());
}

/// Allocations made by file workers so far, in the whole process.
fn worker_allocations() -> u64 {
    WORKER_ALLOCATIONS.load(Ordering::Relaxed)
}

/// The file workload: one operation at a time, each scheduled from the previous one's
/// callback, every buffer going back and forth between the context and the loop: a 4 KiB
/// write and read at an offset, a vectored write and read of two 2 KiB buffers, a truncate
/// and a preallocation; every 50th round also an `fdatasync`. Not `statx`: it boxes the
/// `statx` record it hands the kernel (`operation::raw_stat`), one allocation per call in the
/// loop's thread on every backend, workers or not: a known gap of the storage API.
struct Files {
    fd: std::os::fd::RawFd,
    buf: Option<Vec<u8>>,
    bufs: Option<Vec<Vec<u8>>>,
    round: u64,
    ops: u64,
    at_warm: Option<(u64, u64)>,
}

const FILE_ROUNDS: u64 = 4_000;
const FILE_WARM_ROUNDS: u64 = 50;
const F_WRITE: Tag = 0;
const F_READ: Tag = 1;
const F_WRITEV: Tag = 2;
const F_READV: Tag = 3;
const F_TRUNCATE: Tag = 4;
const F_ALLOCATE: Tag = 5;
const F_SYNC: Tag = 6;

fn file_round(f: &mut Files, io: &mut Io<Files>) {
    f.round += 1;
    if f.round == FILE_WARM_ROUNDS {
        f.at_warm = Some((allocations(), worker_allocations()));
    }
    if f.round > FILE_ROUNDS {
        return;
    }
    let mut buf = f.buf.take().unwrap();
    buf.clear();
    buf.resize(4096, f.round as u8);
    let offset = (f.round % 16) * 4096;
    io.write(F_WRITE, f.fd, buf, offset, on_file_buf).unwrap();
}

fn on_file_buf(f: &mut Files, io: &mut Io<Files>, tag: Tag, (result, mut buf): BufResult) {
    assert_eq!(result.unwrap(), 4096, "tag {tag}");
    f.ops += 1;
    let offset = (f.round % 16) * 4096;
    match tag {
        F_WRITE => {
            buf.clear();
            io.read(F_READ, f.fd, buf, offset, on_file_buf).unwrap();
        }
        F_READ => {
            assert!(buf.iter().all(|&byte| byte == f.round as u8));
            f.buf = Some(buf);
            let mut bufs = f.bufs.take().unwrap();
            bufs.iter_mut().for_each(|buf| buf.resize(2048, 3));
            io.write_vectored(F_WRITEV, f.fd, bufs, offset, 0, on_file_bufs)
                .unwrap();
        }
        _ => unreachable!(),
    }
}

fn on_file_bufs(
    f: &mut Files,
    io: &mut Io<Files>,
    tag: Tag,
    (result, mut bufs): (io::Result<usize>, Vec<Vec<u8>>),
) {
    assert_eq!(result.unwrap(), 4096, "tag {tag}");
    f.ops += 1;
    let offset = (f.round % 16) * 4096;
    match tag {
        F_WRITEV => {
            bufs.iter_mut().for_each(Vec::clear);
            io.read_vectored(F_READV, f.fd, bufs, offset, 0, on_file_bufs)
                .unwrap();
        }
        F_READV => {
            f.bufs = Some(bufs);
            io.ftruncate(F_TRUNCATE, f.fd, 16 * 4096, on_file_unit)
                .unwrap();
        }
        _ => unreachable!(),
    }
}

fn on_file_unit(f: &mut Files, io: &mut Io<Files>, tag: Tag, result: io::Result<()>) {
    result.unwrap_or_else(|error| panic!("tag {tag}: {error}"));
    f.ops += 1;
    let every_50th = f.round.is_multiple_of(50);
    match tag {
        F_TRUNCATE => drop(io.fallocate(F_ALLOCATE, f.fd, 0, 0, 16 * 4096, on_file_unit)),
        F_ALLOCATE if every_50th => drop(io.fdatasync(F_SYNC, f.fd, on_file_unit)),
        F_SYNC | F_ALLOCATE => file_round(f, io),
        _ => unreachable!(),
    }
}

/// File operations through workers allocate nothing in steady state, neither in the loop's
/// thread nor in the workers, on every readiness backend. Re-run alone in a child: the
/// workers' count is process-wide, and the loops of the tests beside it have workers too.
#[test]
fn file_operations_through_workers_allocate_nothing() {
    if check::child_role().is_none() {
        let test = "alloc::file_operations_through_workers_allocate_nothing";
        check::in_child(test, "alloc-files", None);
        return;
    }
    assert_counting();
    let backends = if cfg!(target_os = "linux") {
        vec![BackendKind::Epoll, BackendKind::KqueueFake]
    } else {
        vec![BackendKind::Kqueue]
    };
    for backend in backends {
        let mut options = Options::new(8);
        options.backend = Some(backend);
        options.file_workers = 2;
        let mut io: Io<Files> = Io::new(&options).unwrap();
        let path = check::temp_path(&format!("alloc-{backend}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut f = Files {
            fd: file.as_raw_fd(),
            buf: Some(Vec::with_capacity(4096)),
            bufs: Some(vec![Vec::with_capacity(2048), Vec::with_capacity(2048)]),
            round: 0,
            ops: 0,
            at_warm: None,
        };
        file_round(&mut f, &mut io);
        io.run_until_idle(&mut f).unwrap();
        let (loop_after, workers_after) = (allocations(), worker_allocations());
        let (loop_warm, workers_warm) = f.at_warm.expect("warm-up finished");
        assert!(f.ops > 6 * (FILE_ROUNDS - 1), "{} operations", f.ops);
        assert!(
            io.stats().worker_syscalls > f.ops,
            "the workers performed them"
        );
        assert_eq!(
            loop_after - loop_warm,
            0,
            "{backend}: loop's allocations, {} ops",
            f.ops
        );
        assert_eq!(
            workers_after - workers_warm,
            0,
            "{backend}: workers' allocations"
        );
        drop(io);
        std::fs::remove_file(&path).unwrap();
    }
}

/// A UDP ping-pong through `send_to`/`recv_from`, the message reused for each operation,
/// and beside it a descriptor passed back and forth over a Unix datagram pair
/// (`SCM_RIGHTS`), one message at a time, for as long as the ping-pong lasts.
struct Datagrams {
    client: std::net::UdpSocket,
    server: std::net::UdpSocket,
    unix: (
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::UnixDatagram,
    ),
    rounds_left: u64,
    ops: u64,
    fds_passed: u64,
    allocations_at_warm: Option<u64>,
}

const DGRAM_ROUNDS: u64 = 10_000;
const DGRAM_FD_SEND: Tag = 4;
const DGRAM_FD_RECV: Tag = 5;

type MsgDone = (io::Result<usize>, dispatch_loop::Msg);

fn on_datagram(d: &mut Datagrams, io: &mut Io<Datagrams>, tag: Tag, (n, mut msg): MsgDone) {
    let n = n.unwrap();
    d.ops += 1;
    let (client, server) = (d.client.as_raw_fd(), d.server.as_raw_fd());
    match tag {
        CLIENT_SEND => {
            assert_eq!(n, MESSAGE);
            msg.bufs_mut()[0].clear();
            io.recv_from(SERVER_RECV, server, msg, on_datagram).unwrap();
        }
        SERVER_RECV => {
            assert_eq!(n, MESSAGE);
            let to = msg.peer().expect("a UDP sender");
            io.send_to(SERVER_SEND, server, msg, to, on_datagram)
                .unwrap();
        }
        SERVER_SEND => {
            msg.bufs_mut()[0].clear();
            io.recv_from(CLIENT_RECV, client, msg, on_datagram).unwrap();
        }
        CLIENT_RECV => {
            d.rounds_left -= 1;
            if d.rounds_left == DGRAM_ROUNDS - 100 {
                d.allocations_at_warm = Some(allocations());
            }
            if d.rounds_left > 0 {
                let to = d.server.local_addr().unwrap();
                io.send_to(CLIENT_SEND, client, msg, to, on_datagram)
                    .unwrap();
            }
        }
        // The descriptor leg, one message at a time beside the ping-pong: the message that
        // passes the descriptor receives the next one, whose arrival closes the last.
        DGRAM_FD_SEND => {
            let fd = d.unix.1.as_raw_fd();
            io.recvmsg(DGRAM_FD_RECV, fd, msg, on_datagram).unwrap();
        }
        DGRAM_FD_RECV => {
            assert_eq!(msg.fds().len(), 1, "one descriptor a message");
            d.fds_passed += 1;
            if d.rounds_left > 1 {
                let fd = d.unix.0.as_raw_fd();
                io.sendmsg(DGRAM_FD_SEND, fd, msg, on_datagram).unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn datagrams_and_descriptor_passing_allocate_nothing() {
    assert_counting();
    let Some(mut io) = check::io::<Datagrams>(&Options::new(8)) else {
        return;
    };
    assert_backend(&io.stats());
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut d = Datagrams {
        client: bind(),
        server: bind(),
        unix: std::os::unix::net::UnixDatagram::pair().unwrap(),
        rounds_left: DGRAM_ROUNDS,
        ops: 0,
        fds_passed: 0,
        allocations_at_warm: None,
    };
    let to = d.server.local_addr().unwrap();
    let msg = dispatch_loop::Msg::new(vec![7; MESSAGE]);
    io.send_to(CLIENT_SEND, d.client.as_raw_fd(), msg, to, on_datagram)
        .unwrap();
    // An empty datagram that carries one descriptor, back and forth through one message:
    // sent, the message keeps its descriptor; receiving into it closes that one and takes
    // the one that came (a new descriptor for the same socket each time).
    let mut pass = dispatch_loop::Msg::new(Vec::with_capacity(1)).with_fds(1);
    pass.fds_mut().push(d.client.try_clone().unwrap().into());
    io.sendmsg(DGRAM_FD_SEND, d.unix.0.as_raw_fd(), pass, on_datagram)
        .unwrap();
    io.run_until_idle(&mut d).unwrap();
    let after = allocations();
    assert!(d.ops >= DGRAM_ROUNDS * 4, "{} operations", d.ops);
    assert!(d.fds_passed > 1_000, "{} descriptors passed", d.fds_passed);
    let warm = d.allocations_at_warm.expect("warm-up finished");
    assert_eq!(
        after - warm,
        0,
        "allocations in steady state over {} operations",
        d.ops
    );
}
