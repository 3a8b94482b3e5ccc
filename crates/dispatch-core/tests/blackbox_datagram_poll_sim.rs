//! Black-box tests of `Io::poll`/`poll_multishot` on foreign descriptors (pipes, eventfd,
//! timerfd, sockets) and of the simulator's datagram sockets and Unix pairs, written from
//! the public documentation alone; the harness, shared with `blackbox_datagram.rs`, is
//! `datagram_harness/mod.rs`.
//!
//! Linux only: the tests name Linux's backends (io_uring three ways, epoll) beside the
//! kevent double and the simulator; on FreeBSD and macOS the suite's own tests cover kqueue.
#![cfg(target_os = "linux")]

#[path = "datagram_harness/mod.rs"]
mod harness;

use harness::*;

#[test]
fn a_poll_waits_for_a_pipe_and_reports_a_hang_up_whatever_the_interest() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (reader, writer) = pipe();
        let mut writer = File::from(writer);
        poll(&mut io, reader.as_raw_fd(), PollEvents::READABLE);
        settle(&mut io, &mut ctx);
        assert!(ctx.polls.is_empty(), "{backend:?}: nothing to read yet");
        writer.write_all(b"x").unwrap();
        run_until(&mut io, &mut ctx, "readable", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Ok(PollEvents::READABLE), "{backend:?}");
        // A poll only looks: the byte is still there.
        let mut reader = reader;
        assert_eq!(reader.read(&mut [0; 4]).unwrap(), 1, "{backend:?}");
        // An interest of NONE waits for a hang-up (or an error) alone.
        poll(&mut io, reader.as_raw_fd(), PollEvents::NONE);
        settle(&mut io, &mut ctx);
        assert!(ctx.polls.is_empty(), "{backend:?}");
        drop(writer);
        run_until(&mut io, &mut ctx, "hang-up", |ctx| !ctx.polls.is_empty());
        let events = ctx.polls.remove(0).unwrap();
        assert!(
            events.is_hangup() && !events.is_readable(),
            "{backend:?}: {events:?}"
        );
        // A regular file is always ready.
        let file = File::open("/proc/self/exe").unwrap();
        poll(&mut io, file.as_raw_fd(), PollEvents::READABLE);
        run_until(&mut io, &mut ctx, "a file", |ctx| !ctx.polls.is_empty());
        assert!(ctx.polls.remove(0).unwrap().is_readable(), "{backend:?}");
    }
}

#[test]
fn a_multishot_poll_that_reads_its_eventfd_fires_once_per_arrival() {
    use rustix::event::{eventfd, EventfdFlags};
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let efd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap();
        let fd = efd.as_raw_fd();
        let mut writer = File::from(efd.try_clone().unwrap());
        let mut ctx = Ctx {
            drain: Some(File::from(efd)),
            ..Ctx::default()
        };
        let id = io
            .poll_multishot(3, fd, PollEvents::READABLE, on_poll_shot)
            .unwrap();
        settle(&mut io, &mut ctx);
        assert!(
            ctx.shots.is_empty(),
            "{backend:?}: a zero count is not readable"
        );
        for arrival in 1..=3 {
            writer.write_all(&1u64.to_ne_bytes()).unwrap();
            run_until(&mut io, &mut ctx, "a shot", |ctx| {
                ctx.shots.len() == arrival
            });
            settle(&mut io, &mut ctx);
            assert_eq!(ctx.shots.len(), arrival, "{backend:?}: one per arrival");
            assert_eq!(
                ctx.shots[arrival - 1],
                (Ok(PollEvents::READABLE), true),
                "{backend:?}"
            );
        }
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| ctx.shots.len() == 4);
        assert_eq!(ctx.shots[3], (Err(libc::ECANCELED), false), "{backend:?}");
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.shots.len(), 4, "{backend:?}: nothing after the final");
    }
}

