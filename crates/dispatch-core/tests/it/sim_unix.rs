//! The simulator's datagram reordering fault, its Unix socket pairs (stream and datagram) and
//! descriptor passing over them (`SCM_RIGHTS`), through the public API only: what each does,
//! its error cases, and that nothing passed leaks whichever way a message ends.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use dispatch_loop::sim::{Sim, SimOptions, UnixKind};
use dispatch_loop::{BufResult, Io, Msg, Options, Tag};

use crate::check;

/// What the receiver of numbered datagrams saw.
struct Numbers {
    fd: i32,
    got: Vec<u16>,
}

fn on_number(
    c: &mut Numbers,
    io: &mut Io<Numbers>,
    _: Tag,
    (n, mut msg): (io::Result<usize>, Msg),
) {
    assert_eq!(n.unwrap(), 2);
    let buf = &mut msg.bufs_mut()[0];
    c.got.push(u16::from_be_bytes([buf[0], buf[1]]));
    buf.clear();
    io.recv_from(0, c.fd, msg, on_number).unwrap();
}

/// 100 numbered datagrams from one socket to another, with only the reorder fault (at
/// `reorder_ppm`): the numbers in the order they arrived.
fn numbered_run(seed: u64, reorder_ppm: u32) -> Vec<u16> {
    let mut options = SimOptions::new(seed);
    options.faults.datagram_reorder = reorder_ppm;
    let sim = Sim::new(&options).unwrap();
    let mut io: Io<Numbers> = Io::new_sim(&Options::new(128), &sim).unwrap();
    let (a, _) = sim.udp_bind("10.0.0.1:0".parse().unwrap()).unwrap();
    let (b, b_addr) = sim.udp_bind("10.0.0.2:0".parse().unwrap()).unwrap();
    let mut numbers = Numbers {
        fd: b.as_raw_fd(),
        got: Vec::new(),
    };
    io.recv_from(0, b.as_raw_fd(), Msg::new(Vec::with_capacity(2)), on_number)
        .unwrap();
    for number in 0..100_u16 {
        let msg = Msg::new(number.to_be_bytes().to_vec());
        let sent = |_: &mut Numbers, _: &mut Io<Numbers>, _, (n, _): (io::Result<usize>, Msg)| {
            assert_eq!(n.unwrap(), 2);
        };
        io.send_to(1, a.as_raw_fd(), msg, b_addr, sent).unwrap();
        // Sends spread over time, so that arrival order is not just one batch's.
        io.run_for_ns(&mut numbers, 5_000).unwrap();
    }
    io.run_for_ns(&mut numbers, 100_000_000).unwrap();
    if reorder_ppm == 0 {
        assert_eq!(sim.stats().faults.datagram_reorder, 0, "the fault is off");
    }
    assert_eq!(numbers.got.len(), 100, "no loss without the loss fault");
    numbers.got
}

#[test]
fn datagrams_keep_their_order_unless_the_reorder_fault_is_on() {
    let sorted: Vec<u16> = (0..100).collect();
    for seed in 0..8 {
        assert_eq!(
            numbered_run(seed, 0),
            sorted,
            "seed {seed}: reorder off keeps order"
        );
    }
    let reordered: Vec<u64> = (0..8)
        .filter(|&seed| numbered_run(seed, 200_000) != sorted)
        .collect();
    eprintln!("seeds whose datagrams were reordered: {reordered:?}");
    assert!(
        !reordered.is_empty(),
        "some seed reorders with the fault on"
    );
    for &seed in &reordered {
        assert_eq!(
            numbered_run(seed, 200_000),
            numbered_run(seed, 200_000),
            "one seed, one order"
        );
    }
}

/// What one operation ended with: its count or errno, and the message or buffer it handed
/// back.
pub struct Ended {
    pub result: Result<usize, i32>,
    pub msg: Option<Msg>,
    pub buf: Vec<u8>,
}

/// Every operation's end, by tag.
#[derive(Default)]
pub struct Log {
    seen: Vec<(Tag, Ended)>,
}

