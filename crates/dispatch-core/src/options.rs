//! `Options`: every limit and backend knob of an `Io`, fixed at `Io::new`.

use crate::stats::BackendKind;

/// The environment variable that forces a backend when `Options::backend` is `None`.
pub const BACKEND_ENV: &str = "DISPATCH_BACKEND";

/// Limits and knobs for one [`crate::Io`]. Fixed at construction; there is deliberately no
/// `Default`: [`Options::new`] names the one required limit and documents the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Operations in flight at once, counting each from its scheduling until its callback
    /// has started. Scheduling past it returns
    /// [`crate::ScheduleErrorKind::SlotsExhausted`]. Cancels have a budget of the same size
    /// of their own, so the slot table holds `2 * ops_max` slots. At least 1, below 2^24.
    ///
    /// Sizing rule: count every operation that can be pending at the same moment, closes and
    /// timers included, not only the steady state, and add the counts up. For a server with a
    /// table of connections: one for the accept (or its back-off timer), and one per table
    /// entry for its receive, send or close, provided an entry takes a new connection only
    /// once the old one's close has completed (as `examples/echo_minimal.rs` does):
    /// `ops_max = connections + 1`. A program that reuses an entry as soon as its close is
    /// scheduled must count one more close per entry (as `dispatch-net` does:
    /// `NetOptions::ops_max`). Cancels are not counted (they have a budget of their own), nor
    /// are deadlines ([`crate::Io::set_deadline`] takes no slot until it fires, and then one
    /// from the cancels' budget).
    pub ops_max: u32,
    /// The backend to use; `None` selects automatically (the `DISPATCH_BACKEND` environment
    /// variable, else io_uring with a fallback to epoll on Linux, kqueue elsewhere; never
    /// `sim`, which only this field, that variable or `Io::new_sim` selects; feature `sim`).
    pub backend: Option<BackendKind>,
    /// io_uring set-up, used when the io_uring backend runs.
    pub uring: UringOptions,
    /// The receive buffer pool of [`crate::Io::recv_pooled`] and
    /// [`crate::Io::recv_multishot`].
    pub pool: PoolOptions,
    /// Registered buffers for file I/O (default: none).
    pub registered: RegisteredOptions,
    /// epoll: wait with `epoll_pwait2` (nanosecond timeouts) where the kernel has it. `false`
    /// forces `epoll_wait`, whose millisecond timeouts are rounded up (never early), as on
    /// kernels before 5.11.
    pub epoll_pwait2: bool,
    /// epoll and kqueue: how many worker threads perform file operations (read and write,
    /// plain and vectored, fsync and fdatasync, fallocate, ftruncate, statx, openat,
    /// renameat, unlinkat, mkdirat) off the loop's thread; `0` runs them inline, in the
    /// loop's thread. At most 64. The threads start at `Io::new` and stop when the `Io` is
    /// dropped; their queues are allocated then, so nothing is allocated per operation.
    /// io_uring ignores it (the kernel performs file operations, in its own workers where
    /// they would block) and so does the simulator (its disk is in memory).
    /// [`crate::Stats::file_workers`] says how many a loop runs.
    ///
    /// The default, [`Options::new`]'s, is **1**, chosen from a measurement
    /// (`examples/fsync_stall.rs`, docs/BENCHMARKS.md): one loop on epoll serving an echo
    /// client that pings every millisecond while the same loop writes 400 MiB to a file and
    /// fsyncs it. Inline, the client's p99 over that window was the fsync's own duration
    /// (median of 6 runs: 131 ms; up to 1.3 s when the writes themselves were slow), since
    /// no ping is answered while the loop is inside `fsync`; with one worker it was 10 ms,
    /// with two 4 ms, both within the noise of the shared 2-vCPU machine measured on (its
    /// idle baseline's p99 ranged from 0.2 to 28 ms), against a fast virtual disk on which
    /// the fsync took about 120 ms: a real disk's seconds would stall an inline loop for
    /// seconds. The price is a hand-off per operation: a cached 4 KiB read, one at a time,
    /// took 0.8 µs inline and about 10 µs through a worker. One worker rather than more
    /// because one runs file operations exactly as inline does, one at a time in the order
    /// they were scheduled, so a program gets the same results with the default whatever
    /// it assumed; with more, operations in flight together run concurrently, in any order,
    /// as on io_uring (schedule an `fsync` from its write's callback, not beside it), which
    /// pays off only for a program with several independent file operations in flight.
    /// `0` suits a program whose file operations are few, fast and on a local disk (as
    /// TigerBeetle runs them on macOS), where 10 µs each matters more than a stall.
    ///
    /// Inline, a slow file operation stalls every socket of the loop for its whole duration;
    /// with workers, the loop hands the operation over and goes on serving its sockets.
    /// Close is not a file operation here: it stays inline on every descriptor.
    ///
    /// Cancels and deadlines work as for every operation: one still queued for a worker is
    /// taken back and ends `ECANCELED` (`ETIMEDOUT` for a deadline); one a worker is
    /// performing cannot be interrupted and ends with its real result, as an operation the
    /// kernel is performing does on io_uring. Dropping the `Io` waits for the operations the
    /// workers are performing (each worker runs one syscall at a time), up to the 10 s it
    /// waits for the kernel on io_uring; past that it leaves those workers to finish alone,
    /// each owning the buffer it writes into, so nothing is freed under it.
    pub file_workers: u32,
}

