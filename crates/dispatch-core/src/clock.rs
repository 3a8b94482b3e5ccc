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

/// Turns in a row at one virtual instant after which `Io::run_for_ns` returns on the
/// simulator (its docs say why).
const TURNS_AT_ONE_INSTANT_MAX: u32 = 65_536;

/// Counts a run's turns in a row at one instant of a virtual clock: the simulator's time
/// passes only while the loop waits, so work completing in every turn would hold a run
/// there for ever.
pub(crate) struct Stall {
    instant_ns: u64,
    turns: u32,
}

impl Stall {
    /// A count starting at `clock`'s present.
    pub(crate) fn new(clock: &Clock) -> Stall {
        Stall {
            instant_ns: clock.now_ns(),
            turns: 0,
        }
    }

    /// The instant the count is at.
    pub(crate) fn instant_ns(&self) -> u64 {
        self.instant_ns
    }

    /// Takes in one turn ending at `now_ns`; `true` when the virtual clock has stood still
    /// for `TURNS_AT_ONE_INSTANT_MAX` turns (never on the real clock).
    pub(crate) fn stalled(&mut self, clock: &Clock, now_ns: u64) -> bool {
        if now_ns != self.instant_ns || !clock.is_virtual() {
            (self.instant_ns, self.turns) = (now_ns, 0);
            return false;
        }
        self.turns += 1;
        self.turns >= TURNS_AT_ONE_INSTANT_MAX
    }
}
