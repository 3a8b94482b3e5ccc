//! Timeouts, deadlines and the shape of `run_for_ns`.

use std::io;
use std::io::Write;
use std::time::{Duration, Instant};

use dispatch_loop::{BufResult, Io, Options, Tag};

use crate::check;

struct Fired {
    start: Instant,
    /// (tag, elapsed since start) per fired timeout.
    at: Vec<(Tag, Duration)>,
    chain_left: u32,
}

impl Fired {
    fn new() -> Fired {
        Fired {
            start: Instant::now(),
            at: Vec::new(),
            chain_left: 0,
        }
    }
}

fn on_fired(fired: &mut Fired, _: &mut Io<Fired>, tag: Tag, result: io::Result<()>) {
    result.unwrap();
    fired.at.push((tag, fired.start.elapsed()));
}

fn ten_timeouts_all_fire_and_none_early(options: &Options) {
    let Some(mut io) = check::io::<Fired>(options) else {
        return;
    };
    let mut fired = Fired::new();
    for tag in 0..10 {
        io.timeout(tag, (10 - tag) * 2_000_000, on_fired).unwrap();
    }
    io.run_until_idle(&mut fired).unwrap();
    assert_eq!(fired.at.len(), 10);
    for &(tag, elapsed) in &fired.at {
        let wanted = Duration::from_nanos((10 - tag) * 2_000_000);
        assert!(
            elapsed >= wanted,
            "timeout {tag} fired after {elapsed:?}, before {wanted:?}"
        );
    }
    let order: Vec<Tag> = fired.at.iter().map(|&(tag, _)| tag).collect();
    assert_eq!(
        order,
        (0..10).rev().collect::<Vec<_>>(),
        "shorter timeouts fire first"
    );
}

#[test]
fn ten_timeouts() {
    ten_timeouts_all_fire_and_none_early(&Options::new(16));
}

#[test]
fn ten_timeouts_with_the_pre_ext_arg_wait() {
    let mut options = Options::new(16);
    options.uring.ext_arg = false;
    ten_timeouts_all_fire_and_none_early(&options);
}

#[cfg(target_os = "linux")]
#[test]
fn ten_timeouts_with_the_millisecond_epoll_wait() {
    // The epoll backend as on kernels before 5.11: epoll_wait rounds up, never early.
    let mut options = Options::new(16);
    options.backend = Some(dispatch_loop::BackendKind::Epoll);
    options.epoll_pwait2 = false;
    ten_timeouts_all_fire_and_none_early(&options);
    run_for_ns_returns_at_its_deadline_without_spinning(&options);
}

fn run_for_ns_returns_at_its_deadline_without_spinning(options: &Options) {
    let Some(mut io) = check::io::<Fired>(options) else {
        return;
    };
    let mut fired = Fired::new();
    let start = Instant::now();
    io.run_for_ns(&mut fired, 30_000_000).unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(30),
        "returned early: {elapsed:?}"
    );
    // An idle loop blocks in the kernel: one wait, perhaps two if woken spuriously.
    assert!(io.stats().syscalls <= 3, "idle loop spun: {:?}", io.stats());
}

#[test]
fn idle_run_for_ns_sleeps() {
    run_for_ns_returns_at_its_deadline_without_spinning(&Options::new(4));
}

#[test]
fn idle_run_for_ns_sleeps_with_the_pre_ext_arg_wait() {
    let mut options = Options::new(4);
    options.uring.ext_arg = false;
    run_for_ns_returns_at_its_deadline_without_spinning(&options);
}

fn on_chain(fired: &mut Fired, io: &mut Io<Fired>, tag: Tag, result: io::Result<()>) {
    result.unwrap();
    fired.at.push((tag, fired.start.elapsed()));
    if fired.chain_left > 0 {
        fired.chain_left -= 1;
        io.timeout(tag + 1, 0, on_chain).unwrap();
    }
}

#[test]
fn a_chain_of_zero_delay_callbacks_runs_within_one_run_for_ns() {
    let Some(mut io) = check::io::<Fired>(&Options::new(4)) else {
        return;
    };
    let mut fired = Fired::new();
    fired.chain_left = 99;
    io.timeout(0, 0, on_chain).unwrap();
    io.run_for_ns(&mut fired, 2_000_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fired.at.len(), 100);
    let tags: Vec<Tag> = fired.at.iter().map(|&(tag, _)| tag).collect();
    assert_eq!(tags, (0..100).collect::<Vec<_>>());
    // Each link was scheduled inside the previous callback and went out with the next turn:
    // on io_uring about one syscall per link, not a spin; readiness backends expire a zero
    // timeout without any.
    let stats = io.stats();
    assert_eq!(stats.ops_completed, 100);
    let (least, most) = if check::on_io_uring(&io) {
        (100, 400)
    } else {
        (0, 400)
    };
    assert!(
        stats.syscalls >= least && stats.syscalls < most,
        "{stats:?}"
    );
}

