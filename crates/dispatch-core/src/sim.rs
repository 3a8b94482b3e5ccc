//! The deterministic simulation backend's public side: a simulated world ([`Sim`]) of hosts,
//! ports, connections and files, with a virtual clock and seeded fault injection, on which
//! an [`Io`](crate::Io) runs unchanged. One seed gives one trace, bit for bit; the trace
//! hash ([`Sim::trace_hash`]) says so in one number.
//!
//! A loop runs on a world when it is created with [`Io::new_sim`](crate::Io::new_sim), or
//! with `Options::backend = Some(BackendKind::Sim)` or `DISPATCH_BACKEND=sim` (a world of its
//! own then, seeded by `DISPATCH_SIM_SEED`, 0 by default, faults off; reach it with
//! [`Io::sim`](crate::Io::sim)). Automatic selection never picks it.
//!
//! ```
//! use dispatch_core::sim::{Faults, Sim, SimOptions};
//! use dispatch_core::{BufResult, Io, Options, Tag};
//!
//! // A client and a server on one loop, over the simulated network.
//! let sim = Sim::new(&SimOptions { faults: Faults::NONE, ..SimOptions::new(42) }).unwrap();
//! let listener = sim.listen("10.0.0.1:80".parse().unwrap(), 16).unwrap();
//! let client = sim.socket().unwrap();
//! let mut io: Io<Vec<u8>> = Io::new_sim(&Options::new(8), &sim).unwrap();
//! io.connect(0, std::os::fd::AsRawFd::as_raw_fd(&client), listener.local_addr(),
//!     |_, _, _, result| result.expect("connected"))
//!     .unwrap();
//! io.accept(0, std::os::fd::AsRawFd::as_raw_fd(&listener), |_, io, _, server| {
//!     let server = server.expect("accepted");
//!     let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
//!     io.recv(0, fd, Vec::with_capacity(16), |got: &mut Vec<u8>, _, _, (n, buf): BufResult| {
//!         n.expect("received");
//!         got.extend_from_slice(&buf);
//!     })
//!     .unwrap();
//!     io.close(0, server, |_, _, _, _| {}).map_err(|_| ()).unwrap_err();
//! })
//! .unwrap();
//! # let _ = client;
//! ```
//! (The example above is trimmed in the crate's tests: see `tests/it/sim.rs`.)

pub use crate::backend::sim::{Peer, Sim, SimListener};

/// Per-fault probabilities, in parts per million of the occasions where each can happen,
/// and their sizes. [`Faults::NONE`] turns every fault off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// A segment, or a connection's first packet, takes up to `latency_max_ns` more.
    pub latency: u32,
    /// The largest extra latency.
    pub latency_max_ns: u64,
    /// At each reap, completions of different descriptors swap places (never two of one
    /// descriptor).
    pub reorder: u32,
    /// A send, receive, read or write moves fewer bytes than it could (at least one).
    pub short_io: u32,
    /// A send resets its connection (`ECONNRESET`, and the peer sees a reset).
    pub reset: u32,
    /// A connect is refused (`ECONNREFUSED`).
    pub refused: u32,
    /// An operation waits up to `delay_max_ns` before it is tried at all (an `EAGAIN` storm,
    /// as a readiness backend sees it); operations behind it on the same descriptor and
    /// direction wait too.
    pub delay: u32,
    /// The largest delay.
    pub delay_max_ns: u64,
    /// An accept that has a connection fails with `EMFILE` instead (the connection stays).
    pub emfile: u32,
    /// A file read, write or fsync fails with `EIO` (a failed fsync makes nothing durable).
    pub disk_eio: u32,
    /// At a crash, each write not yet fsynced is torn (a prefix survives); otherwise it
    /// survives whole or is lost, even odds.
    pub torn_write: u32,
    /// Test only: a rare short receive also drops one byte, a bug planted so that the
    /// fuzzers can show they find it. Never set it outside such a test.
    #[doc(hidden)]
    pub planted_bug: bool,
}

impl Faults {
    /// No faults: the simulation still has latency (`SimOptions::latency_*_ns`) and bounded
    /// buffers, and no randomness beyond the latency.
    pub const NONE: Faults = Faults {
        latency: 0,
        latency_max_ns: 0,
        reorder: 0,
        short_io: 0,
        reset: 0,
        refused: 0,
        delay: 0,
        delay_max_ns: 0,
        emfile: 0,
        disk_eio: 0,
        torn_write: 0,
        planted_bug: false,
    };

    /// Every fault on, at rates that a run of ten thousand operations meets each of a few
    /// times to a few hundred times: what the fuzzers use.
    pub const fn standard() -> Faults {
        Faults {
            latency: 20_000,
            latency_max_ns: 5_000_000,
            reorder: 100_000,
            short_io: 50_000,
            reset: 1_000,
            refused: 10_000,
            delay: 20_000,
            delay_max_ns: 2_000_000,
            emfile: 20_000,
            disk_eio: 5_000,
            torn_write: 300_000,
            planted_bug: false,
        }
    }
}

/// A simulated world's set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// The seed of every random choice: one seed, one trace.
    pub seed: u64,
    /// The faults to inject.
    pub faults: Faults,
    /// Bytes a connection's receiver holds, delivered or in flight, before its sender waits
    /// (backpressure).
    pub socket_buffer_bytes: u32,
    /// A segment's latency is drawn from `latency_min_ns..=latency_max_ns`.
    pub latency_min_ns: u64,
    /// See `latency_min_ns`.
    pub latency_max_ns: u64,
    /// Descriptors open at once in the world; past it, accept and openat fail with `EMFILE`.
    pub descriptors_max: u32,
}

impl SimOptions {
    /// `seed`, faults off, 64 KiB socket buffers, 10–100 µs latency, 1024 descriptors.
    pub const fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            faults: Faults::NONE,
            socket_buffer_bytes: 65_536,
            latency_min_ns: 10_000,
            latency_max_ns: 100_000,
            descriptors_max: 1024,
        }
    }

    /// From the environment: `DISPATCH_SIM_SEED` (default 0), faults off. What a loop
    /// forced onto `sim` without a world of its own gets.
    pub fn from_env() -> SimOptions {
        let seed = std::env::var("DISPATCH_SIM_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or(0);
        SimOptions::new(seed)
    }
}

/// What a simulated world did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Connections made (connects, accepted or not, and socket pairs).
    pub connections: u64,
    /// Bytes accepted by sends.
    pub bytes_sent: u64,
    /// Bytes handed to receives.
    pub bytes_received: u64,
    /// Faults injected, every kind together.
    pub faults_injected: u64,
    /// Simulated crashes.
    pub crashes: u64,
    /// Simulated descriptors found closed behind the simulator's back (an `OwnedFd` dropped
    /// instead of closed through [`Io::close`](crate::Io::close)); see [`Sim`].
    pub dropped_descriptors: u64,
    /// Operations the simulation completed.
    pub completions: u64,
}
