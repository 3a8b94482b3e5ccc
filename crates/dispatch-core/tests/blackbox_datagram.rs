//! Black-box tests of datagrams, messages and polls, written from the public documentation
//! alone (README, docs/ARCHITECTURE.md, rustdoc): `Io::recv_from_multishot` and `Datagram`,
//! `sendmsg`/`recvmsg`/`send_to`/`recv_from` with `Msg`, `Io::poll`/`poll_multishot`, and the
//! simulator's datagram sockets and Unix pairs.
//!
//! Each promise is checked on every backend the docs say it holds on: io_uring (with the
//! kernel's multishot, without it, and without the provided-buffer ring), epoll, kqueue over
//! the kevent double, and the simulator. A backend this machine cannot run (io_uring blocked)
//! is skipped with a line saying so. Real sockets are on 127.0.0.1; every wait is a bounded
//! loop of `run_for_ns`, never a timing threshold.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use dispatch_loop::sim::{Faults, Sim, SimOptions, UnixKind};
use dispatch_loop::{
    BackendKind, Datagram, InitError, Io, Msg, OpId, Options, PollEvents, PoolBuf, PoolOptions,
    ScheduleErrorKind, Shot, Tag, DATAGRAM_HEADROOM, MSG_IOV_MAX,
};

/// The loops a test runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Uring,
    UringNoMultishot,
    UringNoRing,
    Epoll,
    KqueueFake,
    Sim,
}

const ALL: [Backend; 6] = [
    Backend::Uring,
    Backend::UringNoMultishot,
    Backend::UringNoRing,
    Backend::Epoll,
    Backend::KqueueFake,
    Backend::Sim,
];

/// The backends that run on real descriptors (pipes, eventfds, real sockets).
const REAL: [Backend; 5] = [
    Backend::Uring,
    Backend::UringNoMultishot,
    Backend::UringNoRing,
    Backend::Epoll,
    Backend::KqueueFake,
];

/// Turns of 1 ms a wait may take before the test fails; far above what any needs.
const ROUNDS_MAX: u32 = 5_000;

/// A backend and, for the simulator, its world.
struct Env {
    backend: Backend,
    sim: Option<Sim>,
}

impl Env {
    fn new(backend: Backend) -> Env {
        Env::with(backend, SimOptions::new(7))
    }

    fn with(backend: Backend, options: SimOptions) -> Env {
        let sim = (backend == Backend::Sim).then(|| Sim::new(&options).expect("a world"));
        Env { backend, sim }
    }

    fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("the simulator")
    }

    /// A loop of `ops_max` slots with a pool of `pool` (buffers, size); `None` (said on
    /// stderr) when the backend cannot run here.
    fn io<C>(&self, ops_max: u32, pool: Option<(u32, u32)>) -> Option<Io<C>> {
        let mut options = Options::new(ops_max);
        if let Some((buffers, size)) = pool {
            options.pool = PoolOptions::new(buffers, size);
        }
        let kind = match self.backend {
            Backend::Sim => return Some(Io::new_sim(&options, self.sim()).expect("a loop")),
            Backend::Uring => BackendKind::IoUring,
            Backend::UringNoMultishot => {
                options.uring.multishot = false;
                BackendKind::IoUring
            }
            Backend::UringNoRing => {
                options.uring.multishot = false;
                options.uring.pbuf_ring = false;
                BackendKind::IoUring
            }
            Backend::Epoll => BackendKind::Epoll,
            Backend::KqueueFake => BackendKind::KqueueFake,
        };
        options.backend = Some(kind);
        match Io::new(&options) {
            Ok(io) => Some(io),
            Err(InitError::Unavailable(why)) => {
                eprintln!("skipped on {:?}: io_uring unavailable here: {why}", self.backend);
                None
            }
            Err(error) => panic!("{:?}: {error}", self.backend),
        }
    }

    /// A UDP socket on 127.0.0.1, real or simulated.
    fn udp(&self) -> (OwnedFd, SocketAddr) {
        match &self.sim {
            Some(sim) => sim.udp_bind(addr("127.0.0.1:0")).expect("udp_bind"),
            None => {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let local = socket.local_addr().unwrap();
                (socket.into(), local)
            }
        }
    }

    /// A Unix socket pair, real or simulated.
    fn unix_pair(&self, datagram: bool) -> (OwnedFd, OwnedFd) {
        match (&self.sim, datagram) {
            (Some(sim), true) => sim.unix_pair(UnixKind::Datagram).unwrap(),
            (Some(sim), false) => sim.unix_pair(UnixKind::Stream).unwrap(),
            (None, true) => {
                let (a, b) = UnixDatagram::pair().unwrap();
                (a.into(), b.into())
            }
            (None, false) => {
                let (a, b) = UnixStream::pair().unwrap();
                (a.into(), b.into())
            }
        }
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn errno(error: &io::Error) -> i32 {
    error.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {error}"))
}

/// What a datagram receive handed over.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    bytes: Vec<u8>,
    peer: Option<SocketAddr>,
    truncated: bool,
    len: usize,
    room: usize,
}

