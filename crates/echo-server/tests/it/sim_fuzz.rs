//! The echo server's connection logic under the deterministic simulator, as a seeded fuzzer.
//!
//! How it works: one seed builds one simulated world (`dispatch_loop::sim`, every fault on)
//! and runs on it the very code the binary runs for each connection: `dispatch_echo::Echo`
//! (with `dispatch_echo::loop_options`) served by `dispatch_net::serve` from a simulated
//! listener. Simulated clients (the world's peers, driven here without a loop) connect,
//! send a byte stream that is a function of their id and offset, read the echo and check
//! every byte at its offset, half-close when done and wait for the end of the stream; a few
//! reset or close abruptly. Between two rounds of client actions the loop runs for a random
//! slice of virtual time. A connection must end one of two ways: every byte echoed in order
//! and then a clean end of stream, or reported broken (refused, reset). A wrong byte, a byte
//! too many, a clean end with bytes missing, a client stuck for a virtual minute, a panic,
//! or anything left at the end (a slot, a pool buffer, a simulated descriptor, a
//! connection) fails the seed, which is printed with the command that replays it:
//! `cargo xtask fuzz --seed N`. The trace hash of every run is printed too; one seed always
//! gives the same one.
//!
//! Environment (what `cargo xtask fuzz` sets): `ECHO_FUZZ_SEED=N` replays one seed;
//! `ECHO_FUZZ_SEEDS=N` runs N seeds from `ECHO_FUZZ_START` (default 0) on
//! `ECHO_FUZZ_THREADS` threads (default one per core) and prints seeds per minute;
//! `ECHO_FUZZ_OPS` sets the simulated operations per seed (default 10,000);
//! `ECHO_FUZZ_PLANTED=1` turns on the planted bug (a byte dropped on a rare short read) that
//! the suite shows the fuzzer finds.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Instant;

use dispatch_echo::{loop_options, Echo, ThreadOptions};
use dispatch_loop::sim::{FaultCounts, Faults, Peer, Sim, SimOptions};
use dispatch_loop::{Io, PoolOptions};
use dispatch_net::{Handler, NetOptions};

/// One seed's set-up.
#[derive(Debug, Clone, Copy)]
pub struct FuzzOptions {
    pub seed: u64,
    /// Simulated operations before clients stop starting: the loop's completions plus the
    /// clients' operations that did something (a connect, a send or receive that moved
    /// bytes or ended the stream, a shutdown, a close, a reset; polls that found nothing to
    /// do are not counted).
    pub ops: u64,
    pub planted_bug: bool,
}

/// What one passing seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub trace_hash: u64,
    pub ops: u64,
    pub virtual_ns: u64,
    /// Connections whose every byte came back, then a clean end of stream.
    pub complete: u32,
    /// Connections reported broken (refused, reset) or ended by their client.
    pub broken: u32,
    /// Sends that waited for room (see `SimStats::sends_blocked`).
    pub sends_blocked: u64,
    pub faults: FaultCounts,
}

/// The faults of many seeds, added up.
fn total_faults(outcomes: &[(u64, Outcome)]) -> FaultCounts {
    let mut total = FaultCounts::default();
    for (_, outcome) in outcomes {
        let f = outcome.faults;
        total.latency += f.latency;
        total.reorder += f.reorder;
        total.short_io += f.short_io;
        total.reset += f.reset;
        total.refused += f.refused;
        total.delay += f.delay;
        total.emfile += f.emfile;
        total.disk_eio += f.disk_eio;
        total.torn_write += f.torn_write;
        total.planted_bug += f.planted_bug;
    }
    total
}

/// Clients connected at once.
const CONCURRENCY: u32 = 24;
/// A client stuck this long in virtual time fails the seed.
const STUCK_NS: u64 = 60_000_000_000;

/// The byte at `offset` of client `id`'s stream: a shifted or dropped byte shows.
fn pattern(id: u64, offset: u64) -> u8 {
    let x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ offset.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// The harness's own seeded generator (SplitMix64), apart from the world's.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Done,
}

struct Client {
    peer: Option<Peer>,
    id: u64,
    phase: Phase,
    sent: u64,
    received: u64,
    goal: u64,
    half_closed: bool,
    last_progress_ns: u64,
    /// A slow reader: reads nothing until then (the server's sends wait, and it stops
    /// reading the connection: backpressure).
    paused_until_ns: u64,
}

