//! Black-box tests of datagrams and messages, written from the public documentation alone
//! (README, docs/ARCHITECTURE.md, rustdoc): `Io::recv_from_multishot` and `Datagram`, and
//! `sendmsg`/`recvmsg`/`send_to`/`recv_from` with `Msg` (buffers, peers, `SCM_RIGHTS`).
//! Polls and the simulator's faults are in `blackbox_datagram_poll_sim.rs`.
//!
//! Each promise is checked on every backend the docs say it holds on: io_uring (with the
//! kernel's multishot, without it, and without the provided-buffer ring), epoll, kqueue over
//! the kevent double, and the simulator. A backend this machine cannot run (io_uring blocked)
//! is skipped with a `skipped:` line, which `cargo xtask test` counts and lists. Real
//! sockets are on 127.0.0.1; every wait is a bounded loop of `run_for_ns`, never a timing
//! threshold.
//!
//! Linux only: the tests name Linux's backends (io_uring three ways, epoll) beside the
//! kevent double and the simulator; on FreeBSD and macOS the suite's own tests cover kqueue.
#![cfg(target_os = "linux")]

#[path = "datagram_harness/mod.rs"]
mod harness;

use harness::*;

#[test]
fn multishot_hands_over_each_datagram_with_its_sender_then_one_final_on_cancel() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((8, 2048))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        let (b, b_addr) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        for bytes in [&b"one"[..], b"", b"three"] {
            send_to(&mut io, &a, bytes, server_addr);
        }
        send_to(&mut io, &b, b"from b", server_addr);
        run_until(&mut io, &mut ctx, "4 datagrams", |ctx| {
            ctx.dgrams.len() == 4
        });
        let got: Vec<Got> = ctx.dgrams.drain(..).map(Result::unwrap).collect();
        let from_a: Vec<&Got> = got.iter().filter(|g| g.bytes != b"from b").collect();
        let texts: Vec<&[u8]> = from_a.iter().map(|g| &g.bytes[..]).collect();
        assert_eq!(
            texts,
            [&b"one"[..], b"", b"three"],
            "{backend:?}: one sender's order"
        );
        for g in &got {
            assert!(!g.truncated, "{backend:?}");
            assert_eq!(g.len, g.bytes.len(), "{backend:?}");
            // The one documented exception: an empty datagram taken from the ring without
            // the kernel's multishot may come without its sender.
            let may_lack = g.bytes.is_empty() && backend == Backend::UringNoMultishot;
            if !(may_lack && g.peer.is_none()) {
                let want = if g.bytes == b"from b" { b_addr } else { a_addr };
                assert_eq!(g.peer, Some(want), "{backend:?}: {g:?}");
            }
        }
        assert!(
            ctx.finals.is_empty(),
            "{backend:?}: an empty datagram is not an end"
        );
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        settle(&mut io, &mut ctx);
        assert_eq!(
            ctx.finals,
            [Err(libc::ECANCELED)],
            "{backend:?}: exactly one final"
        );
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
        assert_eq!(
            ctx.units.first(),
            Some(&Ok(())),
            "{backend:?}: the cancel's answer"
        );
        close_all(&env, &mut io, &mut ctx, vec![server, a, b]);
    }
}