/// What the callbacks saw.
#[derive(Default)]
struct Ctx {
    /// `recv_from_multishot`'s intermediate shots.
    dgrams: Vec<Result<Got, i32>>,
    /// Its final shots.
    finals: Vec<Result<Got, i32>>,
    /// Keep each datagram's pool buffer (to run the pool dry).
    hold: bool,
    held: Vec<PoolBuf>,
    sent: Vec<Result<usize, i32>>,
    msgs: Vec<(Result<usize, i32>, Msg)>,
    units: Vec<Result<(), i32>>,
    polls: Vec<Result<PollEvents, i32>>,
    shots: Vec<(Result<PollEvents, i32>, bool)>,
    /// A descriptor a multishot poll's callback drains (an eventfd).
    drain: Option<File>,
}

fn on_datagram(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, shot: Shot<Datagram>) {
    let got = shot.result.map_err(|e| errno(&e)).map(|d| {
        let got = Got {
            bytes: d.buf.to_vec(),
            peer: d.peer,
            truncated: d.truncated,
            len: d.len,
            room: d.buf.capacity() - DATAGRAM_HEADROOM as usize,
        };
        if ctx.hold {
            ctx.held.push(d.buf);
        }
        got
    });
    match shot.more {
        true => ctx.dgrams.push(got),
        false => ctx.finals.push(got),
    }
}

fn on_sent(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, (n, _): (io::Result<usize>, Msg)) {
    ctx.sent.push(n.map_err(|e| errno(&e)));
}

fn on_msg(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, (n, msg): (io::Result<usize>, Msg)) {
    ctx.msgs.push((n.map_err(|e| errno(&e)), msg));
}

fn on_unit(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, result: io::Result<()>) {
    ctx.units.push(result.map_err(|e| errno(&e)));
}

fn on_poll(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, events: io::Result<PollEvents>) {
    ctx.polls.push(events.map_err(|e| errno(&e)));
}

fn on_poll_shot(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, shot: Shot<PollEvents>) {
    if let (true, Some(file)) = (shot.more, &mut ctx.drain) {
        let mut count = [0u8; 8];
        let _ = file.read(&mut count); // non-blocking: nothing there is fine
    }
    ctx.shots.push((shot.result.map_err(|e| errno(&e)), shot.more));
}

/// Runs the loop until `done` holds, at most `ROUNDS_MAX` turns of 1 ms.
fn run_until<C>(io: &mut Io<C>, ctx: &mut C, what: &str, done: impl Fn(&C) -> bool) {
    for _ in 0..ROUNDS_MAX {
        if done(ctx) {
            return;
        }
        io.run_for_ns(ctx, 1_000_000).expect("run_for_ns");
    }
    panic!("{what}: still not done after {ROUNDS_MAX} turns");
}

/// A few more turns, for anything that should not happen to have its chance to.
fn settle<C>(io: &mut Io<C>, ctx: &mut C) {
    for _ in 0..20 {
        io.run_for_ns(ctx, 1_000_000).expect("run_for_ns");
    }
}

