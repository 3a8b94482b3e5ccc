//! The simulation backend through the public API: virtual time, the simulated network and
//! its backpressure, deadlines and cancels, determinism of the trace, a deadlock reported
//! rather than hung. Every loop here is built with `Io::new_sim`, so these tests run the same
//! whatever `DISPATCH_BACKEND` says.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use dispatch_loop::sim::{Faults, Sim, SimOptions};
use dispatch_loop::{BackendKind, BufResult, Io, OpId, Options, PoolBuf, PoolOptions, Shot, Tag};

/// A world with `seed` and `faults`, and a loop on it with room for `ops_max` operations
/// and a small pool.
fn check<C>(seed: u64, faults: Faults, ops_max: u32) -> (Sim, Io<C>) {
    let mut sim_options = SimOptions::new(seed);
    sim_options.faults = faults;
    let sim = Sim::new(&sim_options).expect("a world");
    let mut options = Options::new(ops_max);
    options.pool = PoolOptions::new(16, 256);
    let io = Io::new_sim(&options, &sim).expect("a loop on the world");
    assert_eq!(io.stats().backend, BackendKind::Sim);
    (sim, io)
}

#[test]
fn timers_fire_in_virtual_time_without_sleeping() {
    let (sim, mut io) = check::<Vec<(u64, u64)>>(1, Faults::NONE, 8);
    let started = Instant::now();
    for (tag, seconds) in [(3, 3600_u64), (1, 1), (2, 2)] {
        io.timeout(
            tag,
            seconds * 1_000_000_000,
            |fired: &mut Vec<(u64, u64)>, io, tag, r| {
                r.expect("expired");
                fired.push((tag, io.sim().expect("on sim").now_ns()));
            },
        )
        .unwrap();
    }
    let mut fired = Vec::new();
    io.run_for_ns(&mut fired, 10 * 1_000_000_000).unwrap();
    assert_eq!(fired, vec![(1, 1_000_000_000), (2, 2_000_000_000)]);
    // run_for_ns returns exactly at its deadline, in virtual time.
    assert_eq!(sim.now_ns(), 10_000_000_000);
    io.run_until_idle(&mut fired).unwrap();
    assert_eq!(fired[2], (3, 3_600_000_000_000));
    assert_eq!(sim.now_ns(), 3_600_000_000_000);
    assert!(
        started.elapsed().as_secs() < 5,
        "an hour simulated, not slept"
    );
}

struct Echo {
    listener_fd: i32,
    client: Option<OwnedFd>,
    server: Option<OwnedFd>,
    got: Vec<u8>,
    events: Vec<&'static str>,
}

fn on_accept(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, socket: std::io::Result<OwnedFd>) {
    let socket = socket.expect("accepted");
    let fd = socket.as_raw_fd();
    echo.server = Some(socket);
    echo.events.push("accepted");
    io.recv(1, fd, Vec::with_capacity(64), on_server_recv)
        .unwrap();
}

fn on_server_recv(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, (n, buf): BufResult) {
    let fd = echo.server.as_ref().unwrap().as_raw_fd();
    match n.expect("server recv") {
        0 => {
            echo.events.push("server eof");
            let socket = echo.server.take().unwrap();
            io.close(1, socket, |_, _, _, r| r.expect("close")).unwrap();
        }
        _ => {
            io.send(1, fd, buf, |echo: &mut Echo, io, _, (n, _)| {
                n.expect("server send");
                let fd = echo.server.as_ref().unwrap().as_raw_fd();
                io.recv(1, fd, Vec::with_capacity(64), on_server_recv)
                    .unwrap();
            })
            .unwrap();
        }
    }
}

fn on_client_recv(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, (n, buf): BufResult) {
    let n = n.expect("client recv");
    let fd = echo.client.as_ref().unwrap().as_raw_fd();
    if n == 0 {
        echo.events.push("client eof");
        let socket = echo.client.take().unwrap();
        io.close(2, socket, |_, _, _, r| r.expect("close")).unwrap();
        return;
    }
    echo.got.extend_from_slice(&buf);
    if echo.got.len() == 5 {
        io.shutdown(2, fd, std::net::Shutdown::Write, |_, _, _, r| {
            r.expect("shutdown")
        })
        .unwrap();
    }
    io.recv(2, fd, Vec::with_capacity(64), on_client_recv)
        .unwrap();
}