/// The clients and their tally.
struct Clients {
    sim: Sim,
    rng: Rng,
    list: Vec<Client>,
    next_id: u64,
    /// Client operations that did something (see `FuzzOptions::ops`).
    calls: u64,
    complete: u32,
    broken: u32,
    buf: Vec<u8>,
}

impl Clients {
    fn active(&self) -> u32 {
        self.list.iter().filter(|c| c.phase != Phase::Done).count() as u32
    }

    fn spawn(&mut self, addr: std::net::SocketAddr) {
        self.next_id += 1;
        self.calls += 1;
        let goal = 1 + self.rng.below(20_000);
        let now_ns = self.sim.now_ns();
        self.list.push(Client {
            peer: Some(self.sim.peer_connect(addr)),
            id: self.next_id,
            phase: Phase::Connecting,
            sent: 0,
            received: 0,
            goal,
            half_closed: false,
            last_progress_ns: now_ns,
            paused_until_ns: 0,
        });
    }

    /// One round of actions for client `at`.
    fn act(&mut self, at: usize) -> Result<(), String> {
        let now_ns = self.sim.now_ns();
        let client = &mut self.list[at];
        let peer = client.peer.as_ref().expect("not done");
        if client.phase == Phase::Connecting {
            match self.sim.peer_connected(peer) {
                Ok(true) => client.phase = Phase::Open,
                Ok(false) => return Ok(()),
                Err(_) => return self.end(at, false),
            }
        }
        if self.rng.below(1000) == 0 {
            // Abrupt end: a reset or a close with the echo unread.
            let peer = self.list[at].peer.take().expect("open");
            if self.rng.below(2) == 0 {
                self.sim.peer_reset(peer);
            } else {
                self.sim.peer_close(peer);
            }
            self.list[at].phase = Phase::Done;
            self.broken += 1;
            self.calls += 1;
            return Ok(());
        }
        self.send_some(at)?;
        self.recv_all(at)?;
        let client = &mut self.list[at];
        if client.phase == Phase::Open && now_ns.saturating_sub(client.last_progress_ns) > STUCK_NS
        {
            return Err(format!(
                "client {} stuck: sent {} of {}, received {}, half-closed {}",
                client.id, client.sent, client.goal, client.received, client.half_closed
            ));
        }
        Ok(())
    }