#[test]
fn a_datagram_longer_than_the_room_is_cut_and_reported_with_its_length() {
    assert_eq!(DATAGRAM_HEADROOM, 44, "the documented cost per buffer");
    for backend in ALL {
        let env = Env::new(backend);
        let size = DATAGRAM_HEADROOM + 8;
        let Some(mut io) = env.io::<Ctx>(8, Some((4, size))) else {
            continue;
        };
        assert_eq!(io.pool_buffer_size(), size, "{backend:?}");
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        send_to(&mut io, &a, b"01234567", server_addr);
        send_to(&mut io, &a, b"ABCDEFGHIJKLMNOPQRST", server_addr);
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| {
            ctx.dgrams.len() == 2
        });
        let fits = ctx.dgrams[0].clone().unwrap();
        assert_eq!(
            (&fits.bytes[..], fits.truncated, fits.len),
            (&b"01234567"[..], false, 8)
        );
        assert_eq!(
            fits.room, 8,
            "{backend:?}: capacity less 44 is the most a datagram brings"
        );
        let cut = ctx.dgrams[1].clone().unwrap();
        assert_eq!(&cut.bytes[..], b"ABCDEFGH", "{backend:?}: the part kept");
        assert!(cut.truncated, "{backend:?}: said to be cut");
        // Linux and the simulator report the true length.
        assert_eq!(cut.len, 20, "{backend:?}: the true length");
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn pool_buffers_must_hold_more_than_the_headroom() {
    for backend in ALL {
        let env = Env::new(backend);
        let (server, server_addr) = env.udp();
        // No pool.
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let error = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap_err();
        assert!(
            matches!(error.kind, ScheduleErrorKind::NoPool),
            "{backend:?}"
        );
        drop(io);
        // 44 bytes: "44 bytes or fewer" is refused, and 45 is the smallest that works.
        let mut io = env.io::<Ctx>(8, Some((4, 44))).unwrap();
        let error = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap_err();
        match error.kind {
            ScheduleErrorKind::PoolBuffersTooSmall { size_min } => assert_eq!(size_min, 45),
            other => panic!("{backend:?}: {other:?}"),
        }
        drop(io);
        let mut io = env.io::<Ctx>(8, Some((4, 45))).unwrap();
        let mut ctx = Ctx::default();
        let (a, _) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        send_to(&mut io, &a, b"x", server_addr);
        send_to(&mut io, &a, b"yz", server_addr);
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| {
            ctx.dgrams.len() == 2
        });
        let got: Vec<_> = ctx.dgrams.iter().map(|g| g.clone().unwrap()).collect();
        assert_eq!(
            (&got[0].bytes[..], got[0].truncated),
            (&b"x"[..], false),
            "{backend:?}"
        );
        assert_eq!(
            (&got[1].bytes[..], got[1].truncated),
            (&b"y"[..], true),
            "{backend:?}"
        );
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn a_deadline_ends_an_idle_multishot_with_etimedout() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, _) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        io.set_deadline(id, 2_000_000).unwrap();
        run_until(&mut io, &mut ctx, "the deadline", |ctx| {
            !ctx.finals.is_empty()
        });
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.finals, [Err(libc::ETIMEDOUT)], "{backend:?}");
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server]);
    }
}

