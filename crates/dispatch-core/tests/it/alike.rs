//! Promises that must read the same on every backend, checked by running one program on each
//! (io_uring with its kernel extras and with them masked, epoll, kqueue over the kevent
//! double, the simulator) and comparing what its callbacks saw. Each test picks its backends
//! itself (`backends`), so `DISPATCH_BACKEND` changes nothing here.

use std::sync::mpsc;
use std::time::Duration;

use dispatch_core::sim::{Sim, SimOptions};
use dispatch_core::{BackendKind, Io, Options};

/// A backend to build a loop on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// io_uring; `masked`: without provided-buffer rings, multishot and `EXT_ARG`, as on
    /// kernels before 5.19 (the loop's own fallbacks run).
    Uring {
        masked: bool,
    },
    Epoll,
    Kqueue,
    KqueueFake,
    Sim,
}

/// Every backend of this platform, io_uring twice.
fn backends() -> Vec<On> {
    if cfg!(target_os = "linux") {
        vec![
            On::Uring { masked: false },
            On::Uring { masked: true },
            On::Epoll,
            On::KqueueFake,
            On::Sim,
        ]
    } else {
        vec![On::Kqueue, On::KqueueFake, On::Sim]
    }
}

/// A loop on one backend, and the simulated world under it on `On::Sim`.
struct Rig<C> {
    on: On,
    io: Io<C>,
    sim: Option<Sim>,
}

impl On {
    /// A loop with `options` on this backend, or `None` (saying why on stderr, as a
    /// `skipped:` line) where io_uring cannot run here.
    fn rig<C>(self, options: &Options) -> Option<Rig<C>> {
        let mut options = *options;
        let kind = match self {
            On::Uring { masked } => {
                options.uring.pbuf_ring = !masked;
                options.uring.multishot = !masked;
                options.uring.ext_arg = !masked;
                BackendKind::IoUring
            }
            On::Epoll => BackendKind::Epoll,
            On::Kqueue => BackendKind::Kqueue,
            On::KqueueFake => BackendKind::KqueueFake,
            On::Sim => {
                let sim = Sim::new(&SimOptions::new(17)).expect("a world");
                let io = Io::new_sim(&options, &sim).expect("a loop on the world");
                let sim = Some(sim);
                return Some(Rig { on: self, io, sim });
            }
        };
        options.backend = Some(kind);
        match Io::new(&options) {
            Ok(io) => Some(Rig {
                on: self,
                io,
                sim: None,
            }),
            #[cfg(target_os = "linux")]
            Err(dispatch_core::InitError::Unavailable(error)) => {
                eprintln!("skipped: {self:?}: {error}");
                None
            }
            Err(error) => panic!("{self:?}: Io::new: {error}"),
        }
    }
}

/// Runs `run` on a loop built on `on` in a thread of its own, and fails if it does not
/// return within 30 s (a hang, not a timing: a run that waited would wait an hour).
fn within_30_s(on: On, run: fn(Rig<u32>) -> u32) -> Option<u32> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let rig = on.rig::<u32>(&Options::new(8));
        let _ = done.send(rig.map(run));
    });
    match result.recv_timeout(Duration::from_secs(30)) {
        Ok(ran) => ran,
        Err(_) => panic!("{on:?}: a run after stop() blocked"),
    }
}

const HOUR_NS: u64 = 3_600_000_000_000;

/// `stop` called outside a run: the next run turns once without waiting (what is ready is
/// still submitted, reaped and called back) and returns; a timeout of an hour stays
/// pending, on the simulator's clock too.
#[test]
fn a_stop_before_the_run_ends_it_without_waiting() {
    fn run(mut rig: Rig<u32>) -> u32 {
        let io = &mut rig.io;
        io.timeout(1, HOUR_NS, |_, _, _, _| panic!("an hour passed"))
            .unwrap();
        let mut called = 0;
        // Nothing ready: the run must not wait for the timeout.
        io.stop();
        io.run_for_ns(&mut called, u64::MAX).unwrap();
        io.stop();
        io.run_until_idle(&mut called).unwrap();
        assert_eq!(io.in_flight(), 1, "{:?}: the timeout is pending", rig.on);
        // Something ready: its callback runs in the one turn.
        for until_idle in [false, true] {
            io.nop(2, |called: &mut u32, _, _, r| {
                r.expect("nop");
                *called += 1;
            })
            .unwrap();
            io.stop();
            if until_idle {
                io.run_until_idle(&mut called).unwrap();
            } else {
                io.run_for_ns(&mut called, u64::MAX).unwrap();
            }
            assert_eq!(io.in_flight(), 1, "{:?}: the timeout is pending", rig.on);
        }
        if let Some(sim) = &rig.sim {
            assert_eq!(sim.now_ns(), 0, "no virtual time passed");
        }
        called
    }
    let mut ran = 0;
    for on in backends() {
        if let Some(called) = within_30_s(on, run) {
            assert_eq!(called, 2, "{on:?}: the ready nop was called back");
            ran += 1;
        }
    }
    assert!(ran >= 2);
}