/// The receive buffer pool: `buffers` buffers of `buffer_size` bytes, allocated once at
/// `Io::new` (`buffers * buffer_size` bytes in all). Pooled receives pick a buffer only when
/// data arrives, so idle connections pin none. `buffers == 0`: no pool (pooled receives are
/// refused with [`crate::ScheduleErrorKind::NoPool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolOptions {
    /// How many buffers (at most 32768).
    pub buffers: u32,
    /// Bytes per buffer (at least 1, at most 16 MiB): the most one receive delivers.
    pub buffer_size: u32,
}

impl PoolOptions {
    /// `buffers` buffers of `buffer_size` bytes (`PoolOptions::new(0, 0)`: no pool).
    pub const fn new(buffers: u32, buffer_size: u32) -> PoolOptions {
        PoolOptions {
            buffers,
            buffer_size,
        }
    }
}

/// Registered buffers for file I/O ([`crate::Io::registered_buf`]): `buffers` page-aligned
/// buffers of `buffer_size` bytes, allocated once at `Io::new` and, on io_uring, registered
/// with the kernel once, so that a read or write from one skips pinning its pages on every
/// operation (`READ_FIXED`, `WRITE_FIXED`). On epoll, kqueue and the simulator they are
/// plain aligned buffers, and the same program runs. `buffers == 0` (the default): none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisteredOptions {
    /// How many buffers (at most 16384, the kernel's limit).
    pub buffers: u32,
    /// Bytes per buffer: a multiple of 4096, at most 1 GiB (checked only when `buffers` is
    /// not 0).
    pub buffer_size: u32,
}

impl RegisteredOptions {
    /// `buffers` buffers of `buffer_size` bytes (`RegisteredOptions::new(0, 0)`: none).
    pub const fn new(buffers: u32, buffer_size: u32) -> RegisteredOptions {
        RegisteredOptions {
            buffers,
            buffer_size,
        }
    }
}