#[test]
fn a_poll_reports_a_timerfd_expiring() {
    use rustix::time::{timerfd_create, timerfd_settime, Itimerspec, Timespec};
    use rustix::time::{TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK).unwrap();
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        poll(&mut io, timer.as_raw_fd(), PollEvents::READABLE);
        timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec).unwrap();
        run_until(&mut io, &mut ctx, "the timer", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls[0], Ok(PollEvents::READABLE), "{backend:?}");
        let mut count = [0; 8];
        assert_eq!(
            File::from(timer).read(&mut count).unwrap(),
            8,
            "{backend:?}: not consumed"
        );
    }
}

#[test]
fn a_poll_and_a_receive_on_one_socket_compose_in_scheduling_order() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let fd = server.as_raw_fd();
        send_to(&mut io, &a, b"first", server_addr);
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        poll(&mut io, fd, PollEvents::READABLE);
        settle(&mut io, &mut ctx); // the datagram has surely arrived
        assert_eq!(ctx.polls.len(), 1, "{backend:?}: the datagram is there");
        // Scheduled before the receive: the poll sees the bytes the receive then takes.
        poll(&mut io, fd, PollEvents::READABLE);
        recv_from(&mut io, &server, Msg::new(Vec::with_capacity(16)));
        // Scheduled after the receive that drains the socket: it waits for the next one.
        poll(&mut io, fd, PollEvents::READABLE);
        run_until(&mut io, &mut ctx, "the receive", |ctx| !ctx.msgs.is_empty());
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.polls.len(), 2, "{backend:?}: {:?}", ctx.polls);
        assert_eq!(ctx.msgs[0].0, Ok(5), "{backend:?}");
        send_to(&mut io, &a, b"second", server_addr);
        run_until(&mut io, &mut ctx, "the last poll", |ctx| {
            ctx.polls.len() == 3
        });
        assert!(
            ctx.polls.iter().all(|p| *p == Ok(PollEvents::READABLE)),
            "{backend:?}"
        );
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn on_epoll_kqueue_and_the_simulator_a_waiting_poll_and_receive_both_complete() {
    for backend in [Backend::Epoll, Backend::KqueueFake, Backend::Sim] {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        // The simulator tries a waiting poll in order with the waiting operations: poll first.
        if backend == Backend::Sim {
            poll(&mut io, server.as_raw_fd(), PollEvents::READABLE);
            recv_from(&mut io, &server, Msg::new(Vec::with_capacity(16)));
        } else {
            recv_from(&mut io, &server, Msg::new(Vec::with_capacity(16)));
            poll(&mut io, server.as_raw_fd(), PollEvents::READABLE);
        }
        settle(&mut io, &mut ctx);
        assert!(
            ctx.polls.is_empty() && ctx.msgs.is_empty(),
            "{backend:?}: both wait"
        );
        send_to(&mut io, &a, b"one", server_addr);
        run_until(&mut io, &mut ctx, "both", |ctx| {
            !ctx.polls.is_empty() && !ctx.msgs.is_empty()
        });
        assert_eq!(ctx.polls[0], Ok(PollEvents::READABLE), "{backend:?}");
        assert_eq!(ctx.msgs[0].0, Ok(3), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn polls_answer_ebadf_cancel_and_deadlines_on_every_backend() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        poll(&mut io, -1, PollEvents::READABLE);
        run_until(&mut io, &mut ctx, "EBADF", |ctx| !ctx.polls.is_empty());
        assert_eq!(
            ctx.polls.remove(0),
            Err(libc::EBADF),
            "{backend:?}: a negative number"
        );
        if backend == Backend::Sim {
            let (reader, _writer) = pipe();
            poll(&mut io, reader.as_raw_fd(), PollEvents::READABLE);
            run_until(&mut io, &mut ctx, "EBADF", |ctx| !ctx.polls.is_empty());
            assert_eq!(
                ctx.polls.remove(0),
                Err(libc::EBADF),
                "a real descriptor on the sim"
            );
        }
        let (server, _) = env.udp();
        let id = poll(&mut io, server.as_raw_fd(), PollEvents::READABLE);
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "cancelled", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Err(libc::ECANCELED), "{backend:?}");
        let id = poll(&mut io, server.as_raw_fd(), PollEvents::READABLE);
        io.set_deadline(id, 1_000_000).unwrap();
        run_until(&mut io, &mut ctx, "timed out", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Err(libc::ETIMEDOUT), "{backend:?}");
        let id = io.poll_multishot(3, server.as_raw_fd(), PollEvents::READABLE, on_poll_shot);
        io.set_deadline(id.unwrap(), 1_000_000).unwrap();
        run_until(&mut io, &mut ctx, "timed out", |ctx| !ctx.shots.is_empty());
        assert_eq!(ctx.shots, [(Err(libc::ETIMEDOUT), false)], "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server]);
    }
}

/// Sends `n` numbered datagrams from one simulated socket to another and receives what
/// arrives in 1 s of virtual time; the payloads in arrival order, and the world's stats.
fn sim_datagrams(faults: Faults, seed: u64, n: u8) -> (Vec<u8>, dispatch_loop::sim::SimStats, u64) {
    let mut options = SimOptions::new(seed);
    options.faults = faults;
    let env = Env::with(Backend::Sim, options);
    let mut io = env.io::<Ctx>(64, Some((64, 256))).unwrap();
    let mut ctx = Ctx::default();
    let (server, server_addr) = env.udp();
    let (a, _) = env.udp();
    let id = io
        .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
        .unwrap();
    for i in 0..n {
        send_to(&mut io, &a, &[i], server_addr);
    }
    for _ in 0..1000 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(
        ctx.sent.len(),
        n as usize,
        "a send never waits, never fails"
    );
    assert!(ctx.sent.iter().all(|s| *s == Ok(1)), "loss is silent");
    cancel(&mut io, id);
    run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
    let got = ctx
        .dgrams
        .iter()
        .map(|g| g.clone().unwrap().bytes[0])
        .collect();
    close_all(&env, &mut io, &mut ctx, vec![server, a]);
    (got, env.sim().stats(), env.sim().trace_hash())
}

#[test]
fn sim_datagrams_are_lost_doubled_and_reordered_only_as_the_faults_say() {
    let all: Vec<u8> = (0..40).collect();
    for seed in 0..4 {
        let (got, stats, _) = sim_datagrams(Faults::NONE, seed, 40);
        assert_eq!(
            got, all,
            "seed {seed}: no faults, every datagram once, in order"
        );
        assert_eq!(
            stats.faults.datagram_loss + stats.faults.datagram_reorder,
            0
        );
    }
    let mut lossy = Faults::NONE;
    lossy.datagram_loss = 1_000_000;
    let (got, stats, _) = sim_datagrams(lossy, 1, 40);
    assert!(got.is_empty(), "every datagram lost: {got:?}");
    assert_eq!(stats.faults.datagram_loss, 40);
    let mut doubled = Faults::NONE;
    doubled.datagram_duplicate = 1_000_000;
    let (got, stats, _) = sim_datagrams(doubled, 1, 40);
    let mut sorted = got.clone();
    sorted.sort();
    let twice: Vec<u8> = all.iter().flat_map(|&i| [i, i]).collect();
    assert_eq!(sorted, twice, "every datagram twice");
    assert_eq!(stats.faults.datagram_duplicate, 40);
    let mut reorder = Faults::NONE;
    reorder.datagram_reorder = 300_000;
    let mut reordered = 0;
    for seed in 0..8 {
        let (got, stats, hash) = sim_datagrams(reorder, seed, 40);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, all, "seed {seed}: held back, never lost");
        reordered += u32::from(got != all);
        assert!(
            stats.faults.datagram_reorder > 0,
            "seed {seed}: the fault fired"
        );
        let (again, _, hash_again) = sim_datagrams(reorder, seed, 40);
        assert_eq!(
            (got, hash),
            (again, hash_again),
            "seed {seed}: one seed, one trace"
        );
    }
    assert!(reordered > 0, "some seed reorders");
}

