//! Cost per operation through `dispatch-loop` against the raw `io-uring` crate doing the same
//! work in the same run, for three ring set-ups (plain, `COOP_TASKRUN`, and
//! `SINGLE_ISSUER | DEFER_TASKRUN`), and through `dispatch-loop` on its epoll backend beside
//! them.
//!
//! - `nop/*`: a batch of 32 nops, submitted together and reaped: the loop's own cost.
//! - `timeout0/*`: a batch of 32 zero-length timeouts (dominated by the kernel's timers).
//! - `sendrecv/*`: one 64-byte send and the matching recv over a loopback TCP pair.
//! - `recv64/*`, `recv16k/*`: a message of 64 B or 16 KiB written by the peer and received
//!   through the loop, with a plain per-operation `recv` (a `Vec` per receive) against a
//!   pooled multishot receive armed once (`recv_multishot`), on io_uring and epoll. Each
//!   prints the loop's syscalls and submissions per message from `stats()`.
//! - `timer_late/*`, `wakeup/*` (`support/latency.rs`): how late 1 ms and 100 µs timeouts
//!   fire, and how long a cross-thread wake-up takes, io_uring against epoll, p50 and p99.
//!
//! Run with `cargo xtask bench`. Read the ratio `raw / dispatch` of each pair: a benchmark
//! reports; nothing here passes or fails.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
criterion::criterion_main!(linux::group::benches);

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("skipped: these benchmarks compare against raw io_uring, which is Linux only");
}

