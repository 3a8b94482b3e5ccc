//! Setting a ring up: the options asked for, stepping down the set-up flags a kernel refuses,
//! and lending the pool to a provided-buffer ring.
#![allow(unsafe_code)]

use sys_uring::{Ring, RingOptions, SetupError, Unavailable};

use super::POOL_GROUP;
use crate::options::Options;
use crate::pool::Pool;
use crate::stats::{setup_flag_names, UringFeatures};

/// The ring `options` asks for. The CQ is sized so that every slot plus the internal
/// entries fits: with one CQE per operation it cannot overflow, though overflow is still
/// handled if it does.
pub(super) fn ring_options(options: &Options) -> RingOptions {
    let uring = &options.uring;
    let cq_wanted = (options.slots_max() + 8)
        .next_power_of_two()
        .clamp(uring.sq_entries * 2, 65536);
    let mut ring = RingOptions::new(uring.sq_entries);
    ring.cq_entries = cq_wanted.max(uring.sq_entries.next_power_of_two());
    ring.single_issuer = uring.single_issuer;
    ring.defer_taskrun = uring.defer_taskrun;
    ring.coop_taskrun = uring.coop_taskrun;
    ring.submit_all = uring.submit_all;
    ring
}

/// A set-up flag's field in `RingOptions`.
pub(super) type SetupFlag = fn(&mut RingOptions) -> &mut bool;

/// The set-up flags a ring can ask for, oldest kernel feature first: each one's
/// `UringFeatures::stepped_down` bit and its field in `RingOptions`.
pub(super) const SETUP_FLAGS_OLDEST_FIRST: [(u8, SetupFlag); 4] = [
    (UringFeatures::STEPPED_DOWN_SUBMIT_ALL, |o| {
        &mut o.submit_all
    }),
    (UringFeatures::STEPPED_DOWN_COOP_TASKRUN, |o| {
        &mut o.coop_taskrun
    }),
    (UringFeatures::STEPPED_DOWN_SINGLE_ISSUER, |o| {
        &mut o.single_issuer
    }),
    (UringFeatures::STEPPED_DOWN_DEFER_TASKRUN, |o| {
        &mut o.defer_taskrun
    }),
];

/// Creates a ring with `options`, stepping down where the kernel refuses the set-up
/// (`EINVAL`: a flag newer than the kernel): a plain ring first, then each set-up flag asked
/// for added back, oldest kernel feature first (`SUBMIT_ALL` 5.18, `COOP_TASKRUN` 5.19,
/// `SINGLE_ISSUER` 6.0, `DEFER_TASKRUN` 6.1, which needs `SINGLE_ISSUER`), keeping each the
/// kernel accepts: a kernel that lacks one flag (a backport may lack an old one and have a
/// newer one) loses only that one. Every flag is an optimisation the loop does without, so a
/// kernel that lacks one still runs io_uring. Returns the ring and the
/// `UringFeatures::stepped_down` bits of the flags given up; the first loop of the process to
/// step down says so on stderr, once. `create` is `Ring::new` (a test passes one that
/// refuses like an older kernel). Costs up to five `io_uring_setup` calls where the kernel
/// refuses something, one elsewhere.
pub(super) fn ring_stepping_down(
    mut create: impl FnMut(&RingOptions) -> Result<Ring, SetupError>,
    options: RingOptions,
) -> Result<(Ring, u8), SetupError> {
    let refused = |error: &SetupError| error.unavailable == Unavailable::InvalidSetup;
    match create(&options) {
        Ok(ring) => return Ok((ring, 0)),
        Err(error) if refused(&error) => {}
        Err(error) => return Err(error),
    }
    let mut accepted = options;
    for (_, flag) in SETUP_FLAGS_OLDEST_FIRST {
        *flag(&mut accepted) = false;
    }
    // Refused with no flag at all: the sizes, or something else; not a step down.
    let mut ring = create(&accepted)?;
    let mut stepped_down = 0;
    for (bit, flag) in SETUP_FLAGS_OLDEST_FIRST {
        let mut wanted = options;
        if !*flag(&mut wanted) {
            continue;
        }
        let mut with = accepted;
        *flag(&mut with) = true;
        // DEFER_TASKRUN needs SINGLE_ISSUER: given up already if it is off by now.
        if with.defer_taskrun && !with.single_issuer {
            stepped_down |= bit;
            continue;
        }
        match create(&with) {
            Ok(bigger) => (ring, accepted) = (bigger, with),
            Err(error) if refused(&error) => stepped_down |= bit,
            Err(error) => return Err(error),
        }
    }
    assert_ne!(
        stepped_down, 0,
        "the full set was refused, so something was given up"
    );
    log_step_down(stepped_down);
    Ok((ring, stepped_down))
}