#[test]
fn a_dry_pool_makes_the_receive_wait_and_the_datagrams_wait_in_the_socket() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(16, Some((2, 256))) else {
            continue;
        };
        let mut ctx = Ctx {
            hold: true,
            ..Ctx::default()
        };
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        for i in 0..5u8 {
            send_to(&mut io, &a, &[b'd', b'0' + i], server_addr);
        }
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| {
            ctx.dgrams.len() == 2
        });
        run_until(&mut io, &mut ctx, "5 sends", |ctx| ctx.sent.len() == 5);
        settle(&mut io, &mut ctx);
        assert_eq!(
            ctx.dgrams.len(),
            2,
            "{backend:?}: two buffers, two datagrams"
        );
        assert!(
            ctx.finals.is_empty(),
            "{backend:?}: a dry pool is a wait, not a failure"
        );
        assert!(
            io.stats().pool_waits >= 1,
            "{backend:?}: counted in pool_waits"
        );
        ctx.hold = false;
        ctx.held.clear(); // the buffers go back to the pool
        run_until(&mut io, &mut ctx, "5 datagrams", |ctx| {
            ctx.dgrams.len() == 5
        });
        let texts: Vec<Vec<u8>> = ctx
            .dgrams
            .iter()
            .map(|g| g.clone().unwrap().bytes)
            .collect();
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'd', b'0' + i]).collect();
        assert_eq!(texts, want, "{backend:?}: none lost, in order");
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn dropping_the_loop_with_the_multishot_in_flight_leaves_the_socket_usable() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        io.recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        for _ in 0..3 {
            send_to(&mut io, &a, b"queued", server_addr);
        }
        run_until(&mut io, &mut ctx, "one datagram", |ctx| {
            !ctx.dgrams.is_empty()
        });
        drop(io); // the multishot is in flight, maybe with results undelivered
        assert!(
            ctx.finals.is_empty(),
            "{backend:?}: no callback runs in the drop"
        );
        // The loop borrowed the socket: a new loop receives on it.
        let mut io = env.io::<Ctx>(8, Some((4, 256))).unwrap();
        let mut ctx = Ctx::default();
        send_to(&mut io, &a, b"after", server_addr);
        let room = Msg::new(Vec::with_capacity(16));
        io.recv_from(1, server.as_raw_fd(), room, on_msg).unwrap();
        run_until(&mut io, &mut ctx, "a receive", |ctx| !ctx.msgs.is_empty());
        assert!(ctx.msgs[0].0.is_ok(), "{backend:?}: {:?}", ctx.msgs[0].0);
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn a_descriptor_that_cannot_receive_datagrams_ends_the_multishot() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (reader, _writer) = io::pipe().unwrap();
        io.recv_from_multishot(0, reader.as_raw_fd(), on_datagram)
            .unwrap();
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        // A pipe is not a socket; the simulator knows no real descriptor (`EBADF`).
        let want = if backend == Backend::Sim {
            libc::EBADF
        } else {
            libc::ENOTSOCK
        };
        assert_eq!(ctx.finals, [Err(want)], "{backend:?}");
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
        // A Unix datagram socket: no IP sender (real), or `EINVAL` (the simulator's pairs).
        let (x, y) = env.unix_pair(true);
        ctx.finals.clear();
        let id = io
            .recv_from_multishot(0, y.as_raw_fd(), on_datagram)
            .unwrap();
        let msg = Msg::new(b"unix".to_vec());
        io.sendmsg(9, x.as_raw_fd(), msg, on_sent).unwrap();
        if backend == Backend::Sim {
            run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
            assert_eq!(ctx.finals, [Err(libc::EINVAL)]);
        } else {
            run_until(&mut io, &mut ctx, "a datagram", |ctx| {
                !ctx.dgrams.is_empty()
            });
            let got = ctx.dgrams[0].clone().unwrap();
            assert_eq!(
                (&got.bytes[..], got.peer),
                (&b"unix"[..], None),
                "{backend:?}"
            );
            cancel(&mut io, id);
            run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        }
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
    }
}