fn send_to(io: &mut Io<Ctx>, fd: &OwnedFd, bytes: &[u8], to: SocketAddr) {
    let msg = Msg::new(bytes.to_vec());
    io.send_to(9, fd.as_raw_fd(), msg, to, on_sent).expect("a free slot");
}

/// Closes `fds` through the loop; on the simulator, nothing may be left open.
fn close_all(env: &Env, io: &mut Io<Ctx>, ctx: &mut Ctx, fds: Vec<OwnedFd>) {
    let n = ctx.units.len() + fds.len();
    for fd in fds {
        io.close(8, fd, on_unit).expect("a free slot");
    }
    run_until(io, ctx, "closes", |ctx| ctx.units.len() == n);
    if let Some(sim) = &env.sim {
        assert_eq!(sim.open_descriptors(), 0, "nothing left open in the world");
    }
}

fn cancel(io: &mut Io<Ctx>, id: OpId) {
    io.cancel(7, id, on_unit).expect("a cancel slot");
}

// ---- recv_from_multishot -------------------------------------------------------------------

#[test]
fn multishot_hands_over_each_datagram_with_its_sender_then_one_final_on_cancel() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((8, 2048))) else { continue };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        let (b, b_addr) = env.udp();
        let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        for bytes in [&b"one"[..], b"", b"three"] {
            send_to(&mut io, &a, bytes, server_addr);
        }
        send_to(&mut io, &b, b"from b", server_addr);
        run_until(&mut io, &mut ctx, "4 datagrams", |ctx| ctx.dgrams.len() == 4);
        let got: Vec<Got> = ctx.dgrams.drain(..).map(Result::unwrap).collect();
        let from_a: Vec<&Got> = got.iter().filter(|g| g.bytes != b"from b").collect();
        let texts: Vec<&[u8]> = from_a.iter().map(|g| &g.bytes[..]).collect();
        assert_eq!(texts, [&b"one"[..], b"", b"three"], "{backend:?}: one sender's order");
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
        assert!(ctx.finals.is_empty(), "{backend:?}: an empty datagram is not an end");
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.finals, [Err(libc::ECANCELED)], "{backend:?}: exactly one final");
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
        assert_eq!(ctx.units.first(), Some(&Ok(())), "{backend:?}: the cancel's answer");
        close_all(&env, &mut io, &mut ctx, vec![server, a, b]);
    }
}

