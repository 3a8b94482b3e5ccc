//! The UDP echo (`serve_udp`) and many `UdpClient`s on the deterministic simulator, as a
//! seeded fuzzer under datagram loss, duplication and reordering.
//!
//! How it works: one seed builds one simulated world with every fault on (`Faults::standard`)
//! and datagram loss, duplication and reordering at rates drawn from the seed, serves a UDP
//! echo on it with `serve_udp` (a handler that flips every byte after an 8-byte header, so a
//! request is never taken for its reply), and runs many clients on the same loop, each a
//! `UdpClient` with a timeout and a number of tries drawn from the seed, each making requests
//! one after another until the seed's budget of requests is spent. A request carries its
//! client and its number in the header and a payload that is a function of both; a few are
//! longer than the server takes (dropped as truncated), so those must time out. Invariants:
//! - every response a client accepts is the reply to the request it made, byte for byte
//!   (`UdpClientHandler::is_response` rejects late answers to earlier requests by number;
//!   the check in `on_response` is the whole reply);
//! - every request ends once, with its response or a clean `TimedOut` after exactly its
//!   tries (no other error: the simulator never fails a datagram send), and a request the
//!   server cannot take always times out; in a calm seed (one in four: no datagram lost,
//!   every client patient, its timeout far above the longest round trip) every request
//!   that fits is answered, whatever duplication, reordering and the other faults do (not
//!   so where impatient clients retry: their retries, with no backoff, can queue the
//!   server's socket for longer than a patient client waits, as a retry storm does);
//! - the clients' counters add up (requests = responses + timeouts; tries = requests +
//!   retries), the run ends within a virtual hour, and nothing panics;
//! - at the end, after `stop_udp` and the clients' sockets closed through the loop: no slot
//!   in flight, no pool buffer lent, no simulated descriptor open.
//!
//! A failing seed is printed with the command that replays it (`cargo xtask fuzz --fuzzer
//! udp --seed N`), the trace hash of every seed too; one seed always gives one hash.
//!
//! Environment (what `cargo xtask fuzz --fuzzer udp` sets): `UDP_FUZZ_SEED=N` replays one
//! seed; `UDP_FUZZ_SEEDS=N` runs N seeds from `UDP_FUZZ_START` (default 0);
//! `UDP_FUZZ_OPS` sets the requests per seed (default 2,000); `UDP_FUZZ_PLANTED=1` turns on
//! the planted bug (the clients take any datagram from the server as the response, which is
//! `UdpClientHandler::is_response`'s default), which the fuzzer must catch: a late answer to
//! an earlier request taken for the next one's.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use dispatch_loop::sim::{FaultCounts, Faults, Sim, SimOptions};
use dispatch_loop::{Io, Msg, Options, PoolOptions};
use dispatch_net::{request_by_id, serve_udp, stop_udp, Reply, RequestOptions, Udp};
use dispatch_net::{UdpClient, UdpClientHandler, UdpHandler, UdpOptions};

/// The requests per seed of the suite's seeds.
const SUITE_OPS: u64 = 300;
/// Seeds the suite runs.
const SUITE_SEEDS: u64 = 6;
/// The largest datagram the server takes; some requests are longer.
const SERVER_DATAGRAM_MAX: u32 = 512;
/// Bytes before a request's payload: the client's number and the request's.
const HEADER: usize = 8;
/// A patient client's timeout: far above the longest round trip `Faults::standard` allows
/// without loss (each way up to 100 µs of latency, 5 ms of the latency fault and 100 µs
/// held back; up to 2 ms of delay and 5 ms of completion latency per operation, four
/// operations: about 40 ms), so that a request of such a client that fits the server, on
/// a calm seed, must be answered.
const PATIENT_TIMEOUT_NS: u64 = 200_000_000;
/// A run longer than this in virtual time fails its seed.
const VIRTUAL_NS_MAX: u64 = 3_600_000_000_000;

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