#[test]
fn connect_accept_echo_half_close_and_close_over_the_simulated_network() {
    let (sim, mut io) = check::<Echo>(2, Faults::NONE, 16);
    let listener = sim.listen("10.0.0.1:0".parse().unwrap(), 8).unwrap();
    let client = sim.socket().unwrap();
    let client_fd = client.as_raw_fd();
    let mut echo = Echo {
        listener_fd: listener.as_raw_fd(),
        client: Some(client),
        server: None,
        got: Vec::new(),
        events: Vec::new(),
    };
    io.accept(0, echo.listener_fd, on_accept).unwrap();
    io.connect(
        2,
        client_fd,
        listener.local_addr(),
        |echo: &mut Echo, io, _, r| {
            r.expect("connect");
            echo.events.push("connected");
            let fd = echo.client.as_ref().unwrap().as_raw_fd();
            io.send(2, fd, b"hello".to_vec(), |_, _, _, (n, _)| {
                assert_eq!(n.expect("send"), 5);
            })
            .unwrap();
            io.recv(2, fd, Vec::with_capacity(64), on_client_recv)
                .unwrap();
        },
    )
    .unwrap();
    io.run_until_idle(&mut echo).unwrap();
    assert_eq!(echo.got, b"hello");
    for event in ["connected", "accepted", "server eof", "client eof"] {
        assert!(echo.events.contains(&event), "{event} in {:?}", echo.events);
    }
    drop(listener);
    assert_eq!(sim.open_descriptors(), 0, "everything closed");
    assert!(
        sim.now_ns() > 0 && sim.now_ns() < 10_000_000,
        "{} ns",
        sim.now_ns()
    );
}

#[test]
fn a_connect_to_nobody_is_refused() {
    let (sim, mut io) = check::<Option<i32>>(3, Faults::NONE, 4);
    let socket = sim.socket().unwrap();
    let addr = "10.9.9.9:1".parse().unwrap();
    io.connect(
        0,
        socket.as_raw_fd(),
        addr,
        |out: &mut Option<i32>, _, _, r| {
            *out = r.unwrap_err().raw_os_error();
        },
    )
    .unwrap();
    let mut out = None;
    io.run_until_idle(&mut out).unwrap();
    assert_eq!(out, Some(libc::ECONNREFUSED));
}

#[test]
fn a_reader_that_does_not_read_stops_its_writer() {
    let (sim, mut io) = check::<Vec<usize>>(4, Faults::NONE, 8);
    let (a, b) = sim.socket_pair().unwrap();
    let big = vec![7_u8; 1 << 20];
    let on_sent = |sent: &mut Vec<usize>, _: &mut Io<Vec<usize>>, _, (n, _): BufResult| {
        sent.push(n.expect("send"));
    };
    io.send(0, a.as_raw_fd(), big.clone(), on_sent).unwrap();
    io.send(0, a.as_raw_fd(), big, on_sent).unwrap();
    let mut sent = Vec::new();
    io.run_for_ns(&mut sent, 1_000_000_000).unwrap();
    // The first send filled the receiver's buffer (64 KiB); the second waits for room.
    assert_eq!(sent, vec![65_536]);
    io.recv(
        1,
        b.as_raw_fd(),
        Vec::with_capacity(1 << 17),
        |sent, _, _, (n, _)| {
            sent.push(n.expect("recv"));
        },
    )
    .unwrap();
    io.run_for_ns(&mut sent, 1_000_000_000).unwrap();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[1], 65_536, "received what was sent");
    assert!(sent[2] > 0, "the second send went on once there was room");
}