impl Log {
    /// The end of the operation tagged `tag` (which must have ended).
    pub fn take(&mut self, tag: Tag) -> Ended {
        let at = self.seen.iter().position(|(t, _)| *t == tag);
        let at = at.unwrap_or_else(|| panic!("operation {tag} has not ended"));
        self.seen.remove(at).1
    }

    pub fn push(&mut self, tag: Tag, result: Result<usize, i32>) {
        let ended = Ended {
            result,
            msg: None,
            buf: Vec::new(),
        };
        self.seen.push((tag, ended));
    }

    pub fn has(&self, tag: Tag) -> bool {
        self.seen.iter().any(|(t, _)| *t == tag)
    }
}

fn errno<T>(result: io::Result<T>) -> Result<T, i32> {
    result.map_err(|e| e.raw_os_error().expect("an OS error"))
}

pub fn on_msg(log: &mut Log, _: &mut Io<Log>, tag: Tag, (n, msg): (io::Result<usize>, Msg)) {
    let ended = Ended {
        result: errno(n),
        msg: Some(msg),
        buf: Vec::new(),
    };
    log.seen.push((tag, ended));
}

pub fn on_buf(log: &mut Log, _: &mut Io<Log>, tag: Tag, (n, buf): BufResult) {
    let ended = Ended {
        result: errno(n),
        msg: None,
        buf,
    };
    log.seen.push((tag, ended));
}

pub fn on_unit(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: io::Result<()>) {
    let ended = Ended {
        result: errno(result).map(|()| 0),
        msg: None,
        buf: Vec::new(),
    };
    log.seen.push((tag, ended));
}

/// Where a scenario runs: the kernel (the suite's backend) or a simulated world.
pub enum Side {
    Real,
    Sim(Sim),
}

impl Side {
    /// A loop on this side (`None`: the suite's backend cannot run here, said why).
    pub fn io(&self) -> Option<Io<Log>> {
        match self {
            Side::Real => check::io(&Options::new(16)),
            Side::Sim(sim) => Some(Io::new_sim(&Options::new(16), sim).unwrap()),
        }
    }

    pub fn pair(&self, kind: UnixKind) -> (OwnedFd, OwnedFd) {
        match (self, kind) {
            (Side::Real, UnixKind::Stream) => {
                let (a, b) = UnixStream::pair().unwrap();
                (a.into(), b.into())
            }
            (Side::Real, UnixKind::Datagram) => {
                let (a, b) = UnixDatagram::pair().unwrap();
                (a.into(), b.into())
            }
            (Side::Sim(sim), kind) => sim.unix_pair(kind).unwrap(),
        }
    }
}

/// Runs until every operation scheduled has ended, then a further 10 ms (on the simulator,
/// of virtual time), so that bytes sent have arrived.
pub fn settle(io: &mut Io<Log>, log: &mut Log) {
    io.run_until_idle(log).unwrap();
    io.run_for_ns(log, 10_000_000).unwrap();
}

pub fn send(io: &mut Io<Log>, log: &mut Log, fd: RawFd, msg: Msg) -> Result<usize, i32> {
    io.sendmsg(90, fd, msg, on_msg).unwrap();
    settle(io, log);
    log.take(90).result
}

/// A receive of up to `cap` bytes (room for `fds_max` descriptors), which waits at most
/// 50 ms: its result (`ETIMEDOUT` if nothing came) and message.
pub fn recv(io: &mut Io<Log>, log: &mut Log, fd: RawFd, cap: usize, fds_max: usize) -> Ended {
    let msg = Msg::new(Vec::with_capacity(cap)).with_fds(fds_max);
    let op = io.recvmsg(91, fd, msg, on_msg).unwrap();
    io.set_deadline(op, 50_000_000).unwrap();
    io.run_until_idle(log).unwrap();
    log.take(91)
}

pub fn close(io: &mut Io<Log>, log: &mut Log, fd: OwnedFd) {
    io.close(92, fd, on_unit).unwrap();
    io.run_until_idle(log).unwrap();
    assert_eq!(log.take(92).result, Ok(0));
}