#[test]
fn a_vectored_message_is_one_datagram_scattered_over_the_buffers() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        let out = Msg::vectored(vec![b"ab".to_vec(), b"cde".to_vec(), b"f".to_vec()]);
        io.send_to(9, a.as_raw_fd(), out, server_addr, on_sent)
            .unwrap();
        let room = Msg::vectored(vec![Vec::with_capacity(4), Vec::with_capacity(8)]);
        let (n, msg) = receive(&mut io, &mut ctx, &server, room);
        assert_eq!(n, Ok(6), "{backend:?}");
        assert_eq!(
            msg.bufs(),
            [b"abcd".to_vec(), b"ef".to_vec()],
            "{backend:?}"
        );
        assert_eq!(msg.peer(), Some(a_addr), "{backend:?}");
        assert!(!msg.truncated(), "{backend:?}");
        // The same message again, emptied: a datagram longer than both buffers.
        let mut msg = msg;
        msg.bufs_mut().iter_mut().for_each(Vec::clear);
        send_to(&mut io, &a, b"0123456789ABCDEF", server_addr);
        let (n, msg) = receive(&mut io, &mut ctx, &server, msg);
        assert_eq!(n, Ok(12), "{backend:?}: the count covers what was kept");
        assert_eq!(
            msg.bufs(),
            [b"0123".to_vec(), b"456789AB".to_vec()],
            "{backend:?}"
        );
        assert!(
            msg.truncated(),
            "{backend:?}: the rest is lost, and said to be"
        );
        // Past MSG_IOV_MAX buffers, a send sends the first MSG_IOV_MAX.
        let many = Msg::vectored((0..MSG_IOV_MAX + 2).map(|i| vec![b'a' + i as u8]).collect());
        io.send_to(9, a.as_raw_fd(), many, server_addr, on_sent)
            .unwrap();
        let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::with_capacity(64)));
        assert_eq!(n, Ok(MSG_IOV_MAX), "{backend:?}");
        assert_eq!(msg.bufs()[0], b"abcdefgh", "{backend:?}");
        run_until(&mut io, &mut ctx, "3 sends", |ctx| ctx.sent.len() == 3);
        assert_eq!(ctx.sent, [Ok(6), Ok(16), Ok(MSG_IOV_MAX)], "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn empty_datagrams_and_a_message_with_no_room() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        send_to(&mut io, &a, b"", server_addr);
        send_to(&mut io, &a, b"abc", server_addr);
        send_to(&mut io, &a, b"wxyz", server_addr);
        // No spare capacity is allowed on a message.
        let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::new()));
        assert_eq!(
            (n, msg.peer(), msg.truncated()),
            (Ok(0), Some(a_addr), false),
            "{backend:?}"
        );
        let (n, msg) = receive(&mut io, &mut ctx, &server, msg);
        assert_eq!(
            (n, msg.truncated()),
            (Ok(0), true),
            "{backend:?}: 3 bytes into no room"
        );
        // Exactly the room: not truncated.
        let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::with_capacity(4)));
        assert_eq!(
            (n, &msg.bufs()[0][..]),
            (Ok(4), &b"wxyz"[..]),
            "{backend:?}"
        );
        assert!(!msg.truncated(), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn descriptors_pass_over_unix_sockets_and_work_at_the_other_end() {
    for backend in ALL {
        for datagram in [true, false] {
            let env = Env::new(backend);
            let Some(mut io) = env.io::<Ctx>(8, None) else {
                continue;
            };
            let mut ctx = Ctx::default();
            let (x, y) = env.unix_pair(datagram);
            let (mut reader, writer) = pipe();
            let mut out = Msg::new(b"fd".to_vec()).with_fds(1);
            out.fds_mut().push(writer);
            io.sendmsg(0, x.as_raw_fd(), out, on_msg).unwrap();
            let room = Msg::new(Vec::with_capacity(8)).with_fds(1);
            let (n, mut msg) = receive(&mut io, &mut ctx, &y, room);
            let what = format!("{backend:?}, datagram {datagram}");
            assert_eq!(n, Ok(2), "{what}");
            assert!(!msg.control_truncated(), "{what}");
            assert_eq!(msg.fds().len(), 1, "{what}");
            let flags = rustix::io::fcntl_getfd(&msg.fds()[0]).unwrap();
            assert!(
                flags.contains(rustix::io::FdFlags::CLOEXEC),
                "{what}: close-on-exec"
            );
            run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.msgs.is_empty());
            let (sent, sent_msg) = ctx.msgs.remove(0);
            assert_eq!(sent, Ok(2), "{what}");
            assert_eq!(
                sent_msg.fds().len(),
                1,
                "{what}: the sender keeps its own, open"
            );
            drop(sent_msg);
            let mut received = File::from(msg.fds_mut().pop().unwrap());
            received.write_all(b"hi").unwrap();
            let mut hi = [0; 2];
            reader.read_exact(&mut hi).unwrap();
            assert_eq!(&hi, b"hi", "{what}");
            drop(received);
            assert!(!writers_open(&mut reader), "{what}: every copy closed");
            close_all(&env, &mut io, &mut ctx, vec![x, y]);
        }
    }
}

#[test]
fn descriptors_that_do_not_fit_are_closed_and_reported() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (x, y) = env.unix_pair(true);
        let (mut reader, writer) = pipe();
        let mut out = Msg::new(b"four".to_vec()).with_fds(4);
        for _ in 0..3 {
            out.fds_mut().push(writer.try_clone().unwrap());
        }
        out.fds_mut().push(writer);
        io.sendmsg(0, x.as_raw_fd(), out, on_sent).unwrap();
        // Room for one (two may fit, by alignment); four do not.
        let room = Msg::new(Vec::with_capacity(8)).with_fds(1);
        let (n, msg) = receive(&mut io, &mut ctx, &y, room);
        assert_eq!(n, Ok(4), "{backend:?}");
        assert!(msg.control_truncated(), "{backend:?}");
        assert!(msg.fds().is_empty(), "{backend:?}: none kept");
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        assert!(
            !writers_open(&mut reader),
            "{backend:?}: the 4 that arrived were closed"
        );
        // A receive closes what the message held: a second descriptor, then a plain datagram.
        let (_, writer) = pipe_into(&mut reader);
        let mut out = Msg::new(b"one".to_vec()).with_fds(1);
        out.fds_mut().push(writer);
        io.sendmsg(0, x.as_raw_fd(), out, on_sent).unwrap();
        let room = Msg::new(Vec::with_capacity(8)).with_fds(2);
        let (_, mut msg) = receive(&mut io, &mut ctx, &y, room);
        assert_eq!(msg.fds().len(), 1, "{backend:?}");
        io.sendmsg(0, x.as_raw_fd(), Msg::new(b"plain".to_vec()), on_sent)
            .unwrap();
        msg.bufs_mut()[0].clear();
        let (n, msg) = receive(&mut io, &mut ctx, &y, msg);
        assert_eq!((n, msg.fds().len()), (Ok(5), 0), "{backend:?}");
        assert!(
            !writers_open(&mut reader),
            "{backend:?}: the held one was closed"
        );
        run_until(&mut io, &mut ctx, "the sends", |ctx| ctx.sent.len() == 3);
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
    }
}

