//! The loop's clock: nanoseconds since the loop was created, read from the monotonic clock
//! on real backends and from the simulator's virtual clock on `sim`, where the wall clock is
//! never read. Deadlines and `run_for_ns` measure time only through it.

#[cfg(feature = "sim")]
use std::cell::Cell;
#[cfg(feature = "sim")]
use std::rc::Rc;
use std::time::Instant;

/// Where the loop's time comes from.
pub(crate) enum Clock {
    /// The monotonic clock, from the loop's creation.
    Real { origin: Instant },
    /// The simulator's virtual clock, shared with its world (it moves only when the
    /// simulation advances it).
    #[cfg(feature = "sim")]
    Sim(Rc<Cell<u64>>),
}

impl Clock {
    /// A monotonic clock starting now.
    pub(crate) fn real() -> Clock {
        Clock::Real {
            origin: Instant::now(),
        }
    }

    /// Whether time passes only when the simulation moves it (the simulator's clock).
    pub(crate) fn is_virtual(&self) -> bool {
        match self {
            Clock::Real { .. } => false,
            #[cfg(feature = "sim")]
            Clock::Sim(_) => true,
        }
    }

    /// Nanoseconds since the clock's origin.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match self {
            Clock::Real { origin } => {
                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            #[cfg(feature = "sim")]
            Clock::Sim(now_ns) => now_ns.get(),
        }
    }
}