/// A result as a line to compare, the errno by name (the numbers differ between systems).
fn result(result: Result<usize, i32>) -> String {
    let names = [
        (libc::EINVAL, "EINVAL"),
        (libc::EPIPE, "EPIPE"),
        (libc::ECONNRESET, "ECONNRESET"),
        (libc::EISCONN, "EISCONN"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
    ];
    match result {
        Ok(n) => format!("Ok({n})"),
        Err(errno) => match names.iter().find(|(e, _)| *e == errno) {
            Some((_, name)) => format!("Err({name})"),
            None => format!("Err({errno})"),
        },
    }
}

/// A receive's result, bytes and flags, as one line to compare.
fn shown(ended: &Ended) -> String {
    let msg = ended.msg.as_ref().expect("a message");
    format!(
        "{} {:?} trunc={} ctrunc={} fds={}",
        result(ended.result),
        String::from_utf8_lossy(&msg.bufs()[0]),
        msg.truncated(),
        msg.control_truncated(),
        msg.fds().len()
    )
}

/// Datagrams keep their boundaries; one cut short says so (`MSG_TRUNC`), its count what
/// was kept.
fn boundaries(side: &Side, io: &mut Io<Log>, log: &mut Log) -> Vec<String> {
    let (a, b) = side.pair(UnixKind::Datagram);
    let mut seen = Vec::new();
    for bytes in [&b"ab"[..], b"cde", b"hello"] {
        let sent = send(io, log, a.as_raw_fd(), Msg::new(bytes.to_vec()));
        seen.push(result(sent));
    }
    for cap in [8, 8, 2] {
        seen.push(shown(&recv(io, log, b.as_raw_fd(), cap, 0)));
    }
    close(io, log, a);
    close(io, log, b);
    seen
}

/// Sends and receives once the peer closed (with a byte unread, or not), and sends with
/// an IP address.
fn closed_peer(side: &Side, io: &mut Io<Log>, log: &mut Log, kind: UnixKind) -> Vec<String> {
    let mut seen = Vec::new();
    for unread in [false, true] {
        let (a, b) = side.pair(kind);
        if unread {
            seen.push(result(send(io, log, a.as_raw_fd(), Msg::new(b"x".into()))));
        }
        close(io, log, b);
        seen.push(shown(&recv(io, log, a.as_raw_fd(), 8, 0)));
        for _ in 0..2 {
            seen.push(result(send(io, log, a.as_raw_fd(), Msg::new(b"y".into()))));
        }
        close(io, log, a);
    }
    let (a, b) = side.pair(kind);
    let mut msg = Msg::new(b"z".to_vec());
    msg.set_peer(Some("127.0.0.1:53".parse().unwrap()));
    seen.push(result(send(io, log, a.as_raw_fd(), msg)));
    close(io, log, a);
    close(io, log, b);
    seen
}

/// Descriptors passed: more than the control buffer holds (`MSG_CTRUNC`, none kept), and
/// on a stream, riding with the bytes of their send.
fn passing(side: &Side, io: &mut Io<Log>, log: &mut Log, kind: UnixKind) -> Vec<String> {
    let mut seen = Vec::new();
    let (a, b) = side.pair(kind);
    let (r, w) = rustix::pipe::pipe().unwrap();
    let with = |bytes: &[u8], fds: Vec<OwnedFd>| {
        let mut msg = Msg::new(bytes.to_vec()).with_fds(fds.len());
        msg.fds_mut().extend(fds);
        msg
    };
    let three = vec![
        r.try_clone().unwrap(),
        w.try_clone().unwrap(),
        r.try_clone().unwrap(),
    ];
    seen.push(result(send(io, log, a.as_raw_fd(), with(b"fds", three))));
    seen.push(shown(&recv(io, log, b.as_raw_fd(), 16, 1)));
    // On a stream: the bytes before those that carry descriptors come with them, and the
    // receive stops after them.
    for (bytes, fds) in [(&b"ab"[..], vec![]), (b"cd", vec![w]), (b"ef", vec![])] {
        seen.push(result(send(io, log, a.as_raw_fd(), with(bytes, fds))));
    }
    for _ in 0..2 {
        seen.push(shown(&recv(io, log, b.as_raw_fd(), 16, 4)));
    }
    drop(r);
    close(io, log, a);
    close(io, log, b);
    seen
}

/// What each scenario of `unix_pairs_behave_as_the_kernels` sees, in order: Linux 6.18's
/// answers (`ETIMEDOUT`: the receive's deadline, nothing came).
const EXPECTED: [&[&str]; 5] = [
    &[
        "Ok(2)",
        "Ok(3)",
        "Ok(5)",
        r#"Ok(2) "ab" trunc=false ctrunc=false fds=0"#,
        r#"Ok(3) "cde" trunc=false ctrunc=false fds=0"#,
        r#"Ok(2) "he" trunc=true ctrunc=false fds=0"#,
    ],
    &[
        r#"Ok(0) "" trunc=false ctrunc=false fds=0"#,
        "Err(EPIPE)",
        "Err(EPIPE)",
        "Ok(1)",
        r#"Err(ECONNRESET) "" trunc=false ctrunc=false fds=0"#,
        "Err(EPIPE)",
        "Err(EPIPE)",
        "Err(EISCONN)",
    ],
    &[
        r#"Err(ETIMEDOUT) "" trunc=false ctrunc=false fds=0"#,
        "Err(ECONNREFUSED)",
        "Err(ENOTCONN)",
        "Ok(1)",
        r#"Err(ETIMEDOUT) "" trunc=false ctrunc=false fds=0"#,
        "Err(ECONNREFUSED)",
        "Err(ENOTCONN)",
        "Err(EINVAL)",
    ],
    &[
        "Ok(3)",
        r#"Ok(3) "fds" trunc=false ctrunc=true fds=0"#,
        "Ok(2)",
        "Ok(2)",
        "Ok(2)",
        r#"Ok(4) "abcd" trunc=false ctrunc=false fds=1"#,
        r#"Ok(2) "ef" trunc=false ctrunc=false fds=0"#,
    ],
    &[
        "Ok(3)",
        r#"Ok(3) "fds" trunc=false ctrunc=true fds=0"#,
        "Ok(2)",
        "Ok(2)",
        "Ok(2)",
        r#"Ok(2) "ab" trunc=false ctrunc=false fds=0"#,
        r#"Ok(2) "cd" trunc=false ctrunc=false fds=1"#,
    ],
];

/// Each scenario on the simulator, checked against what Linux says (written down from a run
/// on Linux 6.18), and compared with the kernel through the suite's backend where it runs.
#[test]
fn unix_pairs_behave_as_the_kernels() {
    type Scenario = fn(&Side, &mut Io<Log>, &mut Log) -> Vec<String>;
    let scenarios: [(&str, Scenario); 5] = [
        ("boundaries", boundaries),
        ("closed stream", |s, io, l| {
            closed_peer(s, io, l, UnixKind::Stream)
        }),
        ("closed datagram", |s, io, l| {
            closed_peer(s, io, l, UnixKind::Datagram)
        }),
        ("passing on a stream", |s, io, l| {
            passing(s, io, l, UnixKind::Stream)
        }),
        ("passing datagrams", |s, io, l| {
            passing(s, io, l, UnixKind::Datagram)
        }),
    ];
    let sim = Sim::new(&SimOptions::new(5)).unwrap();
    let mut sim_io = Side::Sim(sim.clone()).io().unwrap();
    let mut real_io = Side::Real.io();
    let mut log = Log::default();
    let mut sim_seen = Vec::new();
    for (name, scenario) in scenarios {
        let on_sim = scenario(&Side::Sim(sim.clone()), &mut sim_io, &mut log);
        // Linux's answers; other systems' differ (macOS's datagram pairs, say).
        if let Some(real_io) = real_io.as_mut().filter(|_| cfg!(target_os = "linux")) {
            let on_real = scenario(&Side::Real, real_io, &mut log);
            assert_eq!(on_sim, on_real, "{name}: the simulator and the kernel");
        }
        sim_seen.push(on_sim);
    }
    for (seen, expected) in sim_seen.iter().zip(EXPECTED) {
        assert_eq!(seen, expected);
    }
    drop(sim_io);
    assert_eq!(sim.open_descriptors(), 0, "nothing left open");
}