#[test]
fn deadlines_and_cancels_in_virtual_time() {
    let (sim, mut io) = check::<Vec<(Option<i32>, u64)>>(5, Faults::NONE, 8);
    let (a, _b) = sim.socket_pair().unwrap();
    let record = |out: &mut Vec<(Option<i32>, u64)>, io: &mut Io<_>, _, (r, _): BufResult| {
        let now = io.sim().unwrap().now_ns();
        out.push((r.err().and_then(|e| e.raw_os_error()), now));
    };
    let timed = io
        .recv(0, a.as_raw_fd(), Vec::with_capacity(8), record)
        .unwrap();
    io.set_deadline(timed, 10_000_000).unwrap();
    let mut out = Vec::new();
    io.run_until_idle(&mut out).unwrap();
    assert_eq!(out, vec![(Some(libc::ETIMEDOUT), 10_000_000)]);
    let cancelled = io
        .recv(0, a.as_raw_fd(), Vec::with_capacity(8), record)
        .unwrap();
    io.cancel(1, cancelled, |_, _, _, r| r.expect("found"))
        .unwrap();
    io.run_until_idle(&mut out).unwrap();
    assert_eq!(out[1], (Some(libc::ECANCELED), 10_000_000));
}

#[test]
fn a_loop_that_can_never_progress_says_so_instead_of_hanging() {
    let (sim, mut io) = check::<()>(6, Faults::NONE, 4);
    let (a, _b) = sim.socket_pair().unwrap();
    io.recv(0, a.as_raw_fd(), Vec::with_capacity(8), |_, _, _, _| {})
        .unwrap();
    let error = io.run_until_idle(&mut ()).unwrap_err();
    assert!(error.to_string().contains("simulated deadlock"), "{error}");
    assert!(error.to_string().contains("seed 6"), "{error}");
}

/// A workload of pooled multishot receives and sends over socket pairs, with every fault
/// on: the trace hash of a seed, and the bytes each receiver got (checked in order).
fn pooled_workload(seed: u64) -> (u64, u64) {
    struct Pairs {
        sockets: Vec<(OwnedFd, OwnedFd)>,
        received: Vec<Vec<u8>>,
    }
    fn on_data(pairs: &mut Pairs, _: &mut Io<Pairs>, tag: Tag, shot: Shot<PoolBuf>) {
        match shot.result {
            Ok(data) => pairs.received[tag as usize].extend_from_slice(&data),
            Err(error) => assert_eq!(error.raw_os_error(), Some(libc::ECONNRESET)),
        }
    }
    let (sim, mut io) = check::<Pairs>(seed, Faults::standard(), 64);
    let mut pairs = Pairs {
        sockets: (0..8).map(|_| sim.socket_pair().unwrap()).collect(),
        received: vec![Vec::new(); 8],
    };
    for (tag, (_, b)) in pairs.sockets.iter().enumerate() {
        io.recv_multishot(tag as Tag, b.as_raw_fd(), on_data)
            .unwrap();
    }
    for round in 0..20_u8 {
        for (tag, (a, _)) in pairs.sockets.iter().enumerate() {
            let message = vec![round; 1 + (tag * 37 + usize::from(round) * 11) % 300];
            io.send(tag as Tag, a.as_raw_fd(), message, |_, _, _, _| {})
                .unwrap();
        }
        io.run_for_ns(&mut pairs, 1_000_000).unwrap();
    }
    io.run_for_ns(&mut pairs, 100_000_000).unwrap();
    for received in &pairs.received {
        // In order: rounds never go back (short writes may cut a message, never reorder).
        assert!(
            received.windows(2).all(|w| w[0] <= w[1]),
            "reordered within a stream"
        );
    }
    let total = pairs.received.iter().map(|r| r.len() as u64).sum();
    (sim.trace_hash(), total)
}

#[test]
fn one_seed_gives_one_trace_and_different_seeds_differ() {
    let first = pooled_workload(7);
    assert_eq!(first, pooled_workload(7), "seed 7 twice");
    let mut hashes: Vec<u64> = (0..16).map(|seed| pooled_workload(seed).0).collect();
    assert!(first.1 > 0, "bytes moved");
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 16, "16 seeds, 16 traces");
}