#[test]
fn tick_never_blocks() {
    let Some(mut io) = check::io::<Fired>(&Options::new(4)) else {
        return;
    };
    let mut fired = Fired::new();
    io.timeout(0, 60_000_000_000, on_fired).unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        io.tick(&mut fired).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(30), "tick blocked");
    assert!(fired.at.is_empty());
    assert_eq!(io.in_flight(), 1);
}

/// A receive on a connection whose peer never sends: an operation that stays in the kernel.
/// The returned pair must outlive it.
fn silent_recv<C>(io: &mut Io<C>) -> (std::net::TcpStream, std::net::TcpStream) {
    let (peer, socket) = check::tcp_pair();
    io.recv(
        1,
        check::fd(&socket),
        Vec::with_capacity(8),
        |_, _, _, _| {},
    )
    .unwrap();
    (peer, socket)
}

/// Batch waiting on: up to 16 completions per wait, at most 100 ms once the first is ready.
fn batch_wait_options() -> Options {
    let mut options = Options::new(16);
    options.uring.batch_events = 16;
    options.uring.batch_wait_us = 100_000;
    options
}

#[test]
fn ten_timeouts_with_a_batch_wait() {
    ten_timeouts_all_fire_and_none_early(&batch_wait_options());
}

fn on_recv_stop(fired: &mut Fired, io: &mut Io<Fired>, tag: Tag, (result, _): BufResult) {
    assert_eq!(result.unwrap(), 4);
    fired.at.push((tag, fired.start.elapsed()));
    io.stop();
}

#[test]
fn a_batch_wait_never_holds_a_lone_completion_past_its_bound() {
    let Some(mut io) = check::io::<Fired>(&batch_wait_options()) else {
        return;
    };
    let stats = io.stats();
    match stats.backend {
        // 0 where the kernel lacks IORING_FEAT_MIN_TIMEOUT (before 6.12) or EXT_ARG is masked.
        dispatch_loop::BackendKind::IoUring => {
            assert!(matches!(stats.batch_wait_us, 0 | 100_000), "{stats:?}");
            if check::uring_extras_masked() {
                assert_eq!(stats.batch_wait_us, 0, "no batch wait without EXT_ARG");
            }
        }
        _ => assert_eq!(stats.batch_wait_us, 0, "no batch wait off io_uring"),
    }
    // A receive that never completes keeps a second operation in the kernel, so the wait
    // asks for two completions (and no timer bounds it); the lone receive that completes
    // must still come back within the batch wait, not at the run's end.
    let _silent = silent_recv(&mut io);
    let (mut peer, socket) = check::tcp_pair();
    io.recv(0, check::fd(&socket), Vec::with_capacity(8), on_recv_stop)
        .unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        peer.write_all(b"ping").unwrap();
        peer
    });
    let mut fired = Fired::new();
    io.run_for_ns(&mut fired, 10_000_000_000).unwrap();
    let _peer = writer.join().unwrap();
    assert_eq!(fired.at.len(), 1, "the receive completed");
    assert!(
        fired.at[0].1 < Duration::from_secs(10),
        "held until the run's end: {:?}",
        fired.at[0].1
    );
}

#[test]
fn batch_wait_options_out_of_range_are_refused_on_every_backend() {
    let mut options = Options::new(4);
    options.uring.batch_events = 0;
    let Err(error) = Io::<()>::new(&options) else {
        panic!("batch_events 0 refused");
    };
    assert!(error.to_string().contains("batch_events"), "{error}");
    let mut options = Options::new(4);
    options.uring.batch_wait_us = 1_000_001;
    let Err(error) = Io::<()>::new(&options) else {
        panic!("a wait over 1 s refused");
    };
    assert!(error.to_string().contains("batch_wait_us"), "{error}");
}

fn on_wakeup_stop(fired: &mut Fired, io: &mut Io<Fired>, tag: Tag, result: io::Result<u64>) {
    result.unwrap();
    fired.at.push((tag, fired.start.elapsed()));
    io.stop();
}

