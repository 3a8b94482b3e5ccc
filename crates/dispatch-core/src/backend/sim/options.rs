//! The public options and counters of the simulator (`Faults`, `SimOptions`, `FaultCounts`,
//! `SimStats`), defined beside the backend that reads them and re-exported by
//! `dispatch_loop::sim`, so that the import points from the public face down to the backend.

#[allow(unused_imports, reason = "named by the doc links")]
use super::Sim;

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
    /// A file read, write or fsync fails with `EIO`. A failed fsync settles the file's
    /// unsynced writes as a crash would (each kept, lost or torn) and forgets them, as
    /// Linux does after a writeback error: a later fsync succeeds without writing them.
    pub disk_eio: u32,
    /// At a crash (or a failed fsync), each write not yet fsynced is torn (part of it
    /// survives: a prefix cut at a 512-byte sector boundary, a prefix cut anywhere, or some
    /// of its sectors, each shape at even odds); otherwise it survives whole or is lost,
    /// even odds.
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
    /// A datagram is lost on its way (`Sim::udp_bind`'s sockets).
    pub datagram_loss: u32,
    /// A datagram arrives twice, each copy with its own latency.
    pub datagram_duplicate: u32,
    /// A datagram is held back on its way, up to `SimOptions::latency_max_ns` more, and
    /// datagrams sent after it to the same socket may overtake it. Without this fault the
    /// datagrams toward one socket arrive in the order they were sent (each still with a
    /// latency of its own, never earlier than the one before), as on a quiet path.
    pub datagram_reorder: u32,
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
        datagram_loss: 0,
        datagram_duplicate: 0,
        datagram_reorder: 0,
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
            datagram_loss: 20_000,
            datagram_duplicate: 10_000,
            datagram_reorder: 50_000,
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
    /// The simulated disk's size: files take whole 4 KiB blocks up to their size or what
    /// `fallocate` reserved, and a write needing blocks beyond the capacity is short or
    /// fails with `ENOSPC` (as does a `fallocate`); space reserved never fails.
    pub disk_capacity_bytes: u64,
}

impl SimOptions {
    /// `seed`, faults off, 64 KiB socket buffers, 10–100 µs latency, 1024 descriptors, a
    /// disk of 1 GiB.
    pub const fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            faults: Faults::NONE,
            socket_buffer_bytes: 65_536,
            latency_min_ns: 10_000,
            latency_max_ns: 100_000,
            descriptors_max: 1024,
            disk_capacity_bytes: 1 << 30,
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
    /// Datagrams lost.
    pub datagram_loss: u64,
    /// Datagrams delivered twice.
    pub datagram_duplicate: u64,
    /// Datagrams held back, for later ones to overtake.
    pub datagram_reorder: u64,
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
    /// Writes and `fallocate`s refused with `ENOSPC` (the disk's capacity reached).
    pub disk_full: u64,
    /// Tries of a send (from a loop or a peer) that found the receiver's buffer full:
    /// backpressure at work (a send waiting for room is tried again at every event, and
    /// counts each time).
    pub sends_blocked: u64,
}
