//! `Stats`: what the loop did, so a user can see batching work (syscalls per operation).

use std::fmt;

/// Which backend an `Io` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// Linux io_uring: operations are submitted in batches and performed by the kernel.
    IoUring,
    /// Linux epoll: readiness, then the loop performs each operation.
    Epoll,
    /// FreeBSD and macOS kqueue: readiness with a batched changelist.
    Kqueue,
    /// The kqueue backend's logic over `sys_kqueue::Fake`, a kevent double built on
    /// `poll(2)`: how the kqueue code runs and is tested on Linux. Not a production backend.
    KqueueFake,
    /// The deterministic simulator (`dispatch_loop::sim`): virtual time, an in-memory network
    /// and disk, seeded faults. Never chosen automatically; not a production backend.
    Sim,
}

impl BackendKind {
    /// Every backend, in the order `DISPATCH_BACKEND`'s documentation lists them.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::IoUring,
        BackendKind::Epoll,
        BackendKind::Kqueue,
        BackendKind::KqueueFake,
        BackendKind::Sim,
    ];

    /// The backend's name as `DISPATCH_BACKEND` and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
            BackendKind::Kqueue => "kqueue",
            BackendKind::KqueueFake => "kqueue-fake",
            BackendKind::Sim => "sim",
        }
    }

    /// The backend named `name` (`io_uring` or `io-uring`, `epoll`, `kqueue`, `kqueue-fake`,
    /// `sim`).
    pub fn from_name(name: &str) -> Option<BackendKind> {
        match name {
            "io-uring" => Some(BackendKind::IoUring),
            _ => BackendKind::ALL
                .into_iter()
                .find(|kind| kind.name() == name),
        }
    }
}

/// Why the loop runs on a fallback backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// The backend that could not be used.
    pub from: BackendKind,
    /// Why, in words (for example "blocked by seccomp or a security policy (EPERM)").
    pub reason: &'static str,
    /// The OS error behind it, if there was one.
    pub errno: Option<i32>,
}

