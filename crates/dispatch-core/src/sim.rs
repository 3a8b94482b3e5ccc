//! The deterministic simulation backend (`sim`): the same [`Io`](crate::Io) API over a
//! simulated world ([`Sim`]) of listeners, connections and files, with a virtual clock and
//! seeded fault injection, so that a program built on the loop can be tested under faults
//! reproducibly. One seed gives one trace, bit for bit, whatever the machine or its load;
//! [`Sim::trace_hash`] says so in one number.
//!
//! A loop runs on a world when created with [`Io::new_sim`](crate::Io::new_sim), or with
//! `Options::backend = Some(BackendKind::Sim)` or `DISPATCH_BACKEND=sim` (a world of its own
//! then, seeded by `DISPATCH_SIM_SEED`, 0 by default, faults off; reach it with
//! [`Io::sim`](crate::Io::sim)). Automatic selection never picks it, and it says so on stderr
//! (once per process) when an environment variable or option selects it; such a loop, whose
//! world nobody else can reach, prints the world's seed and trace hash on stderr when it is
//! dropped.
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use dispatch_loop::sim::{Faults, Sim, SimOptions};
//! use dispatch_loop::{BufResult, Io, Options};
//!
//! /// Sends "hello" over a simulated socket pair, receives it, and sleeps an hour: the
//! /// world's trace hash.
//! fn run(seed: u64) -> u64 {
//!     // Options structs are `#[non_exhaustive]`: start from a constructor, then set fields.
//!     let mut options = SimOptions::new(seed);
//!     options.faults = Faults::NONE;
//!     let sim = Sim::new(&options).unwrap();
//!     let (a, b) = sim.socket_pair().unwrap();
//!     let mut io: Io<Vec<u8>> = Io::new_sim(&Options::new(8), &sim).unwrap();
//!     io.send(0, a.as_raw_fd(), b"hello".to_vec(), |_, _, _, (sent, _)| {
//!         assert_eq!(sent.unwrap(), 5);
//!     })
//!     .unwrap();
//!     let on_recv = |got: &mut Vec<u8>, _: &mut Io<Vec<u8>>, _, (n, buf): BufResult| {
//!         n.unwrap();
//!         got.extend_from_slice(&buf);
//!     };
//!     io.recv(1, b.as_raw_fd(), Vec::with_capacity(16), on_recv).unwrap();
//!     io.timeout(2, 3_600_000_000_000, |_, _, _, expired| expired.unwrap()).unwrap();
//!     let mut got = Vec::new();
//!     io.run_until_idle(&mut got).unwrap(); // returns at once: an hour of virtual time
//!     assert_eq!(got, b"hello");
//!     assert_eq!(sim.now_ns(), 3_600_000_000_000);
//!     for socket in [a, b] {
//!         io.close(3, socket, |_, _, _, closed| closed.unwrap()).unwrap();
//!     }
//!     io.run_until_idle(&mut got).unwrap();
//!     assert_eq!(sim.open_descriptors(), 0);
//!     sim.trace_hash()
//! }
//!
//! assert_eq!(run(7), run(7)); // one seed, one trace
//! ```
//!
//! # How it differs from the real backends
//! - **Time** is virtual: [`Io::run_for_ns`](crate::Io::run_for_ns) moves the world's clock
//!   from event to event (a delivery, a timer, a deadline, a delayed operation) up to its end
//!   and returns without sleeping; timeouts and deadlines fire at exactly their virtual time.
//!   [`Io::tick`](crate::Io::tick) never moves the clock. The wall clock is never read.
//! - **A run that could only wait forever is an error**: when operations wait and no
//!   simulated event can complete them (a receive nobody will ever answer, without a
//!   deadline), `run_until_idle` (or `run_for_ns(u64::MAX)`) returns an error saying
//!   "simulated deadlock" and the seed, where a real loop would block. A pending
//!   [`Io::wait_wakeup`](crate::Io::wait_wakeup) is the exception: another thread may wake
//!   it, so such a turn returns at once (the loop spins until then). Wake-ups from other
//!   threads are the one thing a simulation cannot make deterministic: virtual time does
//!   not wait for them (a timer due in an hour fires at once if nothing else is due).
//! - **Descriptors** are the world's: [`Sim::listen`], [`Sim::socket`],
//!   [`Sim::socket_pair`], accepted connections and files opened by
//!   [`Io::openat`](crate::Io::openat). Each is a real descriptor (a duplicate of
//!   `/dev/null`), so that `OwnedFd` stays sound, but its number means nothing to the
//!   simulation: an operation on a descriptor the world does not know fails with `EBADF`
//!   (but a close, which closes it, as on every backend).
//!   Close them with [`Io::close`](crate::Io::close) (or drop the [`SimListener`]): a
//!   dropped `OwnedFd` closes only the real descriptor, and the simulated socket stays open
//!   (see [`Sim`]).
//! - **The network**: a connect reaches the listener on exactly its address (no wildcard
//!   addresses), after the world's latency; nobody listening, or a full backlog, is
//!   `ECONNREFUSED`. Each direction of a connection is a FIFO with a latency per segment; a
//!   receiver holds at most `SimOptions::socket_buffer_bytes` delivered or in flight, and a
//!   sender waits for room (backpressure). Closing a socket with bytes unread resets the
//!   connection, as TCP does; a reset is `ECONNRESET` once, then end of stream for receives
//!   and `EPIPE` for sends. Operations on one socket and direction are served in order, as
//!   on epoll and kqueue.
//! - **Files** live in one flat namespace of paths (the directory descriptor and the mode are
//!   ignored; `O_CREAT`, `O_EXCL`, `O_TRUNC` and the access mode are honoured). Creating and
//!   truncating a file survive a crash at once; written bytes survive only once fsynced
//!   ([`Sim::crash`]).
//! - Multishot receives and accepts are re-armed by the loop, as on epoll and kqueue; a pooled
//!   receive takes a pool buffer only when bytes are there.
//! - `Stats::syscalls` stays 0: nothing reaches the kernel.
//! - One loop at a time runs on a world. A world is not `Send`.
//!
//! # Faults
//! [`Faults`] sets a probability (parts per million) for each: extra latency for segments
//! and completions, completions of different descriptors reordered (never two of one
//! descriptor), short sends, receives, reads and writes, resets, refused connects, operations
//! delayed before their first try (an `EAGAIN` storm), `EMFILE` on accept, `EIO` from the
//! disk, and writes torn by a crash. Every fault drawn is in the trace.