#[test]
fn the_environment_selects_sim_and_automatic_selection_never_does() {
    let mut options = Options::new(4);
    options.backend = Some(BackendKind::Sim);
    let io: Io<()> = Io::new(&options).unwrap();
    assert_eq!(io.stats().backend, BackendKind::Sim);
    assert!(io.sim().is_some());
    assert_eq!(BackendKind::from_name("sim"), Some(BackendKind::Sim));
    if std::env::var(dispatch_loop::BACKEND_ENV).is_err() {
        let io: Io<()> = Io::new(&Options::new(4)).unwrap();
        assert_ne!(io.stats().backend, BackendKind::Sim);
        assert!(io.sim().is_none());
    }
}

/// The file workload's state: records written in order, fsynced every few, and what the
/// last successful fsync covered.
struct Log {
    file: Option<OwnedFd>,
    /// The root directory, open while its fsync runs.
    dir: Option<OwnedFd>,
    written: u64,
    goal: u64,
    syncing: bool,
    durable: u64,
    /// An fsync failed while a write was in flight: write again from `durable` next.
    rewind: bool,
    /// After the restart: reading the file back.
    reading: bool,
    read_back: Vec<u8>,
}

const RECORD: u64 = 64;

fn record_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9e37_79b9) >> 7) as u8 ^ (offset / RECORD) as u8
}

fn write_next(log: &mut Log, io: &mut Io<Log>) {
    if log.written == log.goal {
        return;
    }
    let end = (log.written / RECORD + 1) * RECORD;
    let bytes: Vec<u8> = (log.written..end).map(record_byte).collect();
    let fd = log.file.as_ref().unwrap().as_raw_fd();
    io.write(0, fd, bytes, log.written, on_written).unwrap();
}

fn on_written(log: &mut Log, io: &mut Io<Log>, _: Tag, (result, _): BufResult) {
    match result {
        Ok(n) => log.written += n as u64,
        Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EIO)),
    }
    if log.rewind {
        // A failed fsync may have lost what was written since the last good one (as on
        // Linux): write it again.
        log.rewind = false;
        log.written = log.durable;
    }
    if log.written.is_multiple_of(RECORD * 8) && !log.syncing && log.written > log.durable {
        log.syncing = true;
        let covered = log.written;
        let fd = log.file.as_ref().unwrap().as_raw_fd();
        io.fsync(covered, fd, on_synced).unwrap();
    }
    write_next(log, io);
}

fn on_synced(log: &mut Log, io: &mut Io<Log>, covered: Tag, result: std::io::Result<()>) {
    log.syncing = false;
    match result {
        Ok(()) => log.durable = log.durable.max(covered),
        // No write in flight: start again from the last good fsync.
        Err(_) if log.written == log.goal => {
            log.written = log.durable;
            write_next(log, io);
        }
        Err(_) => log.rewind = true,
    }
}

/// Makes the file's name durable (an fsync of its directory, `/`), then writes.
fn sync_dir_then_write(io: &mut Io<Log>) {
    let root = std::ffi::CString::new("/").unwrap();
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let on_dir = |log: &mut Log, io: &mut Io<Log>, _: Tag, dir: std::io::Result<OwnedFd>| {
        let dir = log.dir.insert(dir.expect("the root opens"));
        let on_synced = |log: &mut Log, io: &mut Io<Log>, _: Tag, synced: std::io::Result<()>| {
            synced.expect("a directory syncs");
            let dir = log.dir.take().expect("open");
            io.close(0, dir, |_, _, _, closed| closed.expect("close"))
                .unwrap();
            write_next(log, io);
        };
        io.fsync(0, dir.as_raw_fd(), on_synced).unwrap();
    };
    io.openat(0, dispatch_loop::AT_FDCWD, root, flags, 0, on_dir)
        .unwrap();
}

fn read_next(log: &mut Log, io: &mut Io<Log>) {
    let fd = log.file.as_ref().unwrap().as_raw_fd();
    let offset = log.read_back.len() as u64;
    io.read(
        0,
        fd,
        Vec::with_capacity(4096),
        offset,
        |log: &mut Log, io, _, (r, buf)| match r {
            Ok(0) => {}
            Ok(_) => {
                log.read_back.extend_from_slice(&buf);
                read_next(log, io);
            }
            Err(_) => read_next(log, io),
        },
    )
    .unwrap();
}

