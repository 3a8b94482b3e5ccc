//! Backends: the one place a backend is selected, and the contract each one meets.
//!
//! A backend takes operations whose arguments live in the loop's argument table, gets them
//! to the kernel with as few syscalls as it can, and reports each one's result as
//! `(user_data, result)` with `result` either `>= 0` or `-errno`. The loop owns everything
//! else: slots, the overflow and completed queues, callbacks, cancellation bookkeeping and
//! stats.
//!
//! The contract ([`Backend`] dispatches to each implementation under the same names):
//! - `push(idx, user_data, &mut Args) -> Result<(), SqFull>`: queue one operation for the
//!   next flush. The caller guarantees `Args` does not move and is not touched until the
//!   backend reports `user_data`'s result. `SqFull` (io_uring only) means "flush first";
//!   nothing is lost.
//! - `flush(Wait, in_kernel, &mut [Args], &mut Stats) -> io::Result<()>`: submit everything
//!   pushed and, for `Wait::Within`/`Wait::Forever`, wait for at least one completion, in one
//!   syscall where the backend can. `Wait::Poll` never blocks. `EINTR` and CQ back-pressure
//!   are absorbed (the loop turns again).
//! - `reap(FnMut(user_data, result))`: hands over every known result without a syscall, and
//!   never runs a callback.
//! - `cancel_for_drop(user_data)`: cancel used by `Io`'s drop, which then reaps until every
//!   operation the backend holds has come back.
//!
//! Selection, in order: `Options::backend`, then the `DISPATCH_BACKEND` environment variable,
//! then the platform default: on Linux io_uring, probed (ring creation and every opcode the
//! loop uses), falling back to epoll with the reason logged once and kept in `Stats`; on
//! FreeBSD and macOS kqueue. A forced backend that cannot run is an error, never a silent
//! fallback.
// `push` passes io_uring's unsafe contract through; the readiness backends do not need it.
#![allow(unsafe_code)]

#[cfg(not(any(target_os = "linux", kqueue)))]
compile_error!("dispatch-loop runs on Linux (io_uring, epoll), FreeBSD and macOS (kqueue)");

pub(crate) mod file;
#[cfg(target_os = "linux")]
pub(crate) mod io_uring;
pub(crate) mod readiness;
#[cfg(feature = "sim")]
pub(crate) mod sim;

use std::io;

use std::sync::Arc;

use crate::aligned::RegisteredSet;
use crate::clock::Clock;
use crate::error::InitError;
use crate::operation::Args;
use crate::options::{Options, BACKEND_ENV};
use crate::pool::Pool;
use crate::stats::{BackendKind, Fallback, Stats, UringFeatures};
use crate::waker::Waker;

/// How long a flush may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Submit and reap; never block.
    Poll,
    /// Block until at least one completion, or for at most this many nanoseconds (0: do
    /// not block). Relative, so that backends need no clock of their own: the loop turns its
    /// deadline (on its own clock, virtual under `sim`) into this just before the flush.
    Within(u64),
    /// Block until at least one completion.
    Forever,
}

/// Why an operation could not be queued for the next flush; nothing is lost either way.
/// Only io_uring refuses a push: elsewhere the variants exist for the loop to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum PushError {
    /// The submission queue is full (io_uring): flush, then push again.
    SqFull,
    /// A pooled receive found the pool empty (io_uring without a provided-buffer ring,
    /// which picks the buffer at submission): wait for buffers to come back.
    NoBuffer,
}

#[cfg(target_os = "linux")]
type EpollEngine = readiness::Engine<readiness::epoll::EpollPoller>;
#[cfg(kqueue)]
type KqueueEngine = readiness::Engine<readiness::kqueue::KqueuePoller<sys_kqueue::System>>;
#[cfg(target_os = "linux")]
type KqueueFakeEngine = readiness::Engine<readiness::kqueue::KqueuePoller<sys_kqueue::Fake>>;

/// The backend an `Io` runs on, chosen at `Io::new`.
// One per loop, made once and never moved on the hot path: boxing the big variant would only
// add an indirection to every call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    #[cfg(target_os = "linux")]
    IoUring(io_uring::IoUringBackend),
    #[cfg(target_os = "linux")]
    Epoll(EpollEngine),
    #[cfg(kqueue)]
    Kqueue(KqueueEngine),
    #[cfg(target_os = "linux")]
    KqueueFake(KqueueFakeEngine),
    #[cfg(feature = "sim")]
    Sim(sim::SimBackend),
}