pub use crate::backend::sim::{Peer, Sim, SimListener};

/// Per-fault probabilities, in parts per million of the occasions where each can happen,
/// and their sizes. [`Faults::NONE`] turns every fault off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// A segment, or a connection's first packet, takes up to `latency_max_ns` more; a
    /// completion reaches the loop up to `latency_max_ns` late (never before an earlier one
    /// of the same descriptor).
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
    /// A cancel misses the operation it targets, which goes on waiting: the cancel answers
    /// `ENOENT` and the target waits on; or `EALREADY` and the target waits on; or
    /// `EALREADY` and the target ends with `EINTR` up to a millisecond later (even odds): the
    /// last as io_uring does on 6.1 and 6.12 for an `openat` blocked in a kernel worker, the
    /// others where a kernel worker is just taking the operation up. The
    /// loop sends the cancel again while the target waits (`Io::cancel`), so a program sees
    /// the same results as without the fault. Resends are faulted alike; the cancels of a
    /// loop's drop never are.
    pub lost_cancel: u32,
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
        lost_cancel: 0,
        planted_bug: false,
    };

    /// Every fault on, at the rates the fuzzers use (each is met many times over a thousand
    /// seeds of ten thousand operations).
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
            lost_cancel: 100_000,
            planted_bug: false,
        }
    }
}

/// A simulated world's set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

/// Faults injected, by kind (see [`Faults`] for each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Segments, first packets and completions given extra latency.
    pub latency: u64,
    /// Reaps whose completions were reordered.
    pub reorder: u64,
    /// Short sends, receives, reads and writes.
    pub short_io: u64,
    /// Connections reset by a send.
    pub reset: u64,
    /// Connects refused.
    pub refused: u64,
    /// Operations delayed before their first try.
    pub delay: u64,
    /// Accepts failed with `EMFILE`.
    pub emfile: u64,
    /// Disk operations failed with `EIO`.
    pub disk_eio: u64,
    /// Writes torn by a crash.
    pub torn_write: u64,
    /// Cancels that missed their target.
    pub lost_cancel: u64,
    /// Bytes dropped by the planted bug (tests only).
    pub planted_bug: u64,
}

/// What a simulated world did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Connections made (connects, accepted or not, and socket pairs).
    pub connections: u64,
    /// Bytes accepted by sends.
    pub bytes_sent: u64,
    /// Bytes handed to receives.
    pub bytes_received: u64,
    /// Faults injected, every kind together.
    pub faults_injected: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Simulated crashes.
    pub crashes: u64,
    /// Simulated descriptors found closed behind the simulator's back (an `OwnedFd` dropped
    /// instead of closed through [`Io::close`](crate::Io::close)); see [`Sim`].
    pub dropped_descriptors: u64,
    /// Operations the simulation completed.
    pub completions: u64,
    /// Tries of a send (from a loop or a peer) that found the receiver's buffer full:
    /// backpressure at work (a send waiting for room is tried again at every event, and
    /// counts each time).
    pub sends_blocked: u64,
}