#[test]
fn sim_udp_bind_refuses_a_bound_address_and_drops_datagrams_to_nobody() {
    let env = Env::new(Backend::Sim);
    let (server, server_addr) = env.udp();
    let again = env.sim().udp_bind(server_addr).map_err(|e| errno(&e));
    assert_eq!(again.err(), Some(libc::EADDRINUSE));
    let mut io = env.io::<Ctx>(8, None).unwrap();
    let mut ctx = Ctx::default();
    send_to(&mut io, &server, b"nobody", addr("127.0.0.1:9"));
    run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
    assert_eq!(ctx.sent, [Ok(6)], "dropped silently, as UDP does");
    close_all(&env, &mut io, &mut ctx, vec![server]);
}

#[test]
fn sim_unix_pairs_keep_messages_whole_and_fail_as_linux_does() {
    let env = Env::new(Backend::Sim);
    let mut io = env.io::<Ctx>(8, None).unwrap();
    let mut ctx = Ctx::default();
    let (x, y) = env.unix_pair(true);
    for bytes in [&b"first"[..], b"second message"] {
        io.sendmsg(0, x.as_raw_fd(), Msg::new(bytes.to_vec()), on_sent)
            .unwrap();
    }
    let (n, msg) = receive(&mut io, &mut ctx, &y, Msg::new(Vec::with_capacity(16)));
    assert_eq!(
        (n, &msg.bufs()[0][..], msg.truncated()),
        (Ok(5), &b"first"[..], false)
    );
    let (n, msg) = receive(&mut io, &mut ctx, &y, Msg::new(Vec::with_capacity(6)));
    assert_eq!(
        (n, &msg.bufs()[0][..], msg.truncated()),
        (Ok(6), &b"second"[..], true)
    );
    assert_eq!(msg.peer(), None, "a socket pair's peer is unnamed");
    ctx.sent.clear();
    // An IP address: EINVAL on a datagram pair; a path: ENOENT.
    io.send_to(
        0,
        x.as_raw_fd(),
        Msg::new(b"ip".to_vec()),
        addr("127.0.0.1:9"),
        on_sent,
    )
    .unwrap();
    let mut to_path = Msg::new(b"path".to_vec());
    to_path.set_peer_path("/nowhere.sock".as_ref()).unwrap();
    io.sendmsg(0, x.as_raw_fd(), to_path, on_sent).unwrap();
    run_until(&mut io, &mut ctx, "2 sends", |ctx| ctx.sent.len() == 2);
    assert_eq!(ctx.sent, [Err(libc::EINVAL), Err(libc::ENOENT)]);
    // A stream pair: an IP address is EISCONN.
    let (s, t) = env.unix_pair(false);
    ctx.sent.clear();
    io.send_to(
        0,
        s.as_raw_fd(),
        Msg::new(b"ip".to_vec()),
        addr("127.0.0.1:9"),
        on_sent,
    )
    .unwrap();
    run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
    assert_eq!(ctx.sent, [Err(libc::EISCONN)]);
    // The datagram peer closed: one send refused, then ENOTCONN.
    close_all_but_check(&mut io, &mut ctx, y);
    ctx.sent.clear();
    for _ in 0..2 {
        io.sendmsg(0, x.as_raw_fd(), Msg::new(b"gone".to_vec()), on_sent)
            .unwrap();
        let n = ctx.sent.len() + 1;
        run_until(&mut io, &mut ctx, "the send", |ctx| ctx.sent.len() == n);
    }
    assert_eq!(ctx.sent, [Err(libc::ECONNREFUSED), Err(libc::ENOTCONN)]);
    close_all(&env, &mut io, &mut ctx, vec![x, s, t]);
}