#[test]
fn a_datagram_longer_than_the_room_is_cut_and_reported_with_its_length() {
    assert_eq!(DATAGRAM_HEADROOM, 44, "the documented cost per buffer");
    for backend in ALL {
        let env = Env::new(backend);
        let size = DATAGRAM_HEADROOM + 8;
        let Some(mut io) = env.io::<Ctx>(8, Some((4, size))) else { continue };
        assert_eq!(io.pool_buffer_size(), size, "{backend:?}");
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        send_to(&mut io, &a, b"01234567", server_addr);
        send_to(&mut io, &a, b"ABCDEFGHIJKLMNOPQRST", server_addr);
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| ctx.dgrams.len() == 2);
        let fits = ctx.dgrams[0].clone().unwrap();
        assert_eq!((&fits.bytes[..], fits.truncated, fits.len), (&b"01234567"[..], false, 8));
        assert_eq!(fits.room, 8, "{backend:?}: capacity less 44 is the most a datagram brings");
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let error = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap_err();
        assert!(matches!(error.kind, ScheduleErrorKind::NoPool), "{backend:?}");
        drop(io);
        // 44 bytes: "44 bytes or fewer" is refused, and 45 is the smallest that works.
        let mut io = env.io::<Ctx>(8, Some((4, 44))).unwrap();
        let error = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap_err();
        match error.kind {
            ScheduleErrorKind::PoolBuffersTooSmall { size_min } => assert_eq!(size_min, 45),
            other => panic!("{backend:?}: {other:?}"),
        }
        drop(io);
        let mut io = env.io::<Ctx>(8, Some((4, 45))).unwrap();
        let mut ctx = Ctx::default();
        let (a, _) = env.udp();
        let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        send_to(&mut io, &a, b"x", server_addr);
        send_to(&mut io, &a, b"yz", server_addr);
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| ctx.dgrams.len() == 2);
        let got: Vec<_> = ctx.dgrams.iter().map(|g| g.clone().unwrap()).collect();
        assert_eq!((&got[0].bytes[..], got[0].truncated), (&b"x"[..], false), "{backend:?}");
        assert_eq!((&got[1].bytes[..], got[1].truncated), (&b"y"[..], true), "{backend:?}");
        cancel(&mut io, id);
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn a_deadline_ends_an_idle_multishot_with_etimedout() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else { continue };
        let mut ctx = Ctx::default();
        let (server, _) = env.udp();
        let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        io.set_deadline(id, 2_000_000).unwrap();
        run_until(&mut io, &mut ctx, "the deadline", |ctx| !ctx.finals.is_empty());
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
        let Some(mut io) = env.io::<Ctx>(16, Some((2, 256))) else { continue };
        let mut ctx = Ctx { hold: true, ..Ctx::default() };
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        for i in 0..5u8 {
            send_to(&mut io, &a, &[b'd', b'0' + i], server_addr);
        }
        run_until(&mut io, &mut ctx, "2 datagrams", |ctx| ctx.dgrams.len() == 2);
        run_until(&mut io, &mut ctx, "5 sends", |ctx| ctx.sent.len() == 5);
        settle(&mut io, &mut ctx);
        assert_eq!(ctx.dgrams.len(), 2, "{backend:?}: two buffers, two datagrams");
        assert!(ctx.finals.is_empty(), "{backend:?}: a dry pool is a wait, not a failure");
        assert!(io.stats().pool_waits >= 1, "{backend:?}: counted in pool_waits");
        ctx.hold = false;
        ctx.held.clear(); // the buffers go back to the pool
        run_until(&mut io, &mut ctx, "5 datagrams", |ctx| ctx.dgrams.len() == 5);
        let texts: Vec<Vec<u8>> = ctx.dgrams.iter().map(|g| g.clone().unwrap().bytes).collect();
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
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else { continue };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, _) = env.udp();
        io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
        for _ in 0..3 {
            send_to(&mut io, &a, b"queued", server_addr);
        }
        run_until(&mut io, &mut ctx, "one datagram", |ctx| !ctx.dgrams.is_empty());
        drop(io); // the multishot is in flight, maybe with results undelivered
        assert!(ctx.finals.is_empty(), "{backend:?}: no callback runs in the drop");
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
        let Some(mut io) = env.io::<Ctx>(8, Some((4, 256))) else { continue };
        let mut ctx = Ctx::default();
        let (reader, _writer) = io::pipe().unwrap();
        io.recv_from_multishot(0, reader.as_raw_fd(), on_datagram).unwrap();
        run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        // A pipe is not a socket; the simulator knows no real descriptor (`EBADF`).
        let want = if backend == Backend::Sim { libc::EBADF } else { libc::ENOTSOCK };
        assert_eq!(ctx.finals, [Err(want)], "{backend:?}");
        assert!(ctx.dgrams.is_empty(), "{backend:?}");
        // A Unix datagram socket: no IP sender (real), or `EINVAL` (the simulator's pairs).
        let (x, y) = env.unix_pair(true);
        ctx.finals.clear();
        let id = io.recv_from_multishot(0, y.as_raw_fd(), on_datagram).unwrap();
        let msg = Msg::new(b"unix".to_vec());
        io.sendmsg(9, x.as_raw_fd(), msg, on_sent).unwrap();
        if backend == Backend::Sim {
            run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
            assert_eq!(ctx.finals, [Err(libc::EINVAL)]);
        } else {
            run_until(&mut io, &mut ctx, "a datagram", |ctx| !ctx.dgrams.is_empty());
            let got = ctx.dgrams[0].clone().unwrap();
            assert_eq!((&got.bytes[..], got.peer), (&b"unix"[..], None), "{backend:?}");
            cancel(&mut io, id);
            run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
        }
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
    }
}