fn open(io: &mut Io<Log>, flags: i32) {
    let path = std::ffi::CString::new("/log").unwrap();
    io.openat(0, dispatch_loop::AT_FDCWD, path, flags, 0o600, on_open)
        .unwrap();
}

fn on_open(log: &mut Log, io: &mut Io<Log>, _: Tag, file: std::io::Result<OwnedFd>) {
    let file = match file {
        // The crash came before the file was created: nothing was written, nothing survives.
        Err(error) if log.reading && error.raw_os_error() == Some(libc::ENOENT) => return,
        file => file.expect("the simulated disk has room"),
    };
    log.file = Some(file);
    if log.reading {
        read_next(log, io);
    } else {
        sync_dir_then_write(io);
    }
}

/// One seed of the file workload: writes, a crash at a random moment, a restart that reads
/// the file back. Whether unsynced bytes were lost or torn, how many were fsynced, and the
/// disk faults injected (`EIO`s, torn writes).
fn crash_seed(seed: u64) -> (bool, u64, (u64, u64)) {
    let mut faults = Faults::standard();
    faults.torn_write = 500_000;
    let (sim, mut io) = check::<Log>(seed, faults, 8);
    let mut log = Log {
        file: None,
        dir: None,
        written: 0,
        goal: RECORD * 400,
        syncing: false,
        durable: 0,
        rewind: false,
        reading: false,
        read_back: Vec::new(),
    };
    open(&mut io, libc::O_CREAT | libc::O_RDWR);
    let crash_after_ns = 1 + seed * 7_919 % 40_000_000;
    io.run_for_ns(&mut log, crash_after_ns).unwrap();
    sim.crash();
    let (written, durable) = (log.written, log.durable);
    let dead = [log.file.take(), log.dir.take()];
    drop(io);
    // The restart: a new loop on the same world reads what survived.
    let mut io: Io<Log> = Io::new_sim(&Options::new(8), &sim).unwrap();
    for dead in dead.into_iter().flatten() {
        io.close(0, dead, |_, _, _, r| r.expect("a dead descriptor closes"))
            .unwrap();
    }
    log.reading = true;
    open(&mut io, libc::O_RDONLY);
    io.run_until_idle(&mut log).unwrap();
    let survived = std::mem::take(&mut log.read_back);
    assert!(
        survived.len() as u64 >= durable,
        "seed {seed}: {} bytes survived, {durable} were fsynced",
        survived.len()
    );
    for (offset, &byte) in survived.iter().enumerate().take(durable as usize) {
        assert_eq!(
            byte,
            record_byte(offset as u64),
            "seed {seed}: fsynced byte {offset}"
        );
    }
    if let Some(file) = log.file.take() {
        io.close(0, file, |_, _, _, r| r.expect("close")).unwrap();
    }
    io.run_until_idle(&mut log).unwrap();
    assert_eq!(sim.open_descriptors(), 0, "seed {seed}");
    assert_eq!(sim.stats().dropped_descriptors, 0, "seed {seed}");
    let lost = (survived.len() as u64) < written
        || survived
            .iter()
            .enumerate()
            .any(|(offset, &byte)| byte != record_byte(offset as u64));
    let faults = sim.stats().faults;
    (lost, durable, (faults.disk_eio, faults.torn_write))
}

#[test]
fn what_was_fsynced_survives_every_simulated_crash() {
    let seeds: Vec<(bool, u64, (u64, u64))> = (0..100).map(crash_seed).collect();
    let lost = seeds.iter().filter(|(lost, ..)| *lost).count();
    let synced = seeds.iter().filter(|(_, durable, _)| *durable > 0).count();
    let eio: u64 = seeds.iter().map(|(.., (eio, _))| eio).sum();
    let torn: u64 = seeds.iter().map(|(.., (_, torn))| torn).sum();
    assert!(
        eio > 0 && torn > 0,
        "{eio} EIOs and {torn} torn writes in 100 seeds"
    );
    // The crashes did something (unsynced writes lost or torn), and fsyncs had something to
    // keep.
    assert!(lost > 10, "only {lost} of 100 crashes lost anything");
    assert!(synced > 50, "only {synced} of 100 runs fsynced anything");
}