/// Calls the same method on whichever backend runs.
macro_rules! each {
    ($self:expr, $backend:ident => $call:expr) => {
        match $self {
            #[cfg(target_os = "linux")]
            Backend::IoUring($backend) => $call,
            #[cfg(target_os = "linux")]
            Backend::Epoll($backend) => $call,
            #[cfg(kqueue)]
            Backend::Kqueue($backend) => $call,
            #[cfg(target_os = "linux")]
            Backend::KqueueFake($backend) => $call,
            #[cfg(feature = "sim")]
            Backend::Sim($backend) => $call,
        }
    };
}

/// Calls the same method on whichever readiness engine runs, or `$uring` for io_uring, or
/// `$sim` for the simulator.
macro_rules! readiness {
    (
        $self:expr,
        $engine:ident => $call:expr,
        $uring:ident => $uring_call:expr,
        $sim:ident => $sim_call:expr
    ) => {
        match $self {
            #[cfg(feature = "sim")]
            Backend::Sim($sim) => $sim_call,
            #[cfg(target_os = "linux")]
            Backend::IoUring($uring) => $uring_call,
            #[cfg(target_os = "linux")]
            Backend::Epoll($engine) => $call,
            #[cfg(kqueue)]
            Backend::Kqueue($engine) => $call,
            #[cfg(target_os = "linux")]
            Backend::KqueueFake($engine) => $call,
        }
    };
}

impl Backend {
    /// Selects and creates the backend: `options.backend`, else `DISPATCH_BACKEND`, else the
    /// platform default. Returns the fallback taken, if any.
    pub(crate) fn new(
        options: &Options,
        pool: Option<&mut Pool>,
    ) -> Result<(Backend, Option<Fallback>), InitError> {
        let forced = match options.backend {
            Some(kind) => Some(kind),
            None => match std::env::var(BACKEND_ENV) {
                Ok(value) if value.is_empty() || value == "auto" => None,
                Ok(value) => {
                    Some(BackendKind::from_name(&value).ok_or(InitError::UnknownBackend(value))?)
                }
                Err(_) => None,
            },
        };
        match forced {
            Some(kind) => Ok((Backend::create(kind, options, pool)?, None)),
            None => Backend::auto(options, pool),
        }
    }