#[test]
fn set_peer_path_checks_the_path() {
    let mut msg = Msg::new(vec![]);
    msg.set_peer(Some(addr("127.0.0.1:9")));
    let errno_of =
        |msg: &mut Msg, path: &str| msg.set_peer_path(path.as_ref()).map_err(|e| errno(&e));
    assert_eq!(errno_of(&mut msg, ""), Err(libc::EINVAL));
    assert_eq!(errno_of(&mut msg, "a\0b"), Err(libc::EINVAL));
    assert_eq!(
        errno_of(&mut msg, &"x".repeat(200)),
        Err(libc::ENAMETOOLONG)
    );
    assert_eq!(errno_of(&mut msg, "/tmp/some.sock"), Ok(()));
    assert_eq!(msg.peer(), None, "a path clears the IP peer");
    assert_eq!(msg.peer_path(), Some("/tmp/some.sock".as_ref()));
}

#[test]
fn a_message_from_a_unix_path_goes_back_to_it() {
    let dir = std::env::temp_dir().join(format!("bb-datagram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (a_path, b_path) = (
            dir.join(format!("{backend:?}-a")),
            dir.join(format!("{backend:?}-b")),
        );
        let a = UnixDatagram::bind(&a_path).unwrap();
        let b = UnixDatagram::bind(&b_path).unwrap();
        let mut out = Msg::new(b"to b".to_vec());
        out.set_peer_path(&b_path).unwrap();
        io.sendmsg(0, a.as_raw_fd(), out, on_sent).unwrap();
        let b = OwnedFd::from(b);
        let (n, mut msg) = receive(&mut io, &mut ctx, &b, Msg::new(Vec::with_capacity(8)));
        assert_eq!((n, msg.peer()), (Ok(4), None), "{backend:?}");
        assert_eq!(msg.peer_path(), Some(a_path.as_path()), "{backend:?}");
        msg.bufs_mut()[0] = b"back".to_vec();
        io.sendmsg(0, b.as_raw_fd(), msg, on_sent).unwrap();
        let a = OwnedFd::from(a);
        let (n, msg) = receive(&mut io, &mut ctx, &a, Msg::new(Vec::with_capacity(8)));
        assert_eq!(
            (n, &msg.bufs()[0][..]),
            (Ok(4), &b"back"[..]),
            "{backend:?}"
        );
        assert_eq!(msg.peer_path(), Some(b_path.as_path()), "{backend:?}");
        std::fs::remove_file(a_path).unwrap();
        std::fs::remove_file(b_path).unwrap();
    }
    std::fs::remove_dir(dir).unwrap();
}

#[test]
fn send_errors_come_as_the_os_reports_them() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        // An address of the wrong family.
        let (a, _) = env.udp();
        send_to(&mut io, &a, b"v6", addr("[::1]:9"));
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        let wrong = ctx.sent.remove(0);
        assert!(
            matches!(wrong, Err(libc::EAFNOSUPPORT | libc::EINVAL)),
            "{backend:?}: {wrong:?}"
        );
        // A connected UDP socket whose peer's port answers with ICMP port unreachable.
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(gone.local_addr().unwrap()).unwrap();
        drop(gone);
        let mut refused = false;
        for _ in 0..20 {
            io.sendmsg(0, connected.as_raw_fd(), Msg::new(b"?".to_vec()), on_sent)
                .unwrap();
            run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
            match ctx.sent.remove(0) {
                Ok(1) => continue,
                Err(libc::ECONNREFUSED) => {
                    refused = true;
                    break;
                }
                other => panic!("{backend:?}: {other:?}"),
            }
        }
        assert!(refused, "{backend:?}: ECONNREFUSED after the ICMP");
    }
}