#[test]
fn reordering_crosses_descriptors_but_never_a_stream() {
    let mut faults = Faults::NONE;
    faults.reorder = 1_000_000;
    faults.latency = 500_000;
    faults.latency_max_ns = 1_000_000;
    let (sim, mut io) = check::<Vec<Tag>>(9, faults, 128);
    let pairs: Vec<(OwnedFd, OwnedFd)> = (0..4).map(|_| sim.socket_pair().unwrap()).collect();
    for round in 0..20 {
        for (p, (a, _)) in pairs.iter().enumerate() {
            let tag = (p as Tag) << 32 | round;
            io.send(
                tag,
                a.as_raw_fd(),
                vec![1; 10],
                |order: &mut Vec<Tag>, _, tag, (n, _)| {
                    n.expect("send");
                    order.push(tag);
                },
            )
            .unwrap();
        }
    }
    let mut order = Vec::new();
    io.run_until_idle(&mut order).unwrap();
    assert_eq!(order.len(), 80);
    for p in 0..4 {
        let rounds: Vec<Tag> = order
            .iter()
            .filter(|t| *t >> 32 == p)
            .map(|t| t & 0xff)
            .collect();
        assert_eq!(rounds, (0..20).collect::<Vec<_>>(), "pair {p}: in order");
    }
    let submitted: Vec<Tag> = (0..20)
        .flat_map(|r| (0..4).map(move |p| p << 32 | r))
        .collect();
    assert_ne!(
        order, submitted,
        "completions of different descriptors were reordered"
    );
    assert!(sim.stats().faults.reorder > 0);
}

/// Dropping a loop closes, in the simulated world too, what its undelivered results created
/// and what its cancelled closes held: nothing is left open.
#[test]
fn dropping_the_loop_leaves_no_simulated_descriptor_open() {
    let mut faults = Faults::NONE;
    faults.latency = 1_000_000;
    faults.latency_max_ns = 1_000_000;
    let (sim, mut io) = check::<()>(10, faults, 8);
    let path = std::ffi::CString::new("/f").unwrap();
    let flags = libc::O_CREAT | libc::O_RDWR;
    io.openat(0, dispatch_loop::AT_FDCWD, path, flags, 0, |_, _, _, _| {})
        .unwrap();
    // The open is performed; its completion is late (the latency fault), so it is not
    // delivered before the drop.
    io.tick(&mut ()).unwrap();
    let (a, b) = sim.socket_pair().unwrap();
    io.close(1, a, |_, _, _, _| {}).unwrap();
    io.close(2, b, |_, _, _, _| {}).unwrap();
    assert_eq!(sim.open_descriptors(), 3);
    drop(io);
    assert_eq!(sim.open_descriptors(), 0);
    assert_eq!(sim.stats().dropped_descriptors, 0);
}

/// Panics in its callback: the loop unwinds with other results still undelivered.
fn on_nop_panic(_: &mut (), _: &mut Io<()>, _: Tag, _: std::io::Result<()>) {
    panic!("a planted panic");
}

