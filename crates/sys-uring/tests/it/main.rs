//! sys-uring against the running kernel. Tests skip, saying why, where io_uring is unusable.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use sys_uring::{opcode, probe, Ring, RingOptions, SqFull};

/// Creates a ring or prints why io_uring is unusable here and returns `None`.
fn ring_or_skip(options: &RingOptions) -> Option<Ring> {
    match Ring::new(options) {
        Ok(ring) => Some(ring),
        Err(error) => {
            eprintln!("skipped: {error}");
            None
        }
    }
}

fn push_nop(ring: &mut Ring, user_data: u64) -> Result<(), SqFull> {
    let entry = opcode::Nop::new().build().user_data(user_data);
    // SAFETY: a nop references no memory.
    unsafe { ring.push(&entry) }
}

#[test]
fn probe_reports_required_opcodes() {
    let report = match probe() {
        Ok(report) => report,
        Err(error) => return eprintln!("skipped: {error}"),
    };
    eprintln!("{report:?}");
    assert_eq!(
        report.missing_required(),
        None,
        "kernel 6.x has every required opcode"
    );
    assert!(report.nodrop);
    assert!(report.supports(opcode::Nop::CODE));
}

#[test]
fn nops_round_trip_in_one_enter() {
    let Some(mut ring) = ring_or_skip(&RingOptions::new(8)) else {
        return;
    };
    for user_data in 0..8 {
        push_nop(&mut ring, user_data).unwrap();
    }
    assert_eq!(push_nop(&mut ring, 99), Err(SqFull));
    assert_eq!(ring.sq_space(), 0);
    assert_eq!(ring.enter(8, None).unwrap(), 8);
    let mut seen = Vec::new();
    assert_eq!(ring.reap(|cqe| seen.push(cqe.user_data)), 8);
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert_eq!(ring.sq_space(), 8);
}

#[test]
fn enter_with_timeout_returns_after_the_deadline() {
    let Some(mut ring) = ring_or_skip(&RingOptions::new(4)) else {
        return;
    };
    if !ring.has_ext_arg() {
        return eprintln!("skipped: kernel lacks IORING_FEAT_EXT_ARG");
    }
    let start = Instant::now();
    assert_eq!(ring.enter(1, Some(20_000_000)).unwrap(), 0);
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "woke early: {:?}",
        start.elapsed()
    );
    assert_eq!(ring.reap(|_| ()), 0);
}

#[test]
fn every_flag_combination_the_probe_accepts_builds() {
    let Ok(report) = probe() else {
        return eprintln!("skipped: io_uring unavailable");
    };
    let mut options = RingOptions::new(4);
    options.cq_entries = 64;
    options.single_issuer = report.single_issuer;
    options.defer_taskrun = report.defer_taskrun;
    options.coop_taskrun = report.coop_taskrun;
    options.submit_all = report.submit_all;
    let mut ring = Ring::new(&options).expect("probed flags build");
    assert_eq!(ring.cq_capacity(), 64);
    push_nop(&mut ring, 1).unwrap();
    ring.enter(1, None).unwrap();
    assert_eq!(ring.reap(|cqe| assert_eq!(cqe.user_data, 1)), 1);
}

#[test]
fn cq_overflow_is_flushed_by_reaping_and_entering_again() {
    // A 2-entry SQ gets a 4-entry CQ; 64 nops overfill it and NODROP keeps the rest in the
    // kernel until the CQ is reaped and the ring entered again.
    let Some(mut ring) = ring_or_skip(&RingOptions::new(2)) else {
        return;
    };
    assert!(ring.has_nodrop());
    let total = 64;
    let (mut pushed, mut reaped) = (0, 0);
    let mut seen = Vec::new();
    let mut overflowed = false;
    while reaped < total {
        while pushed < total && push_nop(&mut ring, pushed).is_ok() {
            pushed += 1;
        }
        match ring.enter(0, None) {
            Ok(_) => {}
            Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {}
            Err(error) => panic!("enter: {error}"),
        }
        overflowed |= ring.cq_overflow();
        // Reap only once everything is submitted, so that the CQ overfills first.
        if pushed == total {
            reaped += u64::from(ring.reap(|cqe| seen.push(cqe.user_data)));
        }
    }
    assert!(overflowed, "the test must overfill the CQ to mean anything");
    assert_eq!(ring.cq_dropped(), 0);
    seen.sort_unstable();
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
}