#[cfg(target_os = "linux")]
#[path = "support/latency.rs"]
mod latency;

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use criterion::{BenchmarkId, Criterion, Throughput};
    use dispatch_loop::{BackendKind, BufResult, Io, Options, PoolBuf, PoolOptions, Shot, Tag};
    use io_uring::{opcode, types, IoUring};

    const BATCH: u64 = 32;
    const MESSAGE: usize = 64;

    #[derive(Clone, Copy)]
    struct Setup {
        name: &'static str,
        single_issuer: bool,
        defer_taskrun: bool,
        coop_taskrun: bool,
    }

    const SETUPS: [Setup; 3] = [
        Setup {
            name: "plain",
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: false,
        },
        Setup {
            name: "coop_taskrun",
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
        },
        Setup {
            name: "single_issuer+defer_taskrun",
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: false,
        },
    ];

    /// The loops measured: io_uring under each ring set-up, and epoll.
    fn dispatch_ios<C>() -> Vec<(&'static str, Io<C>)> {
        let mut ios = Vec::new();
        for setup in SETUPS {
            let mut options = Options::new(64);
            options.backend = Some(BackendKind::IoUring);
            options.uring.single_issuer = setup.single_issuer;
            options.uring.defer_taskrun = setup.defer_taskrun;
            options.uring.coop_taskrun = setup.coop_taskrun;
            ios.push((setup.name, Io::new(&options).expect("io_uring")));
        }
        let mut options = Options::new(64);
        options.backend = Some(BackendKind::Epoll);
        ios.push(("epoll", Io::new(&options).expect("epoll")));
        ios
    }

    fn raw_ring(setup: Setup) -> IoUring {
        let mut builder = IoUring::builder();
        if setup.single_issuer {
            builder.setup_single_issuer();
        }
        if setup.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if setup.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        builder.setup_submit_all();
        builder.build(64).expect("io_uring")
    }

    fn on_done(done: &mut u64, _: &mut Io<u64>, _: Tag, result: io::Result<()>) {
        result.unwrap();
        *done += 1;
    }

    /// A group that schedules `BATCH` operations together and reaps them all: through
    /// dispatch-loop with `schedule`, and through a raw ring with the SQE from `entry`, whose
    /// completions carry `expected`. Generic, not `dyn`, so that the raw loop stays as tight
    /// as hand-written code.
    fn batch_group<S, E>(c: &mut Criterion, group_name: &str, schedule: S, entry: E, expected: i32)
    where
        S: Fn(&mut Io<u64>, Tag),
        E: Fn(u64) -> io_uring::squeue::Entry,
    {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(BATCH));
        for (name, mut io) in dispatch_ios::<u64>() {
            let mut done = 0;
            group.bench_function(BenchmarkId::new("dispatch", name), |b| {
                b.iter(|| {
                    for tag in 0..BATCH {
                        schedule(&mut io, tag);
                    }
                    io.run_until_idle(&mut done).unwrap();
                })
            });
        }
        for setup in SETUPS {
            let mut ring = raw_ring(setup);
            group.bench_function(BenchmarkId::new("raw", setup.name), |b| {
                b.iter(|| {
                    for tag in 0..BATCH {
                        // SAFETY: the entries reference no memory, or (timeouts) a timespec
                        // that outlives the run.
                        unsafe { ring.submission().push(&entry(tag)) }.unwrap();
                    }
                    let mut reaped = 0;
                    while reaped < BATCH {
                        ring.submit_and_wait(1).unwrap();
                        for cqe in ring.completion() {
                            assert_eq!(cqe.result(), expected);
                            reaped += 1;
                        }
                    }
                })
            });
        }
        group.finish();
    }

    fn nop(c: &mut Criterion) {
        let schedule = |io: &mut Io<u64>, tag| {
            io.nop(tag, on_done).unwrap();
        };
        let entry = |tag| opcode::Nop::new().build().user_data(tag);
        batch_group(c, "nop", schedule, entry, 0);
    }

    fn timeout0(c: &mut Criterion) {
        let schedule = |io: &mut Io<u64>, tag| {
            io.timeout(tag, 0, on_done).unwrap();
        };
        static ZERO: types::Timespec = types::Timespec::new();
        let entry = |tag| opcode::Timeout::new(&ZERO).build().user_data(tag);
        batch_group(c, "timeout0", schedule, entry, -libc::ETIME);
    }

    struct Pair {
        client: TcpStream,
        server: TcpStream,
        send_buf: Option<Vec<u8>>,
        recv_buf: Option<Vec<u8>>,
    }

    const SEND: Tag = 0;
    const RECV: Tag = 1;

    fn on_buf(pair: &mut Pair, _: &mut Io<Pair>, tag: Tag, (result, mut buf): BufResult) {
        assert_eq!(result.unwrap(), MESSAGE);
        if tag == SEND {
            pair.send_buf = Some(buf);
        } else {
            buf.clear();
            pair.recv_buf = Some(buf);
        }
    }

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn sendrecv(c: &mut Criterion) {
        let mut group = c.benchmark_group("sendrecv");
        group.throughput(Throughput::Elements(2));
        for (name, mut io) in dispatch_ios::<Pair>() {
            let (client, server) = tcp_pair();
            let send_buf = Some(vec![1; MESSAGE]);
            let recv_buf = Some(Vec::with_capacity(MESSAGE));
            let mut pair = Pair {
                client,
                server,
                send_buf,
                recv_buf,
            };
            group.bench_function(BenchmarkId::new("dispatch", name), |b| {
                b.iter(|| {
                    let send_buf = pair.send_buf.take().unwrap();
                    let recv_buf = pair.recv_buf.take().unwrap();
                    io.send(SEND, pair.client.as_raw_fd(), send_buf, on_buf)
                        .unwrap();
                    io.recv(RECV, pair.server.as_raw_fd(), recv_buf, on_buf)
                        .unwrap();
                    io.run_until_idle(&mut pair).unwrap();
                })
            });
        }
        for setup in SETUPS {
            let mut ring = raw_ring(setup);
            let (client, server) = tcp_pair();
            let send_buf = [1_u8; MESSAGE];
            let mut recv_buf = [0_u8; MESSAGE];
            group.bench_function(BenchmarkId::new("raw", setup.name), |b| {
                b.iter(|| {
                    let send =
                        opcode::Send::new(types::Fd(client.as_raw_fd()), send_buf.as_ptr(), 64)
                            .build()
                            .user_data(0);
                    let recv =
                        opcode::Recv::new(types::Fd(server.as_raw_fd()), recv_buf.as_mut_ptr(), 64)
                            .build()
                            .user_data(1);
                    // SAFETY: both buffers outlive the completions, reaped below before the next
                    // iteration touches them.
                    unsafe {
                        let mut sq = ring.submission();
                        sq.push(&send).unwrap();
                        sq.push(&recv).unwrap();
                    }
                    let mut reaped = 0;
                    while reaped < 2 {
                        ring.submit_and_wait(1).unwrap();
                        for cqe in ring.completion() {
                            assert_eq!(cqe.result(), MESSAGE as i32);
                            reaped += 1;
                        }
                    }
                })
            });
        }
        group.finish();
    }

    /// The receiving side of the `recv*` groups.
    struct Receiver {
        socket: TcpStream,
        received: usize,
        /// The run stops once `received` reaches it.
        goal: usize,
        buf: Option<Vec<u8>>,
    }

    fn on_plain(rx: &mut Receiver, io: &mut Io<Receiver>, _: Tag, (result, mut buf): BufResult) {
        rx.received += result.expect("recv");
        buf.clear();
        if rx.received < rx.goal {
            io.recv(0, rx.socket.as_raw_fd(), buf, on_plain).unwrap();
        } else {
            rx.buf = Some(buf);
            io.stop();
        }
    }

    fn on_pooled(rx: &mut Receiver, io: &mut Io<Receiver>, _: Tag, shot: Shot<PoolBuf>) {
        assert!(shot.more, "the stream stays open");
        rx.received += shot.result.expect("recv").len();
        if rx.received >= rx.goal {
            io.stop();
        }
    }

    /// Receives `size`-byte messages written by a peer: `multishot` through one pooled
    /// multishot receive, else a plain recv per arrival.
    fn receive(c: &mut Criterion, group_name: &str, size: usize) {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Bytes(size as u64));
        for backend in [BackendKind::IoUring, BackendKind::Epoll] {
            for multishot in [false, true] {
                let mut options = Options::new(64);
                options.backend = Some(backend);
                options.pool = PoolOptions::new(64, 16 * 1024);
                let mut io: Io<Receiver> = Io::new(&options).expect("a backend");
                let (mut client, socket) = tcp_pair();
                let mut rx = Receiver {
                    socket,
                    received: 0,
                    goal: 0,
                    buf: Some(Vec::with_capacity(size)),
                };
                if multishot {
                    io.recv_multishot(0, rx.socket.as_raw_fd(), on_pooled)
                        .unwrap();
                }
                let message = vec![7_u8; size];
                let kind = if multishot { "multishot" } else { "plain" };
                let name = format!("{kind}/{backend}");
                let before = io.stats();
                let mut messages = 0_u64;
                group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                    b.iter(|| {
                        std::io::Write::write_all(&mut client, &message).unwrap();
                        rx.goal = rx.received + size;
                        if !multishot {
                            let buf = rx.buf.take().expect("the plain receive's buffer");
                            io.recv(0, rx.socket.as_raw_fd(), buf, on_plain).unwrap();
                        }
                        // Runs until the callback that completes the message stops it.
                        io.run_for_ns(&mut rx, u64::MAX).unwrap();
                        assert!(rx.received >= rx.goal);
                        messages += 1;
                    })
                });
                let after = io.stats();
                let per = |n: u64| n as f64 / messages.max(1) as f64;
                eprintln!(
                    "{group_name}/{name}: {:.3} syscalls and {:.3} submissions per message",
                    per(after.syscalls - before.syscalls),
                    per(after.ops_submitted - before.ops_submitted),
                );
            }
        }
        group.finish();
    }

    fn recv64(c: &mut Criterion) {
        receive(c, "recv64", 64);
    }

    fn recv16k(c: &mut Criterion) {
        receive(c, "recv16k", 16 * 1024);
    }

    pub mod group {
        #![allow(missing_docs)]
        criterion::criterion_group!(
            benches,
            super::nop,
            super::timeout0,
            super::sendrecv,
            super::recv64,
            super::recv16k,
            crate::latency::timers,
            crate::latency::wakeups
        );
    }
}