/// io_uring set-up knobs. Each is used where the kernel has it: a set-up flag the kernel
/// refuses (`EINVAL` from `io_uring_setup`, a kernel older than the flag) is given up, newest
/// first, and the loop runs io_uring without it, never falling back to epoll for it; the
/// first such loop of a process says so on stderr, and [`crate::Stats::uring`] says what
/// each loop uses. On Linux 5.10, for example, none of the four set-up flags is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringOptions {
    /// Submission queue entries: the most operations one `io_uring_enter` submits. Operations
    /// scheduled past it wait in the overflow queue for the next batch. At least 1.
    pub sq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (requires `single_issuer`).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`.
    pub submit_all: bool,
    /// Wait with an `IORING_FEAT_EXT_ARG` timeout where the kernel has it. `false` forces the
    /// fallback used on kernels before 5.11: a timeout SQE pushed with the wait.
    pub ext_arg: bool,
    /// Lend pool buffers to the kernel through a provided-buffer ring
    /// (`IORING_REGISTER_PBUF_RING`, 5.19) where the kernel has it. `false` masks it (as on
    /// kernels before 5.19): the loop then picks a buffer for a non-blocking receive that
    /// returns at once, and waits for data with a poll holding none, so an idle pooled
    /// receive pins no buffer here either; it costs a submission per step.
    pub pbuf_ring: bool,
    /// Multishot receive (`IORING_RECV_MULTISHOT`, 6.0) and accept (`IORING_ACCEPT_MULTISHOT`)
    /// where the kernel has them (probed at set-up). `false` masks them: the loop re-arms a
    /// single-shot operation after each completion instead, with the same results.
    pub multishot: bool,
    /// Submit the optional file operations to the kernel with their own opcodes where it
    /// has them (probed at set-up: vectored read and write, fallocate, statx, renameat,
    /// unlinkat, mkdirat, ftruncate; see [`crate::UringFeatures::file_opcodes`]). `false`
    /// masks them, as on a kernel that lacks them all: each then runs as a syscall in the
    /// loop's thread when the loop hands it to the ring (at scheduling when the submission
    /// queue has room, else when the overflow queue drains), and a `NOP` delivers its result
    /// through the ring, with the same callbacks. Two consequences: a cancel scheduled after
    /// it finds it already done (its callback has its real result, the cancel answers `Ok`,
    /// as the cancel contract allows); and a vectored read or write on a pipe or socket
    /// behaves as on epoll with file operations inline: it blocks the loop's thread on a
    /// blocking descriptor, and answers `EAGAIN` on a non-blocking one, where the kernel's
    /// opcode waits.
    pub file_opcodes: bool,
    /// Batch waiting: a turn that blocks waits for up to `batch_events` completions (fewer if
    /// fewer operations are in the kernel), for at most `batch_wait_us` microseconds from
    /// the start of the wait; then it returns with whatever is ready, or, with nothing
    /// ready, sleeps on until the first completion (or the run's deadline). One
    /// `io_uring_enter` then serves a whole batch, which is how a busy server gets far below
    /// one syscall per message; the price is up to `batch_wait_us` of added latency per
    /// turn. A batch wait that gathers at most one completion (beyond those of what it
    /// submitted) is skipped for the next 16 blocking waits, twice as many after each
    /// further miss in a row, up to 1024 (`Stats::batch_waits` counts the waits that used
    /// it): a lone client in a ping-pong pays it on a few of its first round trips (5 in its
    /// first 500), then on one in 1024 at most. `1` (the default) waits for the first
    /// completion only (and turns the batch wait off). At least 1.
    pub batch_events: u32,
    /// The longest a blocking turn waits for `batch_events` completions, in microseconds
    /// (`0`, the default: no batch wait). Needs `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12) and
    /// `ext_arg`; where the kernel lacks it the loop waits for the first completion only
    /// (waiting for several without a bound could stall a quiet connection), and
    /// [`crate::Stats::batch_wait_us`] reports 0 (as it does with `batch_events: 1`). At
    /// most 1,000,000.
    pub batch_wait_us: u32,
}