/// A provided-buffer ring lends four buffers; a recv with `IOSQE_BUFFER_SELECT` lands in one
/// of them, and the completion names it.
#[test]
fn a_buffer_select_recv_lands_in_a_provided_buffer() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let Some(mut ring) = ring_or_skip(&RingOptions::new(8)) else {
        return;
    };
    let mut memory = vec![0_u8; 4 * 64];
    let mut buf_ring = sys_uring::BufRing::new(4).unwrap();
    for bid in 0..4_u16 {
        // SAFETY: `memory` outlives the ring's use of it (the ring is dropped first below,
        // and nothing else touches `memory` until then).
        unsafe { buf_ring.push(bid, memory[usize::from(bid) * 64..].as_mut_ptr(), 64) };
    }
    buf_ring.publish();
    if let Err(error) = ring.register_buf_ring(buf_ring, 7) {
        return eprintln!("skipped: no provided-buffer rings here: {error}");
    }
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    b.write_all(b"hello").unwrap();
    let entry = opcode::Recv::new(
        sys_uring::types::Fd(a.as_raw_fd()),
        std::ptr::null_mut(),
        64,
    )
    .buf_group(7)
    .build()
    .flags(sys_uring::squeue::Flags::BUFFER_SELECT)
    .user_data(1);
    // SAFETY: the buffer comes from the registered group, which the ring keeps.
    unsafe { ring.push(&entry) }.unwrap();
    ring.enter(1, None).unwrap();
    let mut cqes = Vec::new();
    ring.reap(|cqe| cqes.push(cqe));
    assert_eq!(cqes.len(), 1);
    assert_eq!(cqes[0].result, 5);
    assert_ne!(cqes[0].flags & 1, 0, "IORING_CQE_F_BUFFER");
    let bid = usize::try_from(cqes[0].flags >> 16).unwrap();
    assert!(bid < 4);
    drop(ring);
    assert_eq!(&memory[bid * 64..bid * 64 + 5], b"hello");
    let mut ring = ring_or_skip(&RingOptions::new(2)).unwrap();
    let multishot = ring.probe_recv_multishot().unwrap();
    if kernel_at_least(6, 0) {
        assert!(multishot, "6.0+ has multishot recv");
    }
}

/// Whether the running kernel's version is at least `major.minor` (distributions backport
/// features, so a feature may be there earlier; never later).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The multishot probe on a ring that was used: it refuses (`EBUSY`) and leaves the caller's
/// completion where it was, instead of reaping it and panicking. Asked first, its answer is
/// kept for later calls.
#[test]
fn the_multishot_probe_refuses_a_used_ring_and_keeps_its_completions() {
    let Some(mut ring) = ring_or_skip(&RingOptions::new(4)) else {
        return;
    };
    push_nop(&mut ring, 42).unwrap();
    ring.enter(1, None).unwrap();
    let error = ring.probe_recv_multishot().unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBUSY));
    let mut seen = Vec::new();
    ring.reap(|cqe| seen.push(cqe.user_data));
    assert_eq!(seen, [42], "the caller's completion is still there");

    let mut fresh = ring_or_skip(&RingOptions::new(4)).unwrap();
    let answer = fresh.probe_recv_multishot().unwrap();
    push_nop(&mut fresh, 1).unwrap();
    assert_eq!(fresh.probe_recv_multishot().unwrap(), answer, "kept");
}

/// The multishot probe with buffer group 65535 registered and holding a buffer: it asks
/// about a group that does not exist, so it answers at once instead of waiting for data
/// that never comes.
#[test]
fn the_multishot_probe_avoids_registered_buffer_groups() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The ring lives on a thread of its own (it is not `Send`), so that a probe that blocks
    // fails the test by the bound below instead of hanging it.
    std::thread::spawn(move || {
        let Some(mut ring) = ring_or_skip(&RingOptions::new(4)) else {
            return done_tx.send(None).unwrap();
        };
        let memory = vec![0_u8; 64].into_boxed_slice();
        let memory: &'static mut [u8] = Box::leak(memory);
        let mut buf_ring = sys_uring::BufRing::new(1).unwrap();
        // SAFETY: `memory` is leaked, so it outlives the ring, and nothing else touches it.
        unsafe { buf_ring.push(0, memory.as_mut_ptr(), 64) };
        buf_ring.publish();
        if let Err(error) = ring.register_buf_ring(buf_ring, u16::MAX) {
            eprintln!("skipped: no provided-buffer rings here: {error}");
            return done_tx.send(None).unwrap();
        }
        let answer = ring.probe_recv_multishot();
        done_tx
            .send(Some(answer.map_err(|error| error.to_string())))
            .unwrap();
    });
    let answer = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the probe answered (it waited on the registered group's socket otherwise)");
    if let Some(answer) = answer {
        assert!(answer.is_ok(), "{answer:?}");
    }
}
