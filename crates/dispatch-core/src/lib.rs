//! `dispatch-loop`: a callback-based I/O loop that batches every operation scheduled since
//! the last syscall into one, over io_uring (Linux), epoll (Linux, as a fallback) and kqueue
//! (FreeBSD, macOS), and a deterministic simulator (module `sim`, behind the `sim` feature:
//! virtual time, a simulated network and disk, seeded faults) for testing programs built on
//! the loop. See [`Io`]'s Portability section for how the backends differ.
//!
//! The application owns a context `C` and schedules operations on an [`Io<C>`] from anywhere,
//! most often from inside a callback. Each operation carries a [`Tag`] and a plain function
//! pointer; when it completes, the callback receives the context, the loop (to schedule more),
//! the tag and the result. The loop owns a fixed table of operation slots sized at
//! [`Io::new`], and owns every buffer the kernel may touch until its callback hands it back:
//! no allocation per operation, no use-after-free when operations are cancelled or the loop
//! is dropped.
//!
//! ```
//! use dispatch_loop::{Io, Options};
//!
//! #[derive(Default)]
//! struct Ctx { fired: Vec<u64> }
//!
//! let mut io: Io<Ctx> = match Io::new(&Options::new(64)) {
//!     Ok(io) => io,
//!     Err(error) => { eprintln!("skipped: {error}"); return; }
//! };
//! let mut ctx = Ctx::default();
//! for tag in [3_u64, 1, 2] {
//!     io.timeout(tag, tag * 1_000_000, |ctx: &mut Ctx, _io, tag, result| {
//!         result.expect("timeout");
//!         ctx.fired.push(tag);
//!     })
//!     .expect("64 slots are plenty");
//! }
//! io.run_until_idle(&mut ctx).expect("run");
//! assert_eq!(ctx.fired, vec![1, 2, 3]);
//! assert_eq!(io.stats().ops_completed, 3);
//! ```
//!
//! Whole programs, each run on every backend by the workspace's tests, are in the
//! `examples` package: `taste.rs` (an echo over a socket pair), `files.rs` (openat, write,
//! fsync, read, close), `timeouts.rs` (timers, a deadline, cancel) and `echo_minimal.rs` (a
//! TCP echo server, with how to size `ops_max`). Run one with
//! `cargo run -p examples --example files`. Servers: see the `dispatch-net` crate, which
//! adds pooled, backpressured connections on top of [`Io::recv_pooled`],
//! [`Io::accept_multishot`] and [`Io::set_deadline`].
//!
//! See `docs/ARCHITECTURE.md` for the life of one operation and the invariants.
//!
//! # Features
//!
//! - `sim` (off by default): the deterministic simulator, module `sim`, `Io::new_sim`
//!   and `Io::sim`, and the `sim` backend ([`BackendKind::Sim`], `DISPATCH_BACKEND=sim`).
//!   Meant for tests (a dev-dependency with `features = ["sim"]`), so that a production
//!   build carries none of it. Without it, asking for `sim` through `DISPATCH_BACKEND` or
//!   [`Options::backend`] is [`InitError::FeatureDisabled`].

mod aligned;
mod backend;
mod clock;
mod completion;
mod datagram;
mod error;
mod filebuf;
mod io;
mod msg;
mod operation;
mod options;
mod outbuf;
mod poll;
mod pool;
#[cfg(feature = "sim")]
pub mod sim;
mod slots;
mod stats;
mod timer;
mod waker;

pub use crate::aligned::AlignedBuf;
pub use crate::datagram::{Datagram, DATAGRAM_HEADROOM};
pub use crate::error::{DeadlineError, InitError};
pub use crate::io::{
    AcceptCallback, BufCallback, CountCallback, FdCallback, FileCallback, FileVectoredCallback, Io,
    IoBuf, PoolSendCallback, PooledCallback, StatCallback, UnitCallback, VectoredCallback,
};
pub use crate::io::{DatagramCallback, MsgCallback};
pub use crate::msg::{Msg, MSG_FDS_MAX, MSG_IOV_MAX};
pub use crate::operation::{
    BufResult, FileStat, OpId, ScheduleError, ScheduleErrorKind, Shot, Tag,
};
pub use crate::options::{Options, PoolOptions, RegisteredOptions, UringOptions, BACKEND_ENV};
pub use crate::outbuf::{OutBuf, GATHER_MAX};
pub use crate::pool::PoolBuf;
pub use crate::stats::{BackendKind, Fallback, Stats, UringFeatures};
pub use crate::waker::Waker;

// Readiness of any descriptor (issue 21).
pub use crate::io::{PollCallback, PollShotCallback};
pub use crate::poll::PollEvents;

/// `AT_FDCWD`: pass as `dir` to [`Io::openat`] to open relative to the working directory.
/// The `open(2)` flags (`O_RDONLY`, `O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, ...) and
/// the mode come from the `libc` crate; `examples/files.rs` opens, writes, flushes, reads
/// and closes a file.
pub const AT_FDCWD: std::os::fd::RawFd = libc::AT_FDCWD;

/// [`Io::renameat`]'s flag that makes the rename fail with `EEXIST` rather than replace an
/// existing target (Linux's `RENAME_NOREPLACE`; macOS's `RENAME_EXCL`; not on FreeBSD).
pub const RENAME_NOREPLACE: u32 = 1;

// The error types are `Error + Send + Sync + 'static`, so that they box into
// `Box<dyn Error + Send + Sync>` and cross threads (C-GOOD-ERR); `ScheduleError<T>` is when
// the value it returns is (buffers, descriptors, paths; not a pool buffer, which belongs to
// its thread's loop: `into_kind()` then gives `ScheduleErrorKind`, an error of its own).
const _: () = {
    const fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<InitError>();
    assert_error::<DeadlineError>();
    assert_error::<ScheduleError<Vec<u8>>>();
    assert_error::<ScheduleError<std::os::fd::OwnedFd>>();
    assert_error::<ScheduleError<std::ffi::CString>>();
    assert_error::<ScheduleError<()>>();
    assert_error::<ScheduleErrorKind>();
};

// One loop per thread: `Io` must not be `Send` (compile-time check).
const _: fn() = || {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    let _ = <Io<()> as AmbiguousIfSend<_>>::some_item;
};
