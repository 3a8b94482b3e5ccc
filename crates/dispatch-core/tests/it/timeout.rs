//! Timeouts, deadlines and the shape of `run_for_ns`.

use std::io;
use std::time::{Duration, Instant};

use dispatch_core::{Io, Options, Tag};

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
    options.backend = Some(dispatch_core::BackendKind::Epoll);
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