// ---- sendmsg, recvmsg, send_to, recv_from ----------------------------------------------------

fn recv_from(io: &mut Io<Ctx>, fd: &OwnedFd, msg: Msg) {
    io.recv_from(1, fd.as_raw_fd(), msg, on_msg).expect("a free slot");
}

/// Receives one message into `msg` and returns the count and the message.
fn receive(io: &mut Io<Ctx>, ctx: &mut Ctx, fd: &OwnedFd, msg: Msg) -> (Result<usize, i32>, Msg) {
    recv_from(io, fd, msg);
    run_until(io, ctx, "a message", |ctx| !ctx.msgs.is_empty());
    ctx.msgs.remove(0)
}

#[test]
fn a_vectored_message_is_one_datagram_scattered_over_the_buffers() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        let out = Msg::vectored(vec![b"ab".to_vec(), b"cde".to_vec(), b"f".to_vec()]);
        io.send_to(9, a.as_raw_fd(), out, server_addr, on_sent).unwrap();
        let room = Msg::vectored(vec![Vec::with_capacity(4), Vec::with_capacity(8)]);
        let (n, msg) = receive(&mut io, &mut ctx, &server, room);
        assert_eq!(n, Ok(6), "{backend:?}");
        assert_eq!(msg.bufs(), [b"abcd".to_vec(), b"ef".to_vec()], "{backend:?}");
        assert_eq!(msg.peer(), Some(a_addr), "{backend:?}");
        assert!(!msg.truncated(), "{backend:?}");
        // The same message again, emptied: a datagram longer than both buffers.
        let mut msg = msg;
        msg.bufs_mut().iter_mut().for_each(Vec::clear);
        send_to(&mut io, &a, b"0123456789ABCDEF", server_addr);
        let (n, msg) = receive(&mut io, &mut ctx, &server, msg);
        assert_eq!(n, Ok(12), "{backend:?}: the count covers what was kept");
        assert_eq!(msg.bufs(), [b"0123".to_vec(), b"456789AB".to_vec()], "{backend:?}");
        assert!(msg.truncated(), "{backend:?}: the rest is lost, and said to be");
        // Past MSG_IOV_MAX buffers, a send sends the first MSG_IOV_MAX.
        let many = Msg::vectored((0..MSG_IOV_MAX + 2).map(|i| vec![b'a' + i as u8]).collect());
        io.send_to(9, a.as_raw_fd(), many, server_addr, on_sent).unwrap();
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        let (server, server_addr) = env.udp();
        let (a, a_addr) = env.udp();
        send_to(&mut io, &a, b"", server_addr);
        send_to(&mut io, &a, b"abc", server_addr);
        send_to(&mut io, &a, b"wxyz", server_addr);
        // No spare capacity is allowed on a message.
        let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::new()));
        assert_eq!((n, msg.peer(), msg.truncated()), (Ok(0), Some(a_addr), false), "{backend:?}");
        let (n, msg) = receive(&mut io, &mut ctx, &server, msg);
        assert_eq!((n, msg.truncated()), (Ok(0), true), "{backend:?}: 3 bytes into no room");
        // Exactly the room: not truncated.
        let (n, msg) = receive(&mut io, &mut ctx, &server, Msg::new(Vec::with_capacity(4)));
        assert_eq!((n, &msg.bufs()[0][..]), (Ok(4), &b"wxyz"[..]), "{backend:?}");
        assert!(!msg.truncated(), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

/// A pipe, its reader non-blocking: `read` says `EAGAIN` while a writer is open, 0 after.
fn pipe() -> (File, OwnedFd) {
    let (reader, writer) = io::pipe().unwrap();
    let reader = OwnedFd::from(reader);
    rustix::fs::fcntl_setfl(&reader, rustix::fs::OFlags::NONBLOCK).unwrap();
    (File::from(reader), writer.into())
}

fn writers_open(reader: &mut File) -> bool {
    match reader.read(&mut [0; 16]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn descriptors_pass_over_unix_sockets_and_work_at_the_other_end() {
    for backend in ALL {
        for datagram in [true, false] {
            let env = Env::new(backend);
            let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "{what}: close-on-exec");
            run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.msgs.is_empty());
            let (sent, sent_msg) = ctx.msgs.remove(0);
            assert_eq!(sent, Ok(2), "{what}");
            assert_eq!(sent_msg.fds().len(), 1, "{what}: the sender keeps its own, open");
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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
        assert!(!writers_open(&mut reader), "{backend:?}: the 4 that arrived were closed");
        // A receive closes what the message held: a second descriptor, then a plain datagram.
        let (_, writer) = pipe_into(&mut reader);
        let mut out = Msg::new(b"one".to_vec()).with_fds(1);
        out.fds_mut().push(writer);
        io.sendmsg(0, x.as_raw_fd(), out, on_sent).unwrap();
        let room = Msg::new(Vec::with_capacity(8)).with_fds(2);
        let (_, mut msg) = receive(&mut io, &mut ctx, &y, room);
        assert_eq!(msg.fds().len(), 1, "{backend:?}");
        io.sendmsg(0, x.as_raw_fd(), Msg::new(b"plain".to_vec()), on_sent).unwrap();
        msg.bufs_mut()[0].clear();
        let (n, msg) = receive(&mut io, &mut ctx, &y, msg);
        assert_eq!((n, msg.fds().len()), (Ok(5), 0), "{backend:?}");
        assert!(!writers_open(&mut reader), "{backend:?}: the held one was closed");
        run_until(&mut io, &mut ctx, "the sends", |ctx| ctx.sent.len() == 3);
        close_all(&env, &mut io, &mut ctx, vec![x, y]);
    }
}

/// A new pipe whose reader replaces `reader`.
fn pipe_into(reader: &mut File) -> ((), OwnedFd) {
    let (new_reader, writer) = pipe();
    *reader = new_reader;
    ((), writer)
}

#[test]
fn set_peer_path_checks_the_path() {
    let mut msg = Msg::new(vec![]);
    msg.set_peer(Some(addr("127.0.0.1:9")));
    let errno_of = |msg: &mut Msg, path: &str| msg.set_peer_path(path.as_ref()).map_err(|e| errno(&e));
    assert_eq!(errno_of(&mut msg, ""), Err(libc::EINVAL));
    assert_eq!(errno_of(&mut msg, "a\0b"), Err(libc::EINVAL));
    assert_eq!(errno_of(&mut msg, &"x".repeat(200)), Err(libc::ENAMETOOLONG));
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        let (a_path, b_path) = (dir.join(format!("{backend:?}-a")), dir.join(format!("{backend:?}-b")));
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
        assert_eq!((n, &msg.bufs()[0][..]), (Ok(4), &b"back"[..]), "{backend:?}");
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        // An address of the wrong family.
        let (a, _) = env.udp();
        send_to(&mut io, &a, b"v6", addr("[::1]:9"));
        run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
        let wrong = ctx.sent.remove(0);
        assert!(matches!(wrong, Err(libc::EAFNOSUPPORT | libc::EINVAL)), "{backend:?}: {wrong:?}");
        // A connected UDP socket whose peer's port answers with ICMP port unreachable.
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(gone.local_addr().unwrap()).unwrap();
        drop(gone);
        let mut refused = false;
        for _ in 0..20 {
            io.sendmsg(0, connected.as_raw_fd(), Msg::new(b"?".to_vec()), on_sent).unwrap();
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

// ---- poll and poll_multishot ---------------------------------------------------------------

fn poll(io: &mut Io<Ctx>, fd: RawFd, interest: PollEvents) -> OpId {
    io.poll(2, fd, interest, on_poll).expect("a free slot")
}

#[test]
fn a_poll_waits_for_a_pipe_and_reports_a_hang_up_whatever_the_interest() {
    for backend in REAL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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
        assert!(events.is_hangup() && !events.is_readable(), "{backend:?}: {events:?}");
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let efd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap();
        let fd = efd.as_raw_fd();
        let mut writer = File::from(efd.try_clone().unwrap());
        let mut ctx = Ctx { drain: Some(File::from(efd)), ..Ctx::default() };
        let id = io.poll_multishot(3, fd, PollEvents::READABLE, on_poll_shot).unwrap();
        settle(&mut io, &mut ctx);
        assert!(ctx.shots.is_empty(), "{backend:?}: a zero count is not readable");
        for arrival in 1..=3 {
            writer.write_all(&1u64.to_ne_bytes()).unwrap();
            run_until(&mut io, &mut ctx, "a shot", |ctx| ctx.shots.len() == arrival);
            settle(&mut io, &mut ctx);
            assert_eq!(ctx.shots.len(), arrival, "{backend:?}: one per arrival");
            assert_eq!(ctx.shots[arrival - 1], (Ok(PollEvents::READABLE), true), "{backend:?}");
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
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK).unwrap();
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let value = Timespec { tv_sec: 0, tv_nsec: 1_000_000 };
        let spec = Itimerspec { it_interval: zero, it_value: value };
        poll(&mut io, timer.as_raw_fd(), PollEvents::READABLE);
        timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec).unwrap();
        run_until(&mut io, &mut ctx, "the timer", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls[0], Ok(PollEvents::READABLE), "{backend:?}");
        let mut count = [0; 8];
        assert_eq!(File::from(timer).read(&mut count).unwrap(), 8, "{backend:?}: not consumed");
    }
}

#[test]
fn a_socket_with_room_is_writable_and_not_readable_until_a_datagram_arrives() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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

#[test]
fn a_poll_and_a_receive_on_one_socket_compose_in_scheduling_order() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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
        run_until(&mut io, &mut ctx, "the last poll", |ctx| ctx.polls.len() == 3);
        assert!(ctx.polls.iter().all(|p| *p == Ok(PollEvents::READABLE)), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn on_epoll_kqueue_and_the_simulator_a_waiting_poll_and_receive_both_complete() {
    for backend in [Backend::Epoll, Backend::KqueueFake, Backend::Sim] {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
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
        assert!(ctx.polls.is_empty() && ctx.msgs.is_empty(), "{backend:?}: both wait");
        send_to(&mut io, &a, b"one", server_addr);
        run_until(&mut io, &mut ctx, "both", |ctx| !ctx.polls.is_empty() && !ctx.msgs.is_empty());
        assert_eq!(ctx.polls[0], Ok(PollEvents::READABLE), "{backend:?}");
        assert_eq!(ctx.msgs[0].0, Ok(3), "{backend:?}");
        close_all(&env, &mut io, &mut ctx, vec![server, a]);
    }
}

#[test]
fn polls_answer_ebadf_cancel_and_deadlines_on_every_backend() {
    for backend in ALL {
        let env = Env::new(backend);
        let Some(mut io) = env.io::<Ctx>(8, None) else { continue };
        let mut ctx = Ctx::default();
        poll(&mut io, -1, PollEvents::READABLE);
        run_until(&mut io, &mut ctx, "EBADF", |ctx| !ctx.polls.is_empty());
        assert_eq!(ctx.polls.remove(0), Err(libc::EBADF), "{backend:?}: a negative number");
        if backend == Backend::Sim {
            let (reader, _writer) = pipe();
            poll(&mut io, reader.as_raw_fd(), PollEvents::READABLE);
            run_until(&mut io, &mut ctx, "EBADF", |ctx| !ctx.polls.is_empty());
            assert_eq!(ctx.polls.remove(0), Err(libc::EBADF), "a real descriptor on the sim");
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

// ---- the simulator's datagrams and Unix pairs ------------------------------------------------

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
    let id = io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).unwrap();
    for i in 0..n {
        send_to(&mut io, &a, &[i], server_addr);
    }
    for _ in 0..1000 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.sent.len(), n as usize, "a send never waits, never fails");
    assert!(ctx.sent.iter().all(|s| *s == Ok(1)), "loss is silent");
    cancel(&mut io, id);
    run_until(&mut io, &mut ctx, "the final", |ctx| !ctx.finals.is_empty());
    let got = ctx.dgrams.iter().map(|g| g.clone().unwrap().bytes[0]).collect();
    close_all(&env, &mut io, &mut ctx, vec![server, a]);
    (got, env.sim().stats(), env.sim().trace_hash())
}

#[test]
fn sim_datagrams_are_lost_doubled_and_reordered_only_as_the_faults_say() {
    let all: Vec<u8> = (0..40).collect();
    for seed in 0..4 {
        let (got, stats, _) = sim_datagrams(Faults::NONE, seed, 40);
        assert_eq!(got, all, "seed {seed}: no faults, every datagram once, in order");
        assert_eq!(stats.faults.datagram_loss + stats.faults.datagram_reorder, 0);
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
        assert!(stats.faults.datagram_reorder > 0, "seed {seed}: the fault fired");
        let (again, _, hash_again) = sim_datagrams(reorder, seed, 40);
        assert_eq!((got, hash), (again, hash_again), "seed {seed}: one seed, one trace");
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
        io.sendmsg(0, x.as_raw_fd(), Msg::new(bytes.to_vec()), on_sent).unwrap();
    }
    let (n, msg) = receive(&mut io, &mut ctx, &y, Msg::new(Vec::with_capacity(16)));
    assert_eq!((n, &msg.bufs()[0][..], msg.truncated()), (Ok(5), &b"first"[..], false));
    let (n, msg) = receive(&mut io, &mut ctx, &y, Msg::new(Vec::with_capacity(6)));
    assert_eq!((n, &msg.bufs()[0][..], msg.truncated()), (Ok(6), &b"second"[..], true));
    assert_eq!(msg.peer(), None, "a socket pair's peer is unnamed");
    ctx.sent.clear();
    // An IP address: EINVAL on a datagram pair; a path: ENOENT.
    io.send_to(0, x.as_raw_fd(), Msg::new(b"ip".to_vec()), addr("127.0.0.1:9"), on_sent).unwrap();
    let mut to_path = Msg::new(b"path".to_vec());
    to_path.set_peer_path("/nowhere.sock".as_ref()).unwrap();
    io.sendmsg(0, x.as_raw_fd(), to_path, on_sent).unwrap();
    run_until(&mut io, &mut ctx, "2 sends", |ctx| ctx.sent.len() == 2);
    assert_eq!(ctx.sent, [Err(libc::EINVAL), Err(libc::ENOENT)]);
    // A stream pair: an IP address is EISCONN.
    let (s, t) = env.unix_pair(false);
    ctx.sent.clear();
    io.send_to(0, s.as_raw_fd(), Msg::new(b"ip".to_vec()), addr("127.0.0.1:9"), on_sent).unwrap();
    run_until(&mut io, &mut ctx, "the send", |ctx| !ctx.sent.is_empty());
    assert_eq!(ctx.sent, [Err(libc::EISCONN)]);
    // The datagram peer closed: one send refused, then ENOTCONN.
    close_all_but_check(&mut io, &mut ctx, y);
    ctx.sent.clear();
    for _ in 0..2 {
        io.sendmsg(0, x.as_raw_fd(), Msg::new(b"gone".to_vec()), on_sent).unwrap();
        let n = ctx.sent.len() + 1;
        run_until(&mut io, &mut ctx, "the send", |ctx| ctx.sent.len() == n);
    }
    assert_eq!(ctx.sent, [Err(libc::ECONNREFUSED), Err(libc::ENOTCONN)]);
    close_all(&env, &mut io, &mut ctx, vec![x, s, t]);
}

/// Closes one descriptor through the loop.
fn close_all_but_check(io: &mut Io<Ctx>, ctx: &mut Ctx, fd: OwnedFd) {
    let n = ctx.units.len() + 1;
    io.close(8, fd, on_unit).unwrap();
    run_until(io, ctx, "the close", |ctx| ctx.units.len() == n);
}