    fn send_some(&mut self, at: usize) -> Result<(), String> {
        let client = &self.list[at];
        if client.phase != Phase::Open || client.half_closed {
            return Ok(());
        }
        if client.sent == client.goal {
            if self.rng.below(2) == 0 {
                self.sim.peer_shutdown(client.peer.as_ref().expect("open"));
                self.list[at].half_closed = true;
                self.calls += 1;
            }
            return Ok(());
        }
        let len = (1 + self.rng.below(4096)).min(client.goal - client.sent);
        let (id, sent) = (client.id, client.sent);
        self.buf.clear();
        self.buf
            .extend((sent..sent + len).map(|offset| pattern(id, offset)));
        match self
            .sim
            .peer_send(client.peer.as_ref().expect("open"), &self.buf)
        {
            Ok(n) => {
                self.calls += 1;
                let client = &mut self.list[at];
                client.sent += n as u64;
                client.last_progress_ns = self.sim.now_ns();
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => self.end(at, false),
        }
    }

    fn recv_all(&mut self, at: usize) -> Result<(), String> {
        let now_ns = self.sim.now_ns();
        if self.list[at].paused_until_ns > now_ns {
            return Ok(());
        }
        if self.rng.below(50) == 0 {
            let pause_ns = self.rng.below(50_000_000);
            let client = &mut self.list[at];
            client.paused_until_ns = now_ns + pause_ns;
            // A pause is not being stuck.
            client.last_progress_ns = now_ns + pause_ns;
            return Ok(());
        }
        let mut buf = [0_u8; 4096];
        while self.list[at].phase == Phase::Open {
            let client = &self.list[at];
            let got = self
                .sim
                .peer_recv(client.peer.as_ref().expect("open"), &mut buf);
            match got {
                Ok(0) if client.half_closed && client.received == client.sent => {
                    return self.end(at, true);
                }
                Ok(0) => {
                    return Err(format!(
                        "client {}: clean end of stream with bytes missing: sent {}, \
                         received {}",
                        client.id, client.sent, client.received
                    ))
                }
                Ok(n) => {
                    self.calls += 1;
                    self.check(at, &buf[..n])?;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return self.end(at, false),
            }
        }
        Ok(())
    }

    /// Checks bytes echoed to client `at`, at their offsets.
    fn check(&mut self, at: usize, bytes: &[u8]) -> Result<(), String> {
        let client = &mut self.list[at];
        let start = client.received;
        if start + bytes.len() as u64 > client.sent {
            return Err(format!(
                "client {}: {} bytes echoed, only {} sent",
                client.id,
                start + bytes.len() as u64,
                client.sent
            ));
        }
        for (i, &byte) in bytes.iter().enumerate() {
            let offset = start + i as u64;
            if byte != pattern(client.id, offset) {
                return Err(format!(
                    "client {}: byte {offset} corrupted: {byte:#04x}, sent {:#04x}",
                    client.id,
                    pattern(client.id, offset)
                ));
            }
        }
        client.received += bytes.len() as u64;
        client.last_progress_ns = self.sim.now_ns();
        Ok(())
    }

    /// Client `at` is done: complete (every byte back, then the end of the stream) or
    /// broken.
    fn end(&mut self, at: usize, complete: bool) -> Result<(), String> {
        self.calls += 1;
        let client = &mut self.list[at];
        client.phase = Phase::Done;
        if let Some(peer) = client.peer.take() {
            self.sim.peer_close(peer);
        }
        if complete {
            self.complete += 1;
        } else {
            self.broken += 1;
        }
        Ok(())
    }
}

/// The server's side: the Echo handler on a loop on `sim`, serving a simulated listener.
fn server(sim: &Sim) -> Result<(Io<Echo>, Echo, std::net::SocketAddr), String> {
    let connections_max = CONCURRENCY * 2 + 8;
    let thread = ThreadOptions {
        index: 0,
        backend: None,
        connections_max,
        open_max: connections_max,
        buffer_size: 4096,
        idle_timeout_ns: 60_000_000_000,
        mask_pbuf_ring: false,
        mask_multishot: false,
        mask_ext_arg: false,
        // io_uring only: the simulator has no batch wait.
        batch_events: 1,
        batch_wait_us: 0,
        udp: false,
    };
    let mut net = NetOptions::new(connections_max);
    net.idle_timeout_ns = thread.idle_timeout_ns;
    net.accept_pause_ns = 1_000_000;
    let mut options = loop_options(&thread, &net);
    // Fewer buffers than connections: receives wait for buffers at times.
    options.pool = PoolOptions::new(32, thread.buffer_size);
    let mut io: Io<Echo> = Io::new_sim(&options, sim).map_err(|e| e.to_string())?;
    let mut echo = Echo::new(&net, Arc::new(AtomicU32::new(0)), thread.open_max);
    let listener = sim
        .listen("10.0.0.1:7".parse().expect("an address"), 64)
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr();
    dispatch_net::serve(&mut echo, &mut io, listener).map_err(|e| e.to_string())?;
    Ok((io, echo, addr))
}

/// Runs one seed: its outcome, or why it failed.
pub fn run_seed(options: FuzzOptions) -> Result<Outcome, String> {
    let mut faults = Faults::standard();
    faults.planted_bug = options.planted_bug;
    let mut sim_options = SimOptions::new(options.seed);
    sim_options.faults = faults;
    // Small buffers, so that slow readers stop their writers (backpressure) often.
    sim_options.socket_buffer_bytes = 4096 << (options.seed % 3);
    let sim = Sim::new(&sim_options).map_err(|e| e.to_string())?;
    drive(&sim, options).map_err(|failure| {
        format!(
            "{failure} (at {} ns, trace hash {:#018x})",
            sim.now_ns(),
            sim.trace_hash()
        )
    })
}

/// Runs the clients and the server on `sim` until the operations are spent, then checks
/// that nothing is left.
fn drive(sim: &Sim, options: FuzzOptions) -> Result<Outcome, String> {
    let (mut io, mut echo, addr) = server(sim)?;
    let mut clients = Clients {
        sim: sim.clone(),
        rng: Rng(options.seed ^ 0x5eed),
        list: Vec::new(),
        next_id: 0,
        calls: 0,
        complete: 0,
        broken: 0,
        buf: Vec::with_capacity(4096),
    };
    let ops = |clients: &Clients| clients.calls + clients.sim.stats().completions;
    loop {
        let starting = ops(&clients) < options.ops;
        while starting && clients.active() < CONCURRENCY {
            clients.spawn(addr);
        }
        if !starting && clients.active() == 0 {
            break;
        }
        for at in 0..clients.list.len() {
            if clients.list[at].phase != Phase::Done {
                clients.act(at)?;
            }
        }
        clients.list.retain(|c| c.phase != Phase::Done);
        let slice_ns = 50_000 + clients.rng.below(2_000_000);
        io.run_for_ns(&mut echo, slice_ns)
            .map_err(|e| e.to_string())?;
    }
    finish(sim, &mut io, &mut echo)?;
    let dropped = sim.stats().dropped_descriptors;
    if dropped > 0 {
        return Err(format!("{dropped} descriptors dropped instead of closed"));
    }
    Ok(Outcome {
        trace_hash: sim.trace_hash(),
        ops: ops(&clients),
        virtual_ns: sim.now_ns(),
        complete: clients.complete,
        broken: clients.broken,
        sends_blocked: sim.stats().sends_blocked,
        faults: sim.stats().faults,
    })
}

/// Stops the server and checks that nothing is left: no connection, no operation in flight,
/// no pool buffer lent, no simulated descriptor open.
fn finish(sim: &Sim, io: &mut Io<Echo>, echo: &mut Echo) -> Result<(), String> {
    dispatch_net::stop(echo, io);
    for _ in 0..1000 {
        if echo.net().connections() == 0 && io.in_flight() == 0 {
            break;
        }
        io.run_for_ns(echo, 10_000_000).map_err(|e| e.to_string())?;
    }
    let left = [
        ("connections", echo.net().connections()),
        ("operations in flight", io.in_flight()),
        ("pool buffers lent", io.pool_buffers_lent()),
        ("simulated descriptors", sim.open_descriptors()),
    ];
    for (what, count) in left {
        if count != 0 {
            return Err(format!("{count} {what} left at the end"));
        }
    }
    Ok(())
}

/// Runs one seed, turning a panic into a failure; prints the seed and the replay command
/// when it fails.
pub fn run_reported(options: FuzzOptions) -> Result<Outcome, String> {
    let outcome = std::panic::catch_unwind(|| run_seed(options)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Err(format!("panic: {message}"))
    });
    if let Err(failure) = &outcome {
        let planted = if options.planted_bug {
            " --planted-bug"
        } else {
            ""
        };
        eprintln!(
            "seed {} failed: {failure}\n  replay: cargo xtask fuzz --seed {} --ops {}{planted}",
            options.seed, options.seed, options.ops
        );
    }
    outcome
}

/// A failed seed and why.
type Failure = (u64, String);

/// Runs `count` seeds from `start` on `threads` threads: the failures, and the outcomes.
pub fn run_many(
    start: u64,
    count: u64,
    ops: u64,
    planted_bug: bool,
    threads: u64,
) -> (Vec<Failure>, Vec<(u64, Outcome)>) {
    let results: Vec<Vec<(u64, Result<Outcome, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (start + thread..start + count)
                        .step_by(threads as usize)
                        .map(|seed| {
                            let options = FuzzOptions {
                                seed,
                                ops,
                                planted_bug,
                            };
                            (seed, run_reported(options))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic escapes"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for (seed, result) in results.into_iter().flatten() {
        match result {
            Ok(outcome) => outcomes.push((seed, outcome)),
            Err(failure) => failures.push((seed, failure)),
        }
    }
    failures.sort();
    outcomes.sort_by_key(|(seed, _)| *seed);
    (failures, outcomes)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Seeds the normal test suite runs (in a debug build: a shorter workload per seed).
const SUITE_SEEDS: u64 = 300;
const SUITE_OPS: u64 = 2_000;

#[test]
fn echo_under_faults_every_byte_in_order_or_broken_for_hundreds_of_seeds() {
    let started = Instant::now();
    let (failures, outcomes) = run_many(0, SUITE_SEEDS, SUITE_OPS, false, cores());
    assert!(
        failures.is_empty(),
        "{} seeds failed: {failures:?}",
        failures.len()
    );
    let complete: u32 = outcomes.iter().map(|(_, o)| o.complete).sum();
    let broken: u32 = outcomes.iter().map(|(_, o)| o.broken).sum();
    let blocked: u64 = outcomes.iter().map(|(_, o)| o.sends_blocked).sum();
    eprintln!(
        "{SUITE_SEEDS} seeds of {SUITE_OPS} operations in {:.1?}: {complete} connections \
         echoed whole, {broken} broken, {blocked} sends blocked by backpressure",
        started.elapsed()
    );
    assert!(blocked > 0, "slow readers stop writers");
    let faults = total_faults(&outcomes);
    eprintln!("faults injected: {faults:?}");
    for (kind, count) in [
        ("latency", faults.latency),
        ("reorder", faults.reorder),
        ("short_io", faults.short_io),
        ("reset", faults.reset),
        ("refused", faults.refused),
        ("delay", faults.delay),
        ("emfile", faults.emfile),
    ] {
        assert!(count > 0, "no {kind} fault in {SUITE_SEEDS} seeds");
    }
    assert!(complete > SUITE_SEEDS as u32, "most connections complete");
    assert!(broken > 0, "faults break some");
}

#[test]
fn one_seed_one_trace_hash() {
    let run = |seed| {
        run_reported(FuzzOptions {
            seed,
            ops: SUITE_OPS,
            planted_bug: false,
        })
        .expect("passes")
    };
    let first = run(11);
    assert_eq!(first, run(11));
    assert_ne!(first.trace_hash, run(12).trace_hash);
}

#[test]
fn the_planted_bug_is_found_within_the_suites_seeds_and_its_seed_replays_it() {
    // The suite's seeds in order, a core's worth at a time, until one fails: the lowest
    // failing seed, the same on every run.
    let threads = cores();
    let found = (0..SUITE_SEEDS)
        .step_by(threads as usize)
        .find_map(|start| {
            let count = threads.min(SUITE_SEEDS - start);
            let (failures, _) = run_many(start, count, SUITE_OPS, true, threads);
            failures.into_iter().next()
        });
    let (seed, failure) = found.expect("the planted bug is found within the suite's seeds");
    eprintln!("planted bug found by seed {seed} (of {SUITE_SEEDS}): {failure}");
    let replay = run_reported(FuzzOptions {
        seed,
        ops: SUITE_OPS,
        planted_bug: true,
    });
    assert_eq!(replay, Err(failure), "the printed seed replays the failure");
    let off = run_reported(FuzzOptions {
        seed,
        ops: SUITE_OPS,
        planted_bug: false,
    });
    assert!(off.is_ok(), "without the bug the same seed passes: {off:?}");
}

/// What `cargo xtask fuzz` runs: nothing unless `ECHO_FUZZ_SEED` or `ECHO_FUZZ_SEEDS` is set.
#[test]
fn fuzz_from_env() {
    let ops = env_u64("ECHO_FUZZ_OPS").unwrap_or(10_000);
    let planted_bug = env_u64("ECHO_FUZZ_PLANTED") == Some(1);
    if let Some(seed) = env_u64("ECHO_FUZZ_SEED") {
        let options = FuzzOptions {
            seed,
            ops,
            planted_bug,
        };
        let outcome = run_reported(options).unwrap_or_else(|_| panic!("seed {seed} failed"));
        eprintln!(
            "seed {seed}: passed, trace hash {:#018x}: {outcome:?}",
            outcome.trace_hash
        );
        return;
    }
    let Some(count) = env_u64("ECHO_FUZZ_SEEDS") else {
        eprintln!("set ECHO_FUZZ_SEED or ECHO_FUZZ_SEEDS (cargo xtask fuzz does)");
        return;
    };
    let start = env_u64("ECHO_FUZZ_START").unwrap_or(0);
    let threads = env_u64("ECHO_FUZZ_THREADS").unwrap_or_else(cores);
    let started = Instant::now();
    let (failures, outcomes) = run_many(start, count, ops, planted_bug, threads);
    let wall = started.elapsed().as_secs_f64();
    let virtual_s: f64 = outcomes
        .iter()
        .map(|(_, o)| o.virtual_ns as f64 / 1e9)
        .sum();
    let total_ops: u64 = outcomes.iter().map(|(_, o)| o.ops).sum();
    let combined = outcomes
        .iter()
        .fold(0_u64, |h, (_, o)| h.rotate_left(5) ^ o.trace_hash);
    eprintln!(
        "{count} seeds from {start} ({ops} simulated operations each, {threads} threads) in \
         {wall:.1} s: {:.0} seeds per minute, {:.0} operations per second, {:.1} s of virtual \
         time per wall-clock second; combined trace hash {combined:#018x}",
        count as f64 / wall * 60.0,
        total_ops as f64 / wall,
        virtual_s / wall,
    );
    eprintln!("faults injected: {:?}", total_faults(&outcomes));
    assert!(
        failures.is_empty(),
        "{} seeds failed: {failures:?}",
        failures.len()
    );
}