#[test]
fn a_hang_up_does_not_end_a_multishot_poll() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (socket, peer) = UnixStream::pair().unwrap();
        let id = io.poll_multishot(3, socket.as_raw_fd(), PollEvents::NONE, on_poll_shot);
        settle(&mut io, &mut ctx);
        assert!(ctx.shots.is_empty(), "{backend:?}");
        // On Linux a peer that shut its writing side is a hang-up.
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        run_until(&mut io, &mut ctx, "a hang-up", |ctx| !ctx.shots.is_empty());
        let (events, more) = ctx.shots[0];
        assert!(
            events.unwrap().is_hangup() && more,
            "{backend:?}: {events:?}"
        );
        cancel(&mut io, id.unwrap());
        run_until(&mut io, &mut ctx, "the final", |ctx| {
            !ctx.shots.last().unwrap().1
        });
        assert_eq!(
            ctx.shots.last().unwrap().0,
            Err(libc::ECANCELED),
            "{backend:?}"
        );
        assert!(
            ctx.shots.iter().rev().skip(1).all(|s| s.1),
            "{backend:?}: one final"
        );
    }
}

fn on_writable_shot(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, shot: Shot<PollEvents>) {
    assert!(ctx.shots.len() < 100_000, "a run of 1 ms that never ends");
    ctx.shots
        .push((shot.result.map_err(|e| errno(&e)), shot.more));
}

