//! `Stats`: what the loop did, so a user can see batching work (syscalls per operation).

use std::fmt;

/// Which backend an `Io` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Linux io_uring: operations are submitted in batches and performed by the kernel.
    IoUring,
}

impl BackendKind {
    /// The backend's name as `DISPATCH_BACKEND` and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters since `Io::new`. Cheap to copy; read them with `Io::stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The backend in use.
    pub backend: BackendKind,
    /// Syscalls the loop made to submit and wait (`io_uring_enter`).
    pub syscalls: u64,
    /// Operations handed to the kernel.
    pub ops_submitted: u64,
    /// Operations whose callback has run.
    pub ops_completed: u64,
    /// The most operations submitted by one syscall.
    pub batch_max: u32,
    /// Operations that found the submission queue full and waited in the overflow queue.
    pub overflow_parked: u64,
    /// The overflow queue's greatest length.
    pub overflow_len_max: u32,
    /// Times the kernel reported its completion queue overcommitted (`EBUSY`, or the
    /// `IORING_SQ_CQ_OVERFLOW` flag); each was handled by reaping and entering again.
    pub cq_overflows: u64,
}

impl Stats {
    pub(crate) fn new(backend: BackendKind) -> Stats {
        Stats {
            backend,
            syscalls: 0,
            ops_submitted: 0,
            ops_completed: 0,
            batch_max: 0,
            overflow_parked: 0,
            overflow_len_max: 0,
            cq_overflows: 0,
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