    #[cfg(target_os = "linux")]
    fn auto(
        options: &Options,
        mut pool: Option<&mut Pool>,
    ) -> Result<(Backend, Option<Fallback>), InitError> {
        match io_uring::IoUringBackend::new(options, pool.as_deref_mut()) {
            Ok(backend) => Ok((Backend::IoUring(backend), None)),
            Err(error) => {
                use std::sync::atomic::{AtomicBool, Ordering};
                let fallback = Fallback::from_setup(&error);
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    eprintln!("dispatch-loop: {error}; falling back to epoll");
                }
                Ok((
                    Backend::create(BackendKind::Epoll, options, pool)?,
                    Some(fallback),
                ))
            }
        }
    }

    #[cfg(kqueue)]
    fn auto(
        options: &Options,
        pool: Option<&mut Pool>,
    ) -> Result<(Backend, Option<Fallback>), InitError> {
        Ok((Backend::create(BackendKind::Kqueue, options, pool)?, None))
    }

    /// Creates exactly `kind`, or says why it cannot run here.
    fn create(
        kind: BackendKind,
        options: &Options,
        pool: Option<&mut Pool>,
    ) -> Result<Backend, InitError> {
        let slots_max = options.slots_max();
        // Readiness backends pick buffers from the pool's free list themselves.
        let _ = &pool;
        match kind {
            #[cfg(target_os = "linux")]
            BackendKind::IoUring => io_uring::IoUringBackend::new(options, pool)
                .map(Backend::IoUring)
                .map_err(InitError::Unavailable),
            #[cfg(target_os = "linux")]
            BackendKind::Epoll => {
                let poller = readiness::epoll::EpollPoller::new(options.epoll_pwait2)
                    .map_err(InitError::Os)?;
                readiness::Engine::new(poller, slots_max, options.file_workers)
                    .map(Backend::Epoll)
                    .map_err(InitError::Os)
            }
            #[cfg(kqueue)]
            BackendKind::Kqueue => {
                let kq = sys_kqueue::System::new(
                    readiness::kqueue::changes_max(slots_max),
                    readiness::kqueue::events_max(slots_max),
                )
                .map_err(InitError::Os)?;
                let poller =
                    readiness::kqueue::KqueuePoller::new(kq, slots_max).map_err(InitError::Os)?;
                readiness::Engine::new(poller, slots_max, options.file_workers)
                    .map(Backend::Kqueue)
                    .map_err(InitError::Os)
            }
            #[cfg(target_os = "linux")]
            BackendKind::KqueueFake => {
                let kq = sys_kqueue::Fake::new(readiness::kqueue::changes_max(slots_max))
                    .map_err(InitError::Os)?;
                let poller =
                    readiness::kqueue::KqueuePoller::new(kq, slots_max).map_err(InitError::Os)?;
                readiness::Engine::new(poller, slots_max, options.file_workers)
                    .map(Backend::KqueueFake)
                    .map_err(InitError::Os)
            }
            #[cfg(feature = "sim")]
            BackendKind::Sim => {
                use std::sync::atomic::{AtomicBool, Ordering};
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "dispatch-loop: backend sim: simulated I/O, virtual time, no real \
                         sockets or files (a test backend)"
                    );
                }
                let backend = sim::SimBackend::new(None, slots_max).map_err(InitError::Os)?;
                Ok(Backend::Sim(backend))
            }
            #[cfg(not(feature = "sim"))]
            BackendKind::Sim => Err(InitError::FeatureDisabled {
                backend: BackendKind::Sim,
                feature: "sim",
            }),
            #[allow(unreachable_patterns)]
            other => Err(InitError::UnsupportedBackend(other)),
        }
    }

    /// Registers the loop's registered buffers with the kernel (io_uring); elsewhere they
    /// stay plain aligned buffers.
    pub(crate) fn register_buffers(&mut self, set: &Arc<RegisteredSet>) {
        #[cfg(target_os = "linux")]
        if let Backend::IoUring(backend) = self {
            backend.register_buffers(set);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = set;
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(_) => BackendKind::IoUring,
            #[cfg(target_os = "linux")]
            Backend::Epoll(_) => BackendKind::Epoll,
            #[cfg(kqueue)]
            Backend::Kqueue(_) => BackendKind::Kqueue,
            #[cfg(target_os = "linux")]
            Backend::KqueueFake(_) => BackendKind::KqueueFake,
            #[cfg(feature = "sim")]
            Backend::Sim(_) => BackendKind::Sim,
        }
    }

    /// A loop on the simulated world `sim`.
    #[cfg(feature = "sim")]
    pub(crate) fn new_sim(options: &Options, sim: &sim::Sim) -> Result<Backend, InitError> {
        sim::SimBackend::new(Some(sim), options.slots_max())
            .map(Backend::Sim)
            .map_err(InitError::Os)
    }

    /// The simulator's virtual clock, on `sim`; `None` elsewhere (the loop reads the
    /// monotonic clock).
    pub(crate) fn clock(&self) -> Option<Clock> {
        #[cfg(feature = "sim")]
        if let Backend::Sim(sim) = self {
            return Some(sim.clock());
        }
        None
    }

    /// The simulated world, on `sim`.
    #[cfg(feature = "sim")]
    pub(crate) fn sim(&self) -> Option<&sim::Sim> {
        if let Backend::Sim(sim) = self {
            return Some(sim.sim());
        }
        None
    }

    pub(crate) fn waker(&self) -> Waker {
        each!(self, backend => backend.waker())
    }

    /// Queues one operation.
    ///
    /// # Safety
    /// `args` must not move, and its buffers must not be touched, until `reap` reports
    /// `user_data` (io_uring hands the kernel pointers into it).
    #[inline]
    pub(crate) unsafe fn push(
        &mut self,
        idx: u32,
        user_data: u64,
        args: &mut Args,
        pool: &mut Option<Pool>,
    ) -> Result<(), PushError> {
        // io_uring first, with one compare: the match below decodes the variant and jumps
        // through a table, 8 instructions more per push.
        #[cfg(target_os = "linux")]
        if let Backend::IoUring(uring) = self {
            // SAFETY: this function's own contract, passed on.
            return unsafe { uring.push(idx, user_data, args, pool) };
        }
        readiness!(self, engine => {
            let _ = (args, pool);
            engine.push(idx, user_data);
            Ok(())
        }, uring => {
            // SAFETY: this function's own contract, passed on.
            unsafe { uring.push(idx, user_data, args, pool) }
        }, sim => {
            let _ = pool;
            sim.push(idx, user_data, args);
            Ok(())
        })
    }

    pub(crate) fn flush(
        &mut self,
        wait: Wait,
        in_kernel: u32,
        args: &mut [Args],
        pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let _ = in_kernel; // io_uring's alone.
        readiness!(self, engine => engine.flush(wait, args, pool, stats),
        uring => {
            let _ = (args, pool);
            uring.flush(wait, in_kernel, stats)
        }, sim => sim.flush(wait, args, pool, stats))
    }

    /// The batch wait in effect (`UringOptions::batch_wait_us` where the kernel has it; 0
    /// on readiness backends and the simulator).
    pub(crate) fn batch_wait_us(&self) -> u32 {
        readiness!(self, engine => {
            let _ = engine;
            0
        }, uring => uring.batch_wait_us(), sim => {
            let _ = sim;
            0
        })
    }

    /// The deadline of the timeout in slot `idx`, on a clock of the backend's own, where
    /// the backend may report expiries out of deadline order (io_uring); `None` where they
    /// come in order (the readiness engines' and the simulator's timer heaps).
    pub(crate) fn expiry_ns(&self, idx: u32) -> Option<u64> {
        let _ = idx;
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(uring) => Some(uring.expiry_ns(idx)),
            _ => None,
        }
    }

    /// Whether operations still in flight may write into the loop's tables (the argument
    /// table, pool buffers) from outside the loop's thread, so that a drop that could not
    /// reap them must leak the tables rather than free them: io_uring's kernel does (and the
    /// simulator is treated alike). The readiness engines do not: what they hold is performed
    /// by the loop's thread, and a file worker owns the arguments of the job it performs.
    pub(crate) fn writes_tables_after_drop(&self) -> bool {
        readiness!(self, engine => {
            let _ = engine;
            false
        }, uring => {
            let _ = uring;
            true
        }, sim => {
            let _ = sim;
            true
        })
    }

    /// How many file workers perform file operations (epoll and kqueue with
    /// `Options::file_workers`); 0 where they run inline, in the kernel or on the simulator.
    pub(crate) fn file_workers(&self) -> u32 {
        readiness!(self, engine => engine.file_workers(), uring => {
            let _ = uring;
            0
        }, sim => {
            let _ = sim;
            0
        })
    }

    /// On io_uring, what the loop uses of what it asked for; `None` elsewhere.
    pub(crate) fn uring_features(&self) -> Option<UringFeatures> {
        readiness!(self, engine => {
            let _ = engine;
            None
        }, uring => Some(uring.features()), sim => {
            let _ = sim;
            None
        })
    }

    /// Hands up to `max` results to `f` as `(user_data, result, flags)`.
    pub(crate) fn reap(&mut self, max: u32, pool: Option<&mut Pool>, f: impl FnMut(u64, i32, u32)) {
        readiness!(self, engine => {
            let _ = pool;
            engine.reap(max, f)
        }, uring => uring.reap(max, pool, f), sim => {
            let _ = pool;
            sim.reap(max, f)
        })
    }

    /// Whether results wait that a reap has not taken yet.
    pub(crate) fn has_results(&mut self) -> bool {
        each!(self, backend => backend.has_results())
    }

    /// Whether a pooled receive could find a buffer now: in the kernel's provided-buffer
    /// ring (io_uring), or among the loop's free ones.
    pub(crate) fn buffers_available(&self, pool: &Pool) -> bool {
        readiness!(self, engine => {
            let _ = engine;
            pool.has_free()
        }, uring => uring.buffers_available(pool), sim => {
            let _ = sim;
            pool.has_free()
        })
    }

    /// Pooled receives wait for buffers: io_uring lends the kernel more of the pool.
    pub(crate) fn pool_starved(&mut self, pool: &mut Pool) {
        #[cfg(target_os = "linux")]
        if let Backend::IoUring(backend) = self {
            backend.pool_starved(pool);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = pool;
    }

    /// Takes back the pool buffers whose handles were dropped; how many.
    pub(crate) fn recycle(&mut self, pool: &mut Pool) -> u32 {
        each!(self, backend => backend.recycle(pool))
    }

    /// `Io`'s drop closed descriptor `fd`, made by one of this backend's operations, without
    /// an operation (a result nobody will receive); only the simulator needs to know.
    pub(crate) fn closed_by_drop(&mut self, fd: std::os::fd::RawFd) {
        #[cfg(feature = "sim")]
        if let Backend::Sim(sim) = self {
            sim.closed_by_drop(fd);
        }
        let _ = fd;
    }

    pub(crate) fn cancel_for_drop(&mut self, user_data: u64, stats: &mut Stats) -> io::Result<()> {
        each!(self, backend => backend.cancel_for_drop(user_data, stats))
    }

    /// Sends a cancel of `user_data` again, needing no slot: the loop holds the first
    /// cancel's answer until the target's result, which the resend's own result cannot
    /// change, so nobody receives it. `false` when it could not be sent now (a full SQ).
    pub(crate) fn resend_cancel(&mut self, user_data: u64, stats: &mut Stats) -> bool {
        each!(self, backend => backend.resend_cancel(user_data, stats))
    }
}