/// One bounded run beside a multishot poll for writability, which the loop's re-arm reports
/// in every turn ("the loop never sleeps"): the run must still end when its time is up.
fn bounded_run_beside_a_ready_multishot(backend: Backend) {
    let env = Env::new(backend);
    let Some(mut io) = env.io::<Ctx>(8, None) else {
        return;
    };
    let mut ctx = Ctx::default();
    let (socket, _) = env.udp();
    let fd = socket.as_raw_fd();
    let id = io
        .poll_multishot(3, fd, PollEvents::WRITABLE, on_writable_shot)
        .unwrap();
    io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    assert!(!ctx.shots.is_empty(), "{backend:?}");
    assert!(ctx
        .shots
        .iter()
        .all(|s| *s == (Ok(PollEvents::WRITABLE), true)));
    cancel(&mut io, id);
    run_until(&mut io, &mut ctx, "the final", |ctx| {
        !ctx.shots.last().unwrap().1
    });
    close_all(&env, &mut io, &mut ctx, vec![socket]);
}

#[test]
fn a_level_triggered_multishot_poll_still_lets_a_bounded_run_end() {
    for backend in REAL {
        bounded_run_beside_a_ready_multishot(backend);
    }
}

#[test]
// On the simulator the run ends by its bound on turns at one virtual instant.
fn on_the_simulator_a_ready_multishot_poll_still_lets_a_bounded_run_end() {
    bounded_run_beside_a_ready_multishot(Backend::Sim);
}

fn on_shot_panic(_: &mut Ctx, _: &mut Io<Ctx>, _: Tag, _: Shot<PollEvents>) {
    panic!("a callback that panics (expected by the test)");
}

fn on_datagram_panic(_: &mut Ctx, _: &mut Io<Ctx>, _: Tag, _: Shot<Datagram>) {
    panic!("a callback that panics (expected by the test)");
}

#[test]
fn a_loop_dropped_with_multishot_results_undelivered_closes_no_borrowed_descriptor() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(16, Some((8, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (reader, writer) = pipe();
        let mut writer = File::from(writer);
        writer.write_all(b"ready").unwrap();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        for _ in 0..4 {
            send_to(&mut io, &a, b"d", server_addr);
        }
        run_until(&mut io, &mut ctx, "4 sends", |ctx| ctx.sent.len() == 4);
        io.poll_multishot(3, reader.as_raw_fd(), PollEvents::READABLE, on_shot_panic)
            .unwrap();
        io.recv_from_multishot(0, server.as_raw_fd(), on_datagram_panic)
            .unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..ROUNDS_MAX {
                io.run_for_ns(&mut ctx, 1_000_000).unwrap();
            }
        }));
        assert!(run.is_err(), "{backend:?}: a callback ran and panicked");
        drop(io);
        // Undelivered results are events and datagrams: the borrowed descriptors stay open.
        assert!(
            rustix::io::fcntl_getfd(&reader).is_ok(),
            "{backend:?}: the pipe closed"
        );
        for fd in [&server, &a] {
            assert!(
                rustix::io::fcntl_getfd(fd).is_ok(),
                "{backend:?}: a socket closed"
            );
        }
        let mut reader = reader;
        assert_eq!(
            reader.read(&mut [0; 8]).unwrap(),
            5,
            "{backend:?}: the poll took nothing"
        );
    }
}

