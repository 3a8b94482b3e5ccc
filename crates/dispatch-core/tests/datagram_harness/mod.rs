//! The harness both datagram black-box files share: backends, sockets, a context that
//! records every callback, and bounded waits.
#![allow(dead_code, unused_imports)]

pub use std::fs::File;
pub use std::io::{self, Read, Write};
pub use std::net::{SocketAddr, UdpSocket};
pub use std::os::fd::{AsRawFd, OwnedFd, RawFd};
pub use std::os::unix::net::{UnixDatagram, UnixStream};

pub use dispatch_loop::sim::{Faults, Sim, SimOptions, UnixKind};
pub use dispatch_loop::{
    BackendKind, Datagram, InitError, Io, Msg, OpId, Options, PollEvents, PoolBuf, PoolOptions,
    ScheduleErrorKind, Shot, Tag, DATAGRAM_HEADROOM, MSG_IOV_MAX,
};

/// The loops a test runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Uring,
    UringNoMultishot,
    UringNoRing,
    Epoll,
    KqueueFake,
    Sim,
}

pub const ALL: [Backend; 6] = [
    Backend::Uring,
    Backend::UringNoMultishot,
    Backend::UringNoRing,
    Backend::Epoll,
    Backend::KqueueFake,
    Backend::Sim,
];

/// The backends that run on real descriptors (pipes, eventfds, real sockets).
pub const REAL: [Backend; 5] = [
    Backend::Uring,
    Backend::UringNoMultishot,
    Backend::UringNoRing,
    Backend::Epoll,
    Backend::KqueueFake,
];

/// Turns of 1 ms a wait may take before the test fails; far above what any needs.
pub const ROUNDS_MAX: u32 = 5_000;

/// A backend and, for the simulator, its world.
pub struct Env {
    pub backend: Backend,
    pub sim: Option<Sim>,
}

impl Env {
    pub fn new(backend: Backend) -> Env {
        Env::with(backend, SimOptions::new(7))
    }

    pub fn with(backend: Backend, options: SimOptions) -> Env {
        let sim = (backend == Backend::Sim).then(|| Sim::new(&options).expect("a world"));
        Env { backend, sim }
    }