/// The byte at `at` of request `seq` of client `id`'s payload.
fn pattern(id: u32, seq: u32, at: usize) -> u8 {
    let x = (u64::from(id) << 32 | u64::from(seq)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (at as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// Request `seq` of client `id`: the header, then `len` payload bytes.
fn request_bytes(id: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + len);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend((0..len).map(|at| pattern(id, seq, at)));
    bytes
}

/// The server's reply to `request`: the header kept, every other byte flipped.
fn reply_bytes(request: &[u8]) -> Vec<u8> {
    let (header, payload) = request.split_at(HEADER.min(request.len()));
    header
        .iter()
        .copied()
        .chain(payload.iter().map(|b| !b))
        .collect()
}

/// One client's progress.
struct ClientState {
    /// The request under way (its bytes), if any.
    pending: Option<Vec<u8>>,
    seq: u32,
    tries_max: u32,
    /// Retries counted before the request under way.
    retries_before: u64,
}

/// The loop's context: the server, the clients and the tally.
struct Fuzz {
    udp: Udp,
    clients: Vec<UdpClient>,
    states: Vec<ClientState>,
    rng: Rng,
    /// Requests not started yet.
    budget: u64,
    /// The planted bug: `is_response` takes every datagram from the server, as
    /// `UdpClientHandler`'s default does, so a late answer to an earlier request (a duplicate,
    /// or the answer to a retry) is taken for the next request's.
    planted_bug: bool,
    responses: u64,
    timeouts: u64,
    failure: Option<String>,
    /// The seed is calm: no datagram lost and every client patient.
    calm: bool,
}

impl UdpHandler for Fuzz {
    fn udp(&mut self) -> &mut Udp {
        &mut self.udp
    }

    fn on_datagram(&mut self, _: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply {
        let buf = &mut msg.bufs_mut()[0];
        for byte in buf.iter_mut().skip(HEADER) {
            *byte = !*byte;
        }
        Reply::SendTo(from)
    }
}

impl UdpClientHandler for Fuzz {
    fn udp_client(&mut self) -> &mut UdpClient {
        unreachable!("many clients: udp_client_by_id")
    }

    fn on_response(&mut self, _: &mut Io<Self>, _: io::Result<&Msg>) {
        unreachable!("many clients: on_response_by_id")
    }

    fn udp_client_by_id(&mut self, id: u32) -> &mut UdpClient {
        &mut self.clients[id as usize]
    }

    fn is_response(&mut self, _: u32, request: &Msg, response: &Msg) -> bool {
        let (request, response) = (&request.bufs()[0], &response.bufs()[0]);
        self.planted_bug
            || request.len() >= HEADER && response.get(..HEADER) == Some(&request[..HEADER])
    }

    fn on_response_by_id(&mut self, io: &mut Io<Self>, id: u32, response: io::Result<&Msg>) {
        if let Err(failure) = self.check_response(id, response) {
            self.failure.get_or_insert(failure);
        }
        self.start(io, id);
    }
}

impl Fuzz {
    /// Checks client `id`'s request's end against the invariants.
    fn check_response(&mut self, id: u32, response: io::Result<&Msg>) -> Result<(), String> {
        let stats = self.clients[id as usize].stats();
        let state = &mut self.states[id as usize];
        let request = state
            .pending
            .take()
            .ok_or(format!("client {id}: an end with no request"))?;
        let tries = 1 + stats.retries - state.retries_before;
        state.retries_before = stats.retries;
        if tries > u64::from(state.tries_max) {
            return Err(format!(
                "client {id}: {tries} tries, at most {}",
                state.tries_max
            ));
        }
        let too_long = request.len() > SERVER_DATAGRAM_MAX as usize;
        match response {
            Ok(msg) if too_long => Err(format!(
                "client {id}: a reply to a dropped request: {msg:?}"
            )),
            Ok(msg) if msg.bufs()[0] != reply_bytes(&request) => Err(format!(
                "client {id} request {}: accepted a reply that is not its own ({} bytes)",
                state.seq,
                msg.bufs()[0].len()
            )),
            Ok(_) => {
                self.responses += 1;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                if self.calm && !too_long {
                    return Err(format!(
                        "client {id}: a request timed out in a calm seed \
                         ({tries} tries; {stats:?})"
                    ));
                }
                if tries != u64::from(state.tries_max) {
                    return Err(format!("client {id}: timed out after {tries} tries"));
                }
                self.timeouts += 1;
                Ok(())
            }
            Err(error) => Err(format!("client {id}: not a clean timeout: {error}")),
        }
    }

    /// Client `id`'s next request, while the budget lasts.
    fn start(&mut self, io: &mut Io<Self>, id: u32) {
        if self.budget == 0 || self.failure.is_some() {
            return;
        }
        self.budget -= 1;
        let len = match self.rng.below(50) {
            0 => SERVER_DATAGRAM_MAX as usize, // past the server's room with the header
            _ => self.rng.below(200) as usize,
        };
        let state = &mut self.states[id as usize];
        state.seq += 1;
        let bytes = request_bytes(id, state.seq, len);
        request_by_id(self, io, id, &bytes).expect("one request at a time per client");
        self.states[id as usize].pending = Some(bytes);
    }
}

/// What one passing seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    trace_hash: u64,
    virtual_ns: u64,
    responses: u64,
    timeouts: u64,
    retries: u64,
    strays: u64,
    faults: FaultCounts,
}

/// The loop's options: `ops_max` slots, and a pool for the server's multishot receive of 1
/// to 16 buffers as the seed says: a small one runs dry under load, and the receive waits
/// for buffers (no datagram dropped by it).
fn loop_options(rng: &mut Rng, udp_options: &UdpOptions, ops_max: u32) -> Options {
    let mut options = Options::new(ops_max);
    let buffers = 1 + rng.below(16) as u32;
    options.pool = PoolOptions::new(buffers, udp_options.pool_buffer_size());
    options
}

/// Runs one seed: its outcome, or what failed.
fn run(seed: u64, ops: u64, planted_bug: bool) -> Result<Outcome, String> {
    let mut rng = Rng(seed ^ 0x0dd5_eed5);
    let mut options = SimOptions::new(seed);
    options.faults = Faults::standard();
    // One seed in four is calm: no datagram lost, every client patient. There every request
    // that fits is answered.
    let calm = rng.below(4) == 0;
    options.faults.datagram_loss = if calm { 0 } else { rng.below(300_001) as u32 };
    options.faults.datagram_duplicate = rng.below(200_001) as u32;
    options.faults.datagram_reorder = rng.below(300_001) as u32;
    let sim = Sim::new(&options).map_err(|e| e.to_string())?;
    let n_clients = 1 + rng.below(32) as u32;
    let udp_options = UdpOptions::new(1 + rng.below(8) as u32, SERVER_DATAGRAM_MAX);
    let ops_max = udp_options.ops_max() + n_clients * 2 + 1;
    let loop_options = loop_options(&mut rng, &udp_options, ops_max);
    let mut io: Io<Fuzz> = Io::new_sim(&loop_options, &sim).map_err(|e| e.to_string())?;
    let (server_socket, server) = sim.udp_bind("10.9.0.1:7".parse().unwrap()).unwrap();
    let mut fuzz = Fuzz {
        udp: Udp::new(&udp_options),
        clients: Vec::new(),
        states: Vec::new(),
        rng,
        budget: ops,
        planted_bug,
        responses: 0,
        timeouts: 0,
        failure: None,
        calm,
    };
    for id in 0..n_clients {
        let (socket, _) = sim.udp_bind("10.9.0.2:0".parse().unwrap()).unwrap();
        // 0.2 to 20 ms a try (latency is 10 to 100 µs each way, more under the faults), or
        // patient.
        let patient = fuzz.calm || fuzz.rng.below(4) == 0;
        let timeout_ns = match patient {
            true => PATIENT_TIMEOUT_NS,
            false => 200_000 + fuzz.rng.below(20_000_000),
        };
        let tries_max = 1 + fuzz.rng.below(8) as u32;
        let mut request_options = RequestOptions::new(timeout_ns, tries_max);
        request_options.response_size_max = SERVER_DATAGRAM_MAX;
        fuzz.clients
            .push(UdpClient::new(socket, server, &request_options).with_id(id));
        fuzz.states.push(ClientState {
            pending: None,
            seq: 0,
            tries_max,
            retries_before: 0,
        });
    }
    serve_udp(&mut fuzz, &mut io, server_socket).map_err(|e| e.to_string())?;
    for id in 0..n_clients {
        fuzz.start(&mut io, id);
    }
    while fuzz.failure.is_none() && fuzz.states.iter().any(|s| s.pending.is_some()) {
        if sim.now_ns() > VIRTUAL_NS_MAX {
            return Err(format!(
                "still running after {VIRTUAL_NS_MAX} ns of virtual time"
            ));
        }
        let slice_ns = 1 + fuzz.rng.below(5_000_000);
        io.run_for_ns(&mut fuzz, slice_ns)
            .map_err(|e| format!("run: {e}"))?;
    }
    if let Some(failure) = fuzz.failure.take() {
        let server = fuzz.udp.stats();
        return Err(format!("{failure}; the server's {server:?}"));
    }
    finish(&sim, &mut io, &mut fuzz, ops)
}

/// Stops the server, closes the clients' sockets through the loop, checks the tally and
/// that nothing is left.
fn finish(sim: &Sim, io: &mut Io<Fuzz>, fuzz: &mut Fuzz, ops: u64) -> Result<Outcome, String> {
    stop_udp(fuzz, io);
    let strays = fuzz.clients.iter().map(|c| c.stats().strays).sum();
    let sockets: Vec<OwnedFd> = fuzz.clients.drain(..).map(UdpClient::into_socket).collect();
    for socket in sockets {
        io.close(u64::MAX, socket, |_, _, _, closed| closed.expect("a close"))
            .map_err(|_| "no slot for a close".to_string())?;
    }
    io.run_until_idle(fuzz)
        .map_err(|e| format!("final run: {e}"))?;
    let left = (
        io.in_flight(),
        io.pool_buffers_lent(),
        sim.open_descriptors(),
    );
    if left != (0, 0, 0) || !fuzz.udp.is_closed() {
        return Err(format!(
            "left at the end (slots, pool buffers, descriptors): {left:?}"
        ));
    }
    if fuzz.responses + fuzz.timeouts != ops {
        return Err(format!(
            "{ops} requests, {} responses and {} timeouts",
            fuzz.responses, fuzz.timeouts
        ));
    }
    let stats = sim.stats();
    Ok(Outcome {
        trace_hash: sim.trace_hash(),
        virtual_ns: sim.now_ns(),
        responses: fuzz.responses,
        timeouts: fuzz.timeouts,
        retries: fuzz.states.iter().map(|s| s.retries_before).sum(),
        strays,
        faults: stats.faults,
    })
}

/// `run`, with a failing seed printed with its replay command.
fn run_reported(seed: u64, ops: u64, planted_bug: bool) -> Result<Outcome, String> {
    let outcome = run(seed, ops, planted_bug);
    match &outcome {
        Ok(o) => eprintln!("udp fuzz seed {seed}: trace hash {:#018x}", o.trace_hash),
        Err(failure) => eprintln!(
            "udp fuzz seed {seed} FAILED: {failure}\n  replay: cargo xtask fuzz --fuzzer udp \
             --seed {seed} --ops {ops}{}",
            if planted_bug { " --planted-bug" } else { "" }
        ),
    }
    outcome
}

#[test]
fn the_udp_echo_survives_loss_duplication_and_reordering() {
    let outcomes: Vec<Outcome> = (0..SUITE_SEEDS)
        .map(|seed| run_reported(seed, SUITE_OPS, false).expect("the seed passes"))
        .collect();
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    assert!(sum(|o| o.retries) > 0, "loss costs retries");
    assert!(sum(|o| o.timeouts) > 0, "dropped requests time out");
    assert!(
        sum(|o| o.responses) > sum(|o| o.timeouts),
        "most requests are answered"
    );
    assert!(sum(|o| o.faults.datagram_loss) > 0);
    assert!(sum(|o| o.faults.datagram_duplicate) > 0);
    assert!(sum(|o| o.faults.datagram_reorder) > 0);
    assert_eq!(
        run(3, SUITE_OPS, false),
        run(3, SUITE_OPS, false),
        "one seed, one run"
    );
    assert_ne!(
        run(3, SUITE_OPS, false),
        run(4, SUITE_OPS, false),
        "two seeds, two runs"
    );
}

#[test]
fn taking_any_datagram_from_the_server_as_the_response_is_caught() {
    let caught = (0..SUITE_SEEDS).find(|&seed| run(seed, SUITE_OPS, true).is_err());
    let seed = caught.expect("the planted bug is caught within the suite's seeds");
    let failure = run(seed, SUITE_OPS, true).unwrap_err();
    eprintln!("planted bug caught by seed {seed}: {failure}");
    assert!(failure.contains("not its own"), "{failure}");
    assert_eq!(
        run(seed, SUITE_OPS, true),
        Err(failure),
        "the seed replays it"
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What `cargo xtask fuzz --fuzzer udp` runs: nothing unless `UDP_FUZZ_SEED` or
/// `UDP_FUZZ_SEEDS` is set.
#[test]
fn fuzz_from_env() {
    let ops = env_u64("UDP_FUZZ_OPS").unwrap_or(2_000);
    let planted_bug = env_u64("UDP_FUZZ_PLANTED") == Some(1);
    let expect_caught = env_u64("UDP_FUZZ_EXPECT_CAUGHT") == Some(1);
    if let Some(seed) = env_u64("UDP_FUZZ_SEED") {
        let outcome =
            run_reported(seed, ops, planted_bug).unwrap_or_else(|_| panic!("seed {seed} failed"));
        eprintln!("seed {seed}: passed: {outcome:?}");
        return;
    }
    let Some(count) = env_u64("UDP_FUZZ_SEEDS") else {
        eprintln!("set UDP_FUZZ_SEED or UDP_FUZZ_SEEDS (cargo xtask fuzz does)");
        return;
    };
    let start = env_u64("UDP_FUZZ_START").unwrap_or(0);
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut responses, mut timeouts, mut retries) = (0, 0, 0);
    for seed in start..start + count {
        match run_reported(seed, ops, planted_bug) {
            Ok(o) => {
                (responses, timeouts, retries) = (
                    responses + o.responses,
                    timeouts + o.timeouts,
                    retries + o.retries,
                )
            }
            Err(failure) => failures.push((seed, failure)),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "{count} seeds from {start} ({ops} requests each) in {wall:.1} s: {responses} \
         responses, {timeouts} timeouts, {retries} retries"
    );
    if expect_caught {
        assert!(
            !failures.is_empty(),
            "the planted bug was not caught in {count} seeds"
        );
        eprintln!(
            "the planted bug was caught by {} of {count} seeds",
            failures.len()
        );
        return;
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed: {failures:?}",
        failures.len()
    );
}