#[test]
fn sim_polls_see_the_end_of_stream_of_a_peer_closed_through_the_loop() {
    let env = Env::new(Backend::Sim);
    let mut io = env.io::<Ctx>(8, None).unwrap();
    let mut ctx = Ctx::default();
    let (a, b) = env.sim().socket_pair().unwrap();
    poll(&mut io, a.as_raw_fd(), PollEvents::NONE);
    settle(&mut io, &mut ctx);
    assert!(ctx.polls.is_empty(), "nothing yet");
    close_one(&mut io, &mut ctx, b);
    run_until(&mut io, &mut ctx, "a hang-up", |ctx| !ctx.polls.is_empty());
    assert!(ctx.polls[0].unwrap().is_hangup(), "{:?}", ctx.polls);
    poll(&mut io, a.as_raw_fd(), PollEvents::READABLE);
    run_until(&mut io, &mut ctx, "readable", |ctx| ctx.polls.len() == 2);
    assert!(
        ctx.polls[1].unwrap().is_readable(),
        "the end of stream reads 0"
    );
    close_all(&env, &mut io, &mut ctx, vec![a]);
}

#[test]
fn sim_descriptors_cut_by_the_control_buffer_release_their_objects() {
    let env = Env::new(Backend::Sim);
    let mut io = env.io::<Ctx>(16, None).unwrap();
    let mut ctx = Ctx::default();
    let (x, y) = env.unix_pair(true);
    let pairs: Vec<(OwnedFd, OwnedFd)> = (0..3).map(|_| env.unix_pair(false)).collect();
    let (passed, kept): (Vec<OwnedFd>, Vec<OwnedFd>) = pairs.into_iter().unzip();
    let mut out = Msg::new(b"three".to_vec()).with_fds(3);
    out.fds_mut().extend(passed);
    io.sendmsg(0, x.as_raw_fd(), out, on_msg).unwrap();
    run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.msgs.is_empty());
    let (sent, mut sent_msg) = ctx.msgs.remove(0);
    assert_eq!(sent, Ok(5));
    let (n, msg) = receive(
        &mut io,
        &mut ctx,
        &y,
        Msg::new(Vec::with_capacity(8)).with_fds(1),
    );
    assert_eq!(
        (n, msg.control_truncated(), msg.fds().len()),
        (Ok(5), true, 0)
    );
    // The sender's copies were the last: closed through the loop, each object goes, and
    // its peer sees the end of stream.
    let copies: Vec<OwnedFd> = sent_msg.fds_mut().drain(..).collect();
    close_all_but_check_many(&mut io, &mut ctx, copies);
    for peer in &kept {
        let (n, _) = receive(&mut io, &mut ctx, peer, Msg::new(Vec::with_capacity(8)));
        assert_eq!(n, Ok(0), "the end of stream");
    }
    let mut rest = kept;
    rest.extend([x, y]);
    close_all(&env, &mut io, &mut ctx, rest);
    assert_eq!(env.sim().stats().dropped_descriptors, 0);
}

fn close_one(io: &mut Io<Ctx>, ctx: &mut Ctx, fd: OwnedFd) {
    close_all_but_check(io, ctx, fd);
}

fn close_all_but_check_many(io: &mut Io<Ctx>, ctx: &mut Ctx, fds: Vec<OwnedFd>) {
    for fd in fds {
        close_all_but_check(io, ctx, fd);
    }
}

#[test]
fn sim_udp_bind_is_emfile_past_descriptors_max() {
    let mut options = SimOptions::new(3);
    options.descriptors_max = 2;
    let env = Env::with(Backend::Sim, options);
    let (a, _) = env.udp();
    let (b, _) = env.udp();
    let third = env
        .sim()
        .udp_bind(addr("127.0.0.1:0"))
        .map_err(|e| errno(&e));
    assert_eq!(third.err(), Some(libc::EMFILE));
    let mut io = env.io::<Ctx>(8, None).unwrap();
    let mut ctx = Ctx::default();
    close_all(&env, &mut io, &mut ctx, vec![a, b]);
}