#[test]
fn an_idle_loop_with_a_batch_wait_and_no_deadline_sleeps() {
    let mut options = batch_wait_options();
    options.uring.batch_wait_us = 200;
    let Some(mut io) = check::io::<Fired>(&options) else {
        return;
    };
    // Two operations that wait for the other thread, and no timer: the wait has no end of
    // its own, and the batch wait must not turn it into a wake-up every 200 µs.
    let _silent = silent_recv(&mut io);
    io.wait_wakeup(0, on_wakeup_stop).unwrap();
    let waker = io.waker();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        waker.wake().expect("the loop is alive");
    });
    let mut fired = Fired::new();
    // Settles the operations (on readiness backends: tries, interest registrations).
    io.run_for_ns(&mut fired, 1_000_000).unwrap();
    let before = io.stats().syscalls;
    io.run_for_ns(&mut fired, u64::MAX).unwrap();
    thread.join().unwrap();
    assert_eq!(fired.at.len(), 1, "woken");
    // A wait or two, and the turn that ran the callback; a spinning wait makes about 500.
    let waits = io.stats().syscalls - before;
    assert!(
        waits <= 6,
        "the idle loop spun: {waits} syscalls: {:?}",
        io.stats()
    );
}

struct PingPong {
    peer: std::net::TcpStream,
    rounds: u32,
}

fn on_ping(state: &mut PingPong, io: &mut Io<PingPong>, tag: Tag, (result, buf): BufResult) {
    assert_eq!(result.unwrap(), 1, "one byte a round");
    state.rounds += 1;
    if state.rounds == 200 {
        return io.stop();
    }
    // The peer answers at once: the next arrival waits for nothing but this reply.
    state.peer.write_all(b"x").unwrap();
    let mut buf = buf;
    buf.clear();
    let fd = tag as i32;
    io.recv(tag, fd, buf, on_ping).unwrap();
}

#[test]
fn a_lone_ping_pong_stops_paying_the_batch_wait() {
    let Some(mut io) = check::io::<PingPong>(&batch_wait_options()) else {
        return;
    };
    // Another operation in the kernel, so that each wait asks for two completions.
    let _silent = silent_recv(&mut io);
    let (peer, socket) = check::tcp_pair();
    let fd = check::fd(&socket);
    io.recv(fd as Tag, fd, Vec::with_capacity(8), on_ping)
        .unwrap();
    let mut state = PingPong { peer, rounds: 0 };
    state.peer.write_all(b"x").unwrap();
    io.run_for_ns(&mut state, 60_000_000_000).unwrap();
    assert_eq!(state.rounds, 200);
    let stats = io.stats();
    if stats.batch_wait_us > 0 {
        // Misses in a row skip 16, 32, 64, 128, 256 waits: a handful of batch waits in all,
        // where paying it every round would be 200 (and 20 s at 100 ms each).
        assert!(
            (1..=10).contains(&stats.batch_waits),
            "a batch wait that never pays kept being tried: {stats:?}"
        );
    } else {
        assert_eq!(stats.batch_waits, 0, "{stats:?}");
    }
}

/// Timeouts in a time namespace (`unshare --time`, as containers may run), whose monotonic
/// clock is offset from the kernel's: never early, never late by the offset. An absolute
/// io_uring timeout read from the namespace's clock fired early (negative offset) or an
/// hour late (positive) there, since the kernel does not translate it. Skips where
/// unprivileged user and time namespaces are not allowed.
#[cfg(target_os = "linux")]
#[test]
fn timeouts_keep_time_in_a_time_namespace() {
    const TEST: &str = "timeout::timeouts_keep_time_in_a_time_namespace";
    if check::child_role().as_deref() == Some("time-namespace") {
        return ten_timeouts_all_fire_and_none_early(&Options::new(16));
    }
    for offset in ["-20", "3600"] {
        let mut command = std::process::Command::new("unshare");
        command.args(["--user", "--map-root-user", "--time", "--monotonic", offset]);
        command.arg(std::env::current_exe().unwrap());
        command.args(["--exact", TEST, "--test-threads", "1", "--nocapture"]);
        command.env(check::CHILD_ENV, "time-namespace");
        let Ok(mut child) = command.spawn() else {
            return eprintln!("skipped: unshare(1) is not installed");
        };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("offset {offset}: the timeouts did not fire within a minute");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let probe = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--time", "true"])
            .status();
        if !status.success() && !probe.is_ok_and(|probe| probe.success()) {
            return eprintln!("skipped: no unprivileged time namespaces here");
        }
        assert!(status.success(), "offset {offset}: the child failed");
    }
}