/// A callback panics while a multishot accept's connection waits in the completed queue
/// (the accept itself re-arming): dropping the loop then closes that connection in the
/// simulated world too, so its peer sees the end of the stream.
#[test]
fn dropping_a_loop_after_a_panic_closes_an_undelivered_accepted_connection() {
    let (sim, mut io) = check::<()>(11, Faults::NONE, 8);
    let listener = sim.listen("10.0.0.1:80".parse().unwrap(), 8).unwrap();
    let peer = sim.peer_connect(listener.local_addr());
    for _ in 0..100 {
        if sim.peer_connected(&peer).unwrap() {
            break;
        }
        io.run_for_ns(&mut (), 1_000_000).unwrap();
    }
    assert!(sim.peer_connected(&peer).unwrap(), "the peer connected");
    let accept = |_: &mut (), _: &mut Io<()>, _: Tag, _: Shot<OwnedFd>| {
        unreachable!("the nop's panic comes first")
    };
    io.nop(0, on_nop_panic).unwrap();
    io.accept_multishot(1, listener.as_raw_fd(), accept)
        .unwrap();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        io.run_for_ns(&mut (), 1_000_000).unwrap();
    }));
    assert!(run.is_err(), "the nop's callback panicked");
    let before = sim.open_descriptors();
    drop(io);
    assert_eq!(
        sim.open_descriptors(),
        before - 1,
        "the accepted connection was closed in the world"
    );
    // A loop on the same world moves its clock on, so the end of stream reaches the peer.
    let mut next: Io<()> = Io::new_sim(&Options::new(8), &sim).unwrap();
    next.run_for_ns(&mut (), 10_000_000).unwrap();
    let mut buf = [0_u8; 8];
    assert_eq!(sim.peer_recv(&peer, &mut buf).unwrap(), 0, "end of stream");
    drop(listener);
    assert_eq!(sim.open_descriptors(), 0);
}

/// Expired timeouts run in deadline order on the simulator too, even under the faults that
/// reorder completions and deliver them late: timers expire as one object.
#[test]
fn timeouts_expire_in_deadline_order_under_reorder_and_latency_faults() {
    let mut faults = Faults::NONE;
    faults.latency = 500_000;
    faults.latency_max_ns = 5_000_000;
    faults.reorder = 1_000_000;
    for seed in 0..20 {
        let (sim, mut io) = check::<Vec<Tag>>(seed, faults, 64);
        // Deadlines 1 ms apart in a scrambled order, several due within one latency.
        for tag in 0..40_u64 {
            let timeout_ns = (tag * 17 % 40 + 1) * 1_000_000;
            io.timeout(timeout_ns, timeout_ns, |fired, _, tag, result| {
                result.unwrap();
                fired.push(tag);
            })
            .unwrap();
        }
        let mut fired = Vec::new();
        io.run_until_idle(&mut fired).unwrap();
        let mut sorted = fired.clone();
        sorted.sort_unstable();
        assert_eq!(fired, sorted, "seed {seed}: expiries out of deadline order");
        assert_eq!(fired.len(), 40);
        assert!(sim.stats().faults.reorder > 0 || seed > 0);
    }
}

/// What the lost-cancel tests record: each callback's tag and errno (0 for success).
type Answers = Vec<(Tag, i32)>;

fn errno<T>(result: &std::io::Result<T>) -> i32 {
    result
        .as_ref()
        .map_or_else(|error| error.raw_os_error().expect("an OS error"), |_| 0)
}

fn on_recv_answer(seen: &mut Answers, _: &mut Io<Answers>, tag: Tag, (n, _): BufResult) {
    seen.push((tag, errno(&n)));
}

fn on_cancel_answer(seen: &mut Answers, _: &mut Io<Answers>, tag: Tag, r: std::io::Result<()>) {
    seen.push((tag, errno(&r)));
}

/// A loop on a world with every cancel lost at `lost_ppm`, and a receive (tag 1) waiting on
/// a simulated socket pair whose peer never sends, in the kernel after a first turn.
fn a_receive_nobody_answers(
    seed: u64,
    lost_ppm: u32,
    ops_max: u32,
) -> (Sim, Io<Answers>, OwnedFd, OwnedFd, OpId) {
    let mut faults = Faults::NONE;
    faults.lost_cancel = lost_ppm;
    let (sim, mut io) = check::<Answers>(seed, faults, ops_max);
    let (socket, peer) = sim.socket_pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(8), on_recv_answer)
        .unwrap();
    io.run_for_ns(&mut Vec::new(), 1_000_000).unwrap();
    (sim, io, socket, peer, recv)
}