/// Says once per process which set-up flags the kernel refused.
pub(super) fn log_step_down(stepped_down: u8) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        let names: Vec<&str> = setup_flag_names(stepped_down).collect();
        eprintln!(
            "dispatch-loop: this kernel refuses io_uring set-up flag(s) {}: running io_uring \
             without them",
            names.join(", ")
        );
    }
}

/// Lends every pool buffer to a provided-buffer ring registered as `POOL_GROUP`; `false`
/// (nothing lent) where the kernel has no such rings.
pub(super) fn lend_pool(ring: &mut Ring, pool: &mut Pool, start: u32) -> bool {
    let entries =
        u16::try_from(u32::from(pool.count()).next_power_of_two()).expect("at most 32768 buffers");
    let Ok(mut buf_ring) = sys_uring::BufRing::new(entries) else {
        return false;
    };
    let size = pool.buffer_size();
    let mut bids = Vec::with_capacity(start as usize);
    while bids.len() < start as usize {
        bids.push(pool.take_free().expect("a new pool has every buffer free"));
    }
    for &bid in &bids {
        // SAFETY: every buffer is free and, from now on, the kernel's until a completion
        // hands it out; the pool's memory outlives the ring's registration: the backend holds
        // a reference to it (`pool_memory`) that is dropped only after the ring, and when the
        // kernel keeps operations past the loop's drop the loop leaks its own reference, so
        // the memory is never freed.
        unsafe { buf_ring.push(bid, pool.buffer_ptr(bid), size) };
    }
    buf_ring.publish();
    if ring.register_buf_ring(buf_ring, POOL_GROUP).is_ok() {
        return true;
    }
    for bid in bids {
        pool.put_free(bid);
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn einval() -> SetupError {
        SetupError::from_setup(io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Every set-up flag on.
    fn wanted() -> RingOptions {
        let mut options = RingOptions::new(8);
        for (_, flag) in SETUP_FLAGS_OLDEST_FIRST {
            *flag(&mut options) = true;
        }
        options
    }

    /// A kernel that refuses the newer set-up flags (`EINVAL`, as 5.10 refuses
    /// `SINGLE_ISSUER`, `DEFER_TASKRUN` and `SUBMIT_ALL`) still gets a ring, with the flags
    /// it has.
    #[test]
    fn a_refused_set_up_flag_is_given_up_not_io_uring() {
        // A 5.18 kernel, as far as flags go: SUBMIT_ALL only.
        let mut tries = Vec::new();
        let older = |options: &RingOptions| {
            tries.push(*options);
            match options.single_issuer || options.defer_taskrun || options.coop_taskrun {
                true => Err(einval()),
                false => Ring::new(options),
            }
        };
        let (ring, stepped_down) = match ring_stepping_down(older, wanted()) {
            Ok(created) => created,
            Err(error) => return eprintln!("skipped: {error}"),
        };
        // All, plain, +SUBMIT_ALL, +COOP_TASKRUN, +SINGLE_ISSUER (DEFER_TASKRUN needs it).
        assert_eq!(tries.len(), 5);
        assert!(ring.options().submit_all, "the flag the kernel has is kept");
        assert!(!ring.options().single_issuer && !ring.options().defer_taskrun);
        let names: Vec<_> = setup_flag_names(stepped_down).collect();
        assert_eq!(
            names,
            [
                "IORING_SETUP_DEFER_TASKRUN",
                "IORING_SETUP_SINGLE_ISSUER",
                "IORING_SETUP_COOP_TASKRUN"
            ]
        );
        // Anything else the kernel refuses is an error, not a step down.
        let refuse = |_: &RingOptions| {
            Err(SetupError::from_setup(io::Error::from_raw_os_error(
                libc::EPERM,
            )))
        };
        assert!(ring_stepping_down(refuse, wanted()).is_err());
    }

    /// A kernel lacking an old flag but having the newer ones (a backport) loses only the
    /// one it lacks.
    #[test]
    fn only_the_refused_flag_is_given_up() {
        let backported = |options: &RingOptions| match options.submit_all {
            true => Err(einval()),
            false => Ring::new(options),
        };
        let (ring, stepped_down) = match ring_stepping_down(backported, wanted()) {
            Ok(created) => created,
            Err(error) => return eprintln!("skipped: {error}"),
        };
        assert_eq!(stepped_down, UringFeatures::STEPPED_DOWN_SUBMIT_ALL);
        let kept = ring.options();
        assert!(kept.single_issuer && kept.defer_taskrun && kept.coop_taskrun);
        assert!(!kept.submit_all);
    }
}