impl Options {
    /// `ops_max` operations in flight and these defaults:
    /// - `backend: None` (automatic selection);
    /// - `registered: RegisteredOptions { buffers: 0, buffer_size: 0 }`: no registered buffers;
    /// - `pool: PoolOptions { buffers: 0, buffer_size: 0 }`: no pool, so pooled receives are
    ///   refused until one is configured;
    /// - `epoll_pwait2: true`;
    /// - `file_workers: 1`: file operations on one worker thread on epoll and kqueue (see
    ///   [`Options::file_workers`] for the measurement behind it);
    /// - `uring`: an SQ of `min(ops_max, 256)` entries; `single_issuer`, `defer_taskrun` and
    ///   `submit_all` on (the flags measured fastest here: see `cargo xtask bench`);
    ///   `coop_taskrun` off; `ext_arg`, `pbuf_ring`, `multishot` and `file_opcodes` on (each
    ///   used only where the kernel has it); no batch wait (`batch_events: 1`,
    ///   `batch_wait_us: 0`).
    ///
    /// Every field is checked by `Io::new`, whichever backend runs (`uring.sq_entries` 0 is
    /// refused even on epoll); `pool.buffer_size` only when `pool.buffers > 0`, and
    /// `registered.buffer_size` only when `registered.buffers > 0`.
    pub const fn new(ops_max: u32) -> Options {
        let sq_entries = if ops_max < 256 { ops_max } else { 256 };
        Options {
            ops_max,
            backend: None,
            epoll_pwait2: true,
            file_workers: FILE_WORKERS_DEFAULT,
            pool: PoolOptions::new(0, 0),
            registered: RegisteredOptions::new(0, 0),
            uring: UringOptions {
                sq_entries: if sq_entries == 0 { 1 } else { sq_entries },
                single_issuer: true,
                defer_taskrun: true,
                coop_taskrun: false,
                submit_all: true,
                ext_arg: true,
                pbuf_ring: true,
                multishot: true,
                file_opcodes: true,
                batch_events: 1,
                batch_wait_us: 0,
            },
        }
    }

    /// The slot table's size: `ops_max` operations and as many cancels beside them. Backends
    /// size their per-slot tables with it.
    pub(crate) fn slots_max(&self) -> u32 {
        self.ops_max * 2
    }

    /// Checks the limits; `Io::new` calls it.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.ops_max == 0 {
            return Err("ops_max must be at least 1");
        }
        if self.ops_max >= OPS_MAX_LIMIT {
            return Err("ops_max must be below 2^24");
        }
        if self.uring.sq_entries == 0 {
            return Err("uring.sq_entries must be at least 1");
        }
        if self.uring.sq_entries > 32_768 {
            return Err("uring.sq_entries must be at most 32768 (the kernel's limit)");
        }
        if self.registered.buffers > 16_384 {
            return Err("registered.buffers must be at most 16384");
        }
        let size = self.registered.buffer_size;
        if self.registered.buffers > 0
            && (size == 0 || !size.is_multiple_of(4096) || size > 1 << 30)
        {
            return Err("registered.buffer_size must be a multiple of 4096, at most 1 GiB");
        }
        if self.pool.buffers > 32_768 {
            return Err("pool.buffers must be at most 32768");
        }
        if self.pool.buffers > 0 && !(1..=1 << 24).contains(&self.pool.buffer_size) {
            return Err("pool.buffer_size must be between 1 and 16 MiB");
        }
        if self.uring.batch_events == 0 {
            return Err("uring.batch_events must be at least 1");
        }
        if self.uring.batch_wait_us > 1_000_000 {
            return Err("uring.batch_wait_us must be at most 1000000 (one second)");
        }
        if self.file_workers > FILE_WORKERS_MAX {
            return Err("file_workers must be at most 64");
        }
        if self.uring.defer_taskrun && !self.uring.single_issuer {
            return Err("uring.defer_taskrun requires uring.single_issuer");
        }
        Ok(())
    }
}

/// The most file workers one loop may have (`Options::file_workers`).
pub(crate) const FILE_WORKERS_MAX: u32 = 64;

/// `Options::new`'s `file_workers`, chosen from the measurement in docs/BENCHMARKS.md.
const FILE_WORKERS_DEFAULT: u32 = 1;

/// Exclusive upper bound on `ops_max`: slot indices stay far from the internal `user_data`
/// values, and the CQ (sized from `ops_max`) stays within the kernel's limit.
pub(crate) const OPS_MAX_LIMIT: u32 = 1 << 24;