    pub fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("the simulator")
    }

    /// A loop of `ops_max` slots with a pool of `pool` (buffers, size); `None` (said on
    /// stderr) when the backend cannot run here.
    pub fn io<C>(&self, ops_max: u32, pool: Option<(u32, u32)>) -> Option<Io<C>> {
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
                eprintln!(
                    "skipped: {:?}: io_uring unavailable here: {why}",
                    self.backend
                );
                None
            }
            Err(error) => panic!("{:?}: {error}", self.backend),
        }
    }

    /// A UDP socket on 127.0.0.1, real or simulated.
    pub fn udp(&self) -> (OwnedFd, SocketAddr) {
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
    pub fn unix_pair(&self, datagram: bool) -> (OwnedFd, OwnedFd) {
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

pub fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub fn errno(error: &io::Error) -> i32 {
    error
        .raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {error}"))
}

/// What a datagram receive handed over.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub bytes: Vec<u8>,
    pub peer: Option<SocketAddr>,
    pub truncated: bool,
    pub len: usize,
    pub room: usize,
}

/// What the callbacks saw.
#[derive(Default)]
pub struct Ctx {
    /// `recv_from_multishot`'s intermediate shots.
    pub dgrams: Vec<Result<Got, i32>>,
    /// Its final shots.
    pub finals: Vec<Result<Got, i32>>,
    /// Keep each datagram's pool buffer (to run the pool dry).
    pub hold: bool,
    pub held: Vec<PoolBuf>,
    pub sent: Vec<Result<usize, i32>>,
    pub msgs: Vec<(Result<usize, i32>, Msg)>,
    pub units: Vec<Result<(), i32>>,
    pub polls: Vec<Result<PollEvents, i32>>,
    pub shots: Vec<(Result<PollEvents, i32>, bool)>,
    /// A descriptor a multishot poll's callback drains (an eventfd).
    pub drain: Option<File>,
    /// The operation a callback cancels.
    pub id: Option<OpId>,
}

pub fn on_datagram(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, shot: Shot<Datagram>) {
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

pub fn on_sent(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, (n, _): (io::Result<usize>, Msg)) {
    ctx.sent.push(n.map_err(|e| errno(&e)));
}

pub fn on_msg(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, (n, msg): (io::Result<usize>, Msg)) {
    ctx.msgs.push((n.map_err(|e| errno(&e)), msg));
}

pub fn on_unit(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, result: io::Result<()>) {
    ctx.units.push(result.map_err(|e| errno(&e)));
}

pub fn on_poll(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, events: io::Result<PollEvents>) {
    ctx.polls.push(events.map_err(|e| errno(&e)));
}

pub fn on_poll_shot(ctx: &mut Ctx, _: &mut Io<Ctx>, _: Tag, shot: Shot<PollEvents>) {
    if let (true, Some(file)) = (shot.more, &mut ctx.drain) {
        let mut count = [0u8; 8];
        let _ = file.read(&mut count); // non-blocking: nothing there is fine
    }
    ctx.shots
        .push((shot.result.map_err(|e| errno(&e)), shot.more));
}

/// Runs the loop until `done` holds, at most `ROUNDS_MAX` turns of 1 ms.
pub fn run_until<C>(io: &mut Io<C>, ctx: &mut C, what: &str, done: impl Fn(&C) -> bool) {
    for _ in 0..ROUNDS_MAX {
        if done(ctx) {
            return;
        }
        io.run_for_ns(ctx, 1_000_000).expect("run_for_ns");
    }
    panic!("{what}: still not done after {ROUNDS_MAX} turns");
}

/// A few more turns, for anything that should not happen to have its chance to.
pub fn settle<C>(io: &mut Io<C>, ctx: &mut C) {
    for _ in 0..20 {
        io.run_for_ns(ctx, 1_000_000).expect("run_for_ns");
    }
}

pub fn send_to(io: &mut Io<Ctx>, fd: &OwnedFd, bytes: &[u8], to: SocketAddr) {
    let msg = Msg::new(bytes.to_vec());
    io.send_to(9, fd.as_raw_fd(), msg, to, on_sent)
        .expect("a free slot");
}

/// Closes `fds` through the loop; on the simulator, nothing may be left open.
pub fn close_all(env: &Env, io: &mut Io<Ctx>, ctx: &mut Ctx, fds: Vec<OwnedFd>) {
    let n = ctx.units.len() + fds.len();
    for fd in fds {
        io.close(8, fd, on_unit).expect("a free slot");
    }
    run_until(io, ctx, "closes", |ctx| ctx.units.len() == n);
    if let Some(sim) = &env.sim {
        assert_eq!(sim.open_descriptors(), 0, "nothing left open in the world");
    }
}

pub fn cancel(io: &mut Io<Ctx>, id: OpId) {
    io.cancel(7, id, on_unit).expect("a cancel slot");
}

pub fn recv_from(io: &mut Io<Ctx>, fd: &OwnedFd, msg: Msg) {
    io.recv_from(1, fd.as_raw_fd(), msg, on_msg)
        .expect("a free slot");
}

/// Receives one message into `msg` and returns the count and the message.
pub fn receive(
    io: &mut Io<Ctx>,
    ctx: &mut Ctx,
    fd: &OwnedFd,
    msg: Msg,
) -> (Result<usize, i32>, Msg) {
    recv_from(io, fd, msg);
    run_until(io, ctx, "a message", |ctx| !ctx.msgs.is_empty());
    ctx.msgs.remove(0)
}

/// A pipe, its reader non-blocking: `read` says `EAGAIN` while a writer is open, 0 after.
pub fn pipe() -> (File, OwnedFd) {
    let (reader, writer) = io::pipe().unwrap();
    let reader = OwnedFd::from(reader);
    rustix::fs::fcntl_setfl(&reader, rustix::fs::OFlags::NONBLOCK).unwrap();
    (File::from(reader), writer.into())
}

pub fn writers_open(reader: &mut File) -> bool {
    match reader.read(&mut [0; 16]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => panic!("{e}"),
    }
}

/// A new pipe whose reader replaces `reader`.
pub fn pipe_into(reader: &mut File) -> ((), OwnedFd) {
    let (new_reader, writer) = pipe();
    *reader = new_reader;
    ((), writer)
}

pub fn poll(io: &mut Io<Ctx>, fd: RawFd, interest: PollEvents) -> OpId {
    io.poll(2, fd, interest, on_poll).expect("a free slot")
}

/// Closes one descriptor through the loop.
pub fn close_all_but_check(io: &mut Io<Ctx>, ctx: &mut Ctx, fd: OwnedFd) {
    let n = ctx.units.len() + 1;
    io.close(8, fd, on_unit).unwrap();
    run_until(io, ctx, "the close", |ctx| ctx.units.len() == n);
}