#[test]
fn a_socket_with_room_is_writable_and_not_readable_until_a_datagram_arrives() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let both = PollEvents::READABLE | PollEvents::WRITABLE;
        poll(&mut io, server.as_raw_fd(), both);
        run_until(&mut io, &mut ctx, "writable", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Ok(PollEvents::WRITABLE), "{backend:?}");
        poll(&mut io, server.as_raw_fd(), PollEvents::READABLE);
        settle(&mut io, &mut ctx);
        assert!(ctx.polls.is_empty(), "{backend:?}");
        send_to(&mut io, &a, b"now", server_addr);
        run_until(&mut io, &mut ctx, "readable", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Ok(PollEvents::READABLE), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

fn on_datagram_cancel_first(ctx: &mut Ctx, io: &mut Io<Ctx>, tag: Tag, shot: Shot<Datagram>) {
    if shot.more && ctx.dgrams.is_empty() {
        cancel(io, ctx.id.expect("the multishot's id"));
    }
    on_datagram(ctx, io, tag, shot);
}

#[test]
fn a_cancel_from_a_callback_loses_no_datagram() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(16, Some((16, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        for i in 0..10u8 {
            send_to(&mut io, &a, &[i], server_addr);
        }
        run_until(&mut io, &mut ctx, "10 sends", |ctx| ctx.sent.len() == 10);
        settle(&mut io, &mut ctx);
        let fd = server.as_raw_fd();
        ctx.id = Some(
            io.recv_from_multishot(0, fd, on_datagram_cancel_first)
                .unwrap(),
        );
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.finals.len(), 1, "{backend:?}: exactly one final");
        let mut got: Vec<u8> = ctx
            .dgrams
            .iter()
            .map(|g| g.clone().unwrap().bytes[0])
            .collect();
        match ctx.finals[0].clone() {
            Ok(last) => got.push(last.bytes[0]),
            Err(e) => assert_eq!(e, libc::ECANCELED, "{backend:?}"),
        }
        // What the multishot did not take waits in the socket.
        while got.len() < 10 {
            let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::with_capacity(4)));
            assert_eq!(n, Ok(1), "{backend:?}");
            got.push(msg.bufs()[0][0]);
        }
        assert_eq!(
            got,
            (0..10).collect::<Vec<u8>>(),
            "{backend:?}: in order, none lost"
        );
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn an_error_on_the_socket_ends_the_multishot() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(gone.local_addr().unwrap()).unwrap();
        drop(gone);
        io.recv_from_multishot(0, socket.as_raw_fd(), on_datagram)
            .unwrap();
        io.sendmsg(9, socket.as_raw_fd(), Msg::new(b"?".to_vec()), on_sent)
            .unwrap();
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        assert_eq!(
            ctx.finals,
            [Err(libc::ECONNREFUSED)],
            "{backend:?}: the ICMP's error"
        );
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
    }
}

#[test]
fn a_cancelled_receive_takes_no_descriptor() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (x, y) = env.unix_pair(true);
        let room = Msg::new(Vec::with_capacity(8)).with_fds(2);
        let id = io.recvmsg(1, y.as_raw_fd(), room, on_msg).unwrap();
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "cancelled", |ctx| !ctx.msgs.is_empty());
        let (n, msg) = ctx.msgs.remove(0);
        assert_eq!(
            (n, msg.fds().len()),
            (Err(libc::ECANCELED), 0),
            "{backend:?}"
        );
        // Descriptors sent then wait unread; closing the receiver closes them.
        let (mut reader, writer) = pipe();
        let mut out = Msg::new(b"fd".to_vec()).with_fds(1);
        out.fds_mut().push(writer);
        io.sendmsg(0, x.as_raw_fd(), out, on_sent).unwrap();
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        assert_eq!(ctx.sent, [Ok(2)], "{backend:?}");
        ctx.msgs.clear(); // the sender's copy
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
        assert!(
            !writers_open(&mut reader),
            "{backend:?}: unread descriptors closed"
        );
    }
}

