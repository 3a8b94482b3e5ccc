//! `sys-uring`: io_uring rings with explicit set-up options, a probe that says what the kernel
//! supports, and a submission/completion interface that keeps the kernel's unsafe contract
//! visible.
//!
//! This crate is usable on its own by someone who only wants rings: it knows nothing of
//! callbacks, slots or loops. `dispatch-loop` builds its io_uring backend on top of it.
//!
//! ```no_run
//! # #[cfg(target_os = "linux")] {
//! use sys_uring::{opcode, Ring, RingOptions};
//!
//! let mut ring = Ring::new(&RingOptions::new(8)).expect("io_uring unavailable");
//! let nop = opcode::Nop::new().build().user_data(7);
//! // SAFETY: a nop references no memory.
//! unsafe { ring.push(&nop) }.expect("fresh ring has room");
//! ring.enter(1, None).expect("io_uring_enter");
//! let mut seen = Vec::new();
//! ring.reap(|cqe| seen.push((cqe.user_data, cqe.result)));
//! assert_eq!(seen, vec![(7, 0)]);
//! # }
//! ```
//!
//! On targets other than Linux the crate is empty, so a workspace that names it still builds.

#[cfg(target_os = "linux")]
mod buf_ring;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod probe;
#[cfg(target_os = "linux")]
mod ring;

#[cfg(target_os = "linux")]
pub use buf_ring::{BufRing, BufRingMut, BUF_RING_ENTRIES_MAX};
#[cfg(target_os = "linux")]
pub use error::{SetupError, Unavailable};
#[cfg(target_os = "linux")]
pub use io_uring::{opcode, squeue, types};
#[cfg(target_os = "linux")]
pub use probe::{probe, Probe, REQUIRED_OPCODES};
#[cfg(target_os = "linux")]
pub use ring::{Cqe, Ring, RingOptions, SqFull, MIN_WAIT_TIMEOUT_CAP_NS};

// The error types are `Error + Send + Sync + 'static` (C-GOOD-ERR).
#[cfg(target_os = "linux")]
const _: () = {
    const fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<SetupError>();
    assert_error::<SqFull>();
};