/// A cancel the kernel loses (io_uring on 6.1 and 6.12 can answer `ENOENT` for an operation
/// a kernel worker is just taking up, which then waits on): the loop sends it again until
/// it lands, so a cancel and a deadline end their targets as they would without the fault.
#[test]
fn a_lost_cancel_is_sent_again_until_it_lands() {
    for seed in 0..10 {
        let (sim, mut io, a, _a_peer, recv) = a_receive_nobody_answers(seed, 700_000, 8);
        let (b, _b_peer) = sim.socket_pair().unwrap();
        let timed = io
            .recv(2, b.as_raw_fd(), Vec::with_capacity(8), on_recv_answer)
            .unwrap();
        io.set_deadline(timed, 5_000_000).unwrap();
        let mut seen = Vec::new();
        io.run_for_ns(&mut seen, 1_000_000).unwrap();
        io.cancel(3, recv, on_cancel_answer).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        seen.sort_unstable();
        assert_eq!(
            seen,
            [(1, libc::ECANCELED), (2, libc::ETIMEDOUT), (3, 0)],
            "seed {seed}"
        );
        if seed == 0 {
            assert!(sim.stats().faults.lost_cancel > 0, "the fault fired");
        }
        for socket in [a, b] {
            io.close(4, socket, |_, _, _, _| {}).unwrap();
        }
        io.run_until_idle(&mut seen).unwrap();
    }
}

/// A lost cancel on a loop whose only cancel slot is the held cancel itself: the resend
/// needs no slot, so it lands instead of retrying every turn forever.
#[test]
fn a_lost_cancel_lands_when_its_own_slot_is_the_last_cancel_slot() {
    let (sim, mut io, a, _peer, recv) = a_receive_nobody_answers(3, 1_000_000, 1);
    let mut seen = Vec::new();
    io.cancel(2, recv, on_cancel_answer).unwrap();
    let turns_before = io.stats().syscalls;
    io.run_for_ns(&mut seen, 2_000_000_000).unwrap();
    seen.sort_unstable();
    assert_eq!(seen, [(1, libc::ECANCELED), (2, 0)]);
    assert!(
        sim.stats().faults.lost_cancel > 0,
        "the first cancel was lost"
    );
    assert_eq!(
        io.stats().syscalls,
        turns_before,
        "the simulator makes no syscall"
    );
    io.close(3, a, |_, _, _, _| {}).unwrap();
    io.run_until_idle(&mut seen).unwrap();
}

/// `clear_deadline` and `set_deadline` on a cancel, or on its target while the loop resends
/// a lost cancel, leave the resends alone: the target still ends cancelled.
#[test]
fn deadline_calls_do_not_stop_the_resends_of_a_lost_cancel() {
    for seed in 0..8 {
        let (_sim, mut io, a, _peer, recv) = a_receive_nobody_answers(seed, 1_000_000, 4);
        let mut seen = Vec::new();
        let cancel = io.cancel(2, recv, on_cancel_answer).unwrap();
        // The cancel is lost: "not found" (held) or "already running" (answered).
        io.run_for_ns(&mut seen, 100_000).unwrap();
        assert!(
            !seen.iter().any(|&(tag, _)| tag == 1),
            "seed {seed}: still waiting"
        );
        if let Ok(had) = io.clear_deadline(cancel) {
            assert!(!had, "a cancel has no deadline");
        }
        assert_eq!(io.clear_deadline(recv), Ok(false), "seed {seed}");
        io.set_deadline(recv, 3_600_000_000_000).unwrap();
        io.run_for_ns(&mut seen, 2_000_000_000).unwrap();
        seen.sort_unstable();
        assert_eq!(seen, [(1, libc::ECANCELED), (2, 0)], "seed {seed}");
        io.close(3, a, |_, _, _, _| {}).unwrap();
        io.run_until_idle(&mut seen).unwrap();
    }
}

/// Dropping a loop with a cancel in flight on the simulator: the cancel is answered like
/// any operation, not cancelled itself (the drop once panicked on it).
#[test]
fn dropping_a_loop_with_a_cancel_in_flight() {
    let (sim, mut io) = check::<()>(2, Faults::NONE, 4);
    let (a, _peer) = sim.socket_pair().unwrap();
    let recv = io
        .recv(1, a.as_raw_fd(), Vec::with_capacity(8), |_, _, _, _| {})
        .unwrap();
    io.tick(&mut ()).unwrap();
    io.cancel(2, recv, |_, _, _, _| {}).unwrap();
    drop(io);
    drop(a);
}