#[test]
fn room_for_one_descriptor_takes_two_alike_on_every_backend() {
    // `with_fds`: "one more may [fit], where the control buffer's alignment leaves room";
    // the simulator rounds as `CMSG_SPACE` rounds, so every backend must agree.
    let mut seen = Vec::new();
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (x, y) = env.unix_pair(true);
        let (_reader, writer) = pipe();
        let mut out = Msg::new(b"two".to_vec()).with_fds(2);
        out.fds_mut().push(writer.try_clone().unwrap());
        out.fds_mut().push(writer);
        io.sendmsg(0, x.as_raw_fd(), out, on_sent).unwrap();
        let room = Msg::new(Vec::with_capacity(8)).with_fds(1);
        let (n, msg) = receive(&mut io, &mut ctx, &y, room);
        assert_eq!(n, Ok(3), "{backend:?}");
        assert_eq!(
            msg.peer(),
            None,
            "{backend:?}: an unnamed Unix peer is no IP address"
        );
        seen.push((backend, msg.control_truncated(), msg.fds().len()));
        drop(msg);
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
    }
    let first = (seen[0].1, seen[0].2);
    assert!(seen.iter().all(|s| (s.1, s.2) == first), "{seen:?}");
    if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
        assert_eq!(
            first,
            (false, 2),
            "CMSG_SPACE(4) == CMSG_SPACE(8) on 64-bit Linux"
        );
    }
}

#[test]
fn a_cancel_while_the_pool_is_dry_loses_no_datagram() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(16, Some((2, 256))) else {
            continue;
        };
        let mut ctx = Ctx {
            hold: true,
            ..Ctx::default()
        };
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        for i in 0..5u8 {
            send_to(&mut io, &a, &[i], server_addr);
        }
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| {
            ctx.dgrams.len() == 2
        });
        settle(&mut io, &mut ctx);
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        ctx.hold = false;
        ctx.held.clear();
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.finals.len(), 1, "{backend:?}");
        let mut got: Vec<u8> = ctx
            .dgrams
            .iter()
            .map(|g| g.clone().unwrap().bytes[0])
            .collect();
        if let Ok(last) = &ctx.finals[0] {
            got.push(last.bytes[0]);
        } else {
            assert_eq!(ctx.finals[0], Err(libc::ECANCELED), "{backend:?}");
        }
        while got.len() < 5 {
            let room = Msg::new(Vec::with_capacity(4));
            let (n, msg) = receive(&mut io, &mut ctx, &server, room);
            assert_eq!(n, Ok(1), "{backend:?}");
            got.push(msg.bufs()[0][0]);
        }
        assert_eq!(got, [0, 1, 2, 3, 4], "{backend:?}: in order, none lost");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn a_deadline_over_a_stream_of_datagrams_loses_none() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(16, Some((16, 256))) else {
            continue;
        };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        for i in 0..10u8 {
            send_to(&mut io, &a, &[i], server_addr);
        }
        run_until(&mut io, &mut ctx, "10 sends", |ctx| ctx.sent.len() == 10);
        settle(&mut io, &mut ctx);
        let id = io
            .recv_from_multishot(0, server.as_raw_fd(), on_datagram)
            .unwrap();
        io.set_deadline(id, 1).unwrap();
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.finals.len(), 1, "{backend:?}");
        let mut got: Vec<u8> = ctx
            .dgrams
            .iter()
            .map(|g| g.clone().unwrap().bytes[0])
            .collect();
        match &ctx.finals[0] {
            Ok(last) => got.push(last.bytes[0]),
            Err(e) => assert_eq!(*e, libc::ETIMEDOUT, "{backend:?}"),
        }
        while got.len() < 10 {
            let room = Msg::new(Vec::with_capacity(4));
            let (n, msg) = receive(&mut io, &mut ctx, &server, room);
            assert_eq!(n, Ok(1), "{backend:?}");
            got.push(msg.bufs()[0][0]);
        }
        assert_eq!(
            got,
            (0..10).collect::<Vec<u8>>(),
            "{backend:?}: in order, none lost"
        );
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}