impl Fallback {
    #[cfg(target_os = "linux")]
    pub(crate) fn from_setup(error: &sys_uring::SetupError) -> Fallback {
        Fallback {
            from: BackendKind::IoUring,
            reason: error.unavailable.summary(),
            errno: error.source.raw_os_error(),
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unavailable: {}", self.from, self.reason)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the io_uring backend uses, after stepping down to what the kernel has: each field is
/// on only where it was asked for in [`crate::UringOptions`] (or, for `min_timeout`, a batch
/// wait was) and the kernel has it. Read it from [`Stats::uring`]; `cargo xtask kernel-test`
/// tabulates it per kernel (docs/KERNELS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringFeatures {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19).
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL` (5.18).
    pub submit_all: bool,
    /// `IORING_FEAT_EXT_ARG` (5.11): waits carry their timeout; else a timeout SQE is pushed
    /// with each timed wait.
    pub ext_arg: bool,
    /// A provided-buffer ring for the pool (5.19); else pooled receives try, then poll.
    /// `false` also when the loop has no pool.
    pub pbuf_ring: bool,
    /// Multishot receive (6.0) and accept; else the loop re-arms single shots.
    pub multishot: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (6.12) for the batch wait; else no batch wait.
    pub min_timeout: bool,
    /// How many of the optional file opcodes the kernel runs for the loop (of 8: `READV`,
    /// `WRITEV` 5.1; `FALLOCATE`, `STATX` 5.6; `RENAMEAT`, `UNLINKAT` 5.11; `MKDIRAT` 5.15;
    /// `FTRUNCATE` 6.9); the others run in the loop's thread. 0 when masked
    /// (`UringOptions::file_opcodes`).
    pub file_opcodes: u32,
    /// The loop's registered buffers (`Options::registered`) were registered with the
    /// kernel (`IORING_REGISTER_BUFFERS`): reads and writes from them are `READ_FIXED` and
    /// `WRITE_FIXED`. `false` without any, or where the kernel refused them.
    pub registered_buffers: bool,
    /// Set-up flags asked for that the kernel refused (`EINVAL`), dropped one at a time,
    /// newest kernel feature first, until a ring could be created; 0 when none was. A bit
    /// set per flag: `STEPPED_DOWN_*`.
    pub stepped_down: u8,
}

impl UringFeatures {
    /// `stepped_down`: `IORING_SETUP_DEFER_TASKRUN` was refused.
    pub const STEPPED_DOWN_DEFER_TASKRUN: u8 = 1;
    /// `stepped_down`: `IORING_SETUP_SINGLE_ISSUER` was refused.
    pub const STEPPED_DOWN_SINGLE_ISSUER: u8 = 2;
    /// `stepped_down`: `IORING_SETUP_COOP_TASKRUN` was refused.
    pub const STEPPED_DOWN_COOP_TASKRUN: u8 = 4;
    /// `stepped_down`: `IORING_SETUP_SUBMIT_ALL` was refused.
    pub const STEPPED_DOWN_SUBMIT_ALL: u8 = 8;

    /// The kernel flag names of the set-up flags in `stepped_down`, newest first.
    pub fn stepped_down_names(&self) -> impl Iterator<Item = &'static str> {
        setup_flag_names(self.stepped_down)
    }
}

/// The kernel names of the set-up flags whose `stepped_down` bits are in `bits`, newest first.
pub(crate) fn setup_flag_names(bits: u8) -> impl Iterator<Item = &'static str> {
    SETUP_FLAG_NAMES
        .into_iter()
        .filter(move |(bit, _)| bits & bit != 0)
        .map(|(_, name)| name)
}

/// Each set-up flag's `stepped_down` bit and kernel name, in the order they are given up.
pub(crate) const SETUP_FLAG_NAMES: [(u8, &str); 4] = [
    (
        UringFeatures::STEPPED_DOWN_DEFER_TASKRUN,
        "IORING_SETUP_DEFER_TASKRUN",
    ),
    (
        UringFeatures::STEPPED_DOWN_SINGLE_ISSUER,
        "IORING_SETUP_SINGLE_ISSUER",
    ),
    (
        UringFeatures::STEPPED_DOWN_COOP_TASKRUN,
        "IORING_SETUP_COOP_TASKRUN",
    ),
    (
        UringFeatures::STEPPED_DOWN_SUBMIT_ALL,
        "IORING_SETUP_SUBMIT_ALL",
    ),
];

/// Counters since `Io::new`. Cheap to copy; read them with `Io::stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The backend in use.
    pub backend: BackendKind,
    /// Set when automatic selection fell back from io_uring, with the reason. A set-up flag
    /// the kernel refuses is not a reason to leave io_uring: the loop steps down to the
    /// flags the kernel has and says so in [`Stats::uring`] instead.
    pub fallback: Option<Fallback>,
    /// On io_uring, what the loop uses of what it asked for on this kernel; `None` on the
    /// other backends.
    pub uring: Option<UringFeatures>,
    /// Syscalls the loop's thread made: `io_uring_enter` on io_uring, plus the syscalls of
    /// file operations it performs itself there (an opcode the kernel lacks, or
    /// `UringOptions::file_opcodes` off); on readiness backends every wait, interest change
    /// and operation syscall (recv, send, accept, ..., and file operations run inline). File
    /// workers' syscalls are counted apart, in [`Stats::worker_syscalls`].
    pub syscalls: u64,
    /// Operations handed to the backend (the kernel's queue on io_uring, the readiness
    /// engine on epoll and kqueue). A multishot the loop re-arms counts once per arming, so
    /// `ops_submitted` shows what kernel multishot saves.
    pub ops_submitted: u64,
    /// Operations whose final callback has run (a multishot counts once, however many
    /// callbacks it had).
    pub ops_completed: u64,
    /// The most operations submitted by one syscall (io_uring), or started in one turn
    /// (readiness backends).
    pub batch_max: u32,
    /// Operations that found the submission queue full and waited in the overflow queue.
    pub overflow_parked: u64,
    /// The overflow queue's greatest length.
    pub overflow_len_max: u32,
    /// Times the kernel reported its completion queue overcommitted (`EBUSY`, or the
    /// `IORING_SQ_CQ_OVERFLOW` flag); each was handled by reaping and entering again.
    pub cq_overflows: u64,
    /// Operations whose deadline ([`crate::Io::set_deadline`]) passed before they finished,
    /// cancelled by the loop and reported as `ETIMEDOUT`.
    pub deadlines_expired: u64,
    /// Cancels the loop sent again because the kernel answered "not found" while the target
    /// was still in flight (io_uring before the io-wq cancel fix; see [`crate::Io::cancel`]).
    pub cancels_resent: u64,
    /// Waits of pooled receives for a buffer: a receive that had something to read found
    /// the pool empty and waited for buffers to come back (it is not failed). Each wait
    /// counts once, however often the receive is tried again before it gets a buffer; an
    /// idle receive never counts, even on an empty pool (it waits for data holding none).
    /// A count that keeps growing means the pool is too small for the load. (On io_uring
    /// with a provided-buffer ring, a receive submitted just as others take the last
    /// buffers of the ring may count without data: the kernel takes a buffer first.)
    pub pool_waits: u64,
    /// The batch wait in effect, in microseconds: `UringOptions::batch_wait_us` on io_uring
    /// where the kernel has `IORING_FEAT_MIN_TIMEOUT` (6.12); 0 where it is off (including
    /// `batch_events: 1`), where the kernel lacks it or `ext_arg` is masked, and on readiness
    /// backends (which have no batch wait).
    pub batch_wait_us: u32,
    /// Blocking waits that used the batch wait. A wait that brought in at most one
    /// completion beyond those of the operations it submitted did not pay (a lone client in
    /// a ping-pong, whose next message waits for this reply): the next 16 blocking waits
    /// skip the batch wait, and each further miss in a row doubles that, up to 1024.
    pub batch_waits: u64,
    /// The file workers performing file operations off the loop's thread: epoll and kqueue
    /// with [`crate::Options::file_workers`] above 0. 0 where file operations run inline in
    /// the loop's thread (`file_workers: 0`), in the kernel (io_uring, which ignores the
    /// option) or on the simulator (which ignores it too).
    pub file_workers: u32,
    /// Syscalls the file workers made: each operation's own (`pread`, `fsync`, ...) and the
    /// signal that wakes the loop when a worker finishes and the loop had nothing from the
    /// workers left to collect. Not in [`Stats::syscalls`], which counts the loop's thread
    /// only (its read of that signal included), as io_uring's count leaves out what its
    /// kernel workers do; the lock and condition variable the loop and the workers share
    /// (std's futex calls, when one has to sleep or wake the other) are not counted.
    pub worker_syscalls: u64,
}

impl Stats {
    pub(crate) fn new(backend: BackendKind, fallback: Option<Fallback>) -> Stats {
        Stats {
            backend,
            fallback,
            uring: None,
            syscalls: 0,
            ops_submitted: 0,
            ops_completed: 0,
            batch_max: 0,
            overflow_parked: 0,
            overflow_len_max: 0,
            cq_overflows: 0,
            deadlines_expired: 0,
            cancels_resent: 0,
            pool_waits: 0,
            batch_wait_us: 0,
            batch_waits: 0,
            file_workers: 0,
            worker_syscalls: 0,
        }
    }

    /// Syscalls per completed operation, the number batching drives down; 0 before any.
    pub fn syscalls_per_op(&self) -> f64 {
        if self.ops_completed == 0 {
            return 0.0;
        }
        self.syscalls as f64 / self.ops_completed as f64
    }
}
