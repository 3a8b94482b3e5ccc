//! The deterministic simulation backend: operations are performed on a simulated world
//! (`world.rs`: clock, network, disk, faults, trace) instead of the kernel, in virtual time.
//!
//! How it works: `push` puts an operation on the `waiting` list, in order (a timer goes to
//! the heap, a cancel to a list answered after the others have been tried, as a kernel
//! performs a batch in order). Each `flush` tries the waiting operations in
//! order, as a readiness backend does, except that one behind another waiting on the same
//! descriptor and direction is not tried (order within a stream is kept); those that cannot
//! complete stay. If nothing completed and the loop may wait, the clock jumps to the next
//! event of the world (a delivery, an arrival, a timer, a delayed operation), never past
//! the loop's deadline, and the operations are tried again. Nothing sleeps and the wall
//! clock is never read. Completions go to `done` (or, under the latency fault, to `late`
//! until their time); `reap` may swap completions of different descriptors (the reorder
//! fault) and adds each to the trace.

mod dgram;
mod dirs;
mod disk;
mod file;
mod handle;
mod net;
mod options;
mod poll;
mod rng;
mod socket;
mod udp;
mod unix;
mod world;

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use self::file::file_op;
pub use self::handle::{Peer, Sim, SimListener};
pub use self::options::{FaultCounts, Faults, SimOptions, SimStats};
use self::socket::{bad, direction, socket_op};
pub use self::unix::UnixKind;
use self::world::{Event, Fault, Obj, World};
use super::Wait;
use crate::clock::Clock;
use crate::completion::TIMEOUT_EXPIRED;
use crate::operation::{Args, OpId};
use crate::pool::Pool;
use crate::stats::Stats;
use crate::timer::TimerHeap;
use crate::waker::Waker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Idle,
    Waiting,
    Timer,
    /// Completed, held back by the latency fault.
    Late,
    Done,
}

/// A completion not reaped yet.
#[derive(Debug, Clone, Copy)]
struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
    /// The key of the object its descriptor named (`NO_KEY` for none; see `Obj::key`), so
    /// that neither reordering nor latency ever puts it after a later one of that object.
    key: u64,
    /// The result as the trace records it: a new descriptor's object key rather than its
    /// number.
    traced: u64,
}

/// The key of a completion that names no descriptor.
const NO_KEY: u64 = u64::MAX;

/// The key every expired timer shares, as if they were one object (kind 6 beside
/// `Obj::key`'s five): neither reordering nor latency ever delivers a timer before an
/// earlier one, so expiries come in deadline order, as the loop promises on every backend.
const TIMER_KEY: u64 = 6 << 32;

/// A result of one try: `None` to wait.
pub(super) type Tried = Option<(i32, u32)>;

/// The simulation backend of one loop.
pub(crate) struct SimBackend {
    sim: Sim,
    /// The world was made for this loop (from the environment): nobody else can read its
    /// trace hash, so the loop prints it when dropped.
    own_world: bool,
    user_data: Box<[u64]>,
    place: Box<[Place]>,
    not_before_ns: Box<[u64]>,
    waiting: Vec<u32>,
    /// Cancels, answered in order at the end of the next try of the waiting operations.
    cancels: Vec<u32>,
    /// Targets of cancels the loop sends again (`resend_cancel`), tried after the cancels,
    /// under the same `lost_cancel` fault; their answers go to nobody.
    resends: Vec<u64>,
    timers: TimerHeap,
    late: Vec<(u64, Completion)>,
    done: Vec<Completion>,
    waker: Waker,
}

impl SimBackend {
    /// A backend on `sim`'s world (`None`: a world of its own, from the environment).
    pub(crate) fn new(sim: Option<&Sim>, slots_max: u32) -> io::Result<SimBackend> {
        let own_world = sim.is_none();
        let sim = match sim {
            Some(sim) => sim.clone(),
            None => Sim::new(&SimOptions::from_env())?,
        };
        {
            let mut world = sim.world.borrow_mut();
            if world.attached {
                return Err(io::Error::other(
                    "a loop already runs on this simulated world (one at a time)",
                ));
            }
            world.attached = true;
        }
        let slots = slots_max as usize;
        Ok(SimBackend {
            sim,
            own_world,
            user_data: vec![0; slots].into_boxed_slice(),
            place: vec![Place::Idle; slots].into_boxed_slice(),
            not_before_ns: vec![0; slots].into_boxed_slice(),
            waiting: Vec::with_capacity(slots),
            cancels: Vec::with_capacity(slots),
            resends: Vec::with_capacity(slots),
            timers: TimerHeap::new(slots_max),
            late: Vec::new(),
            done: Vec::with_capacity(slots),
            waker: Waker::simulated(),
        })
    }

    pub(crate) fn sim(&self) -> &Sim {
        &self.sim
    }

    pub(crate) fn clock(&self) -> Clock {
        Clock::Sim(Rc::clone(&self.sim.world.borrow().now))
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn world(&self) -> std::cell::RefMut<'_, World> {
        self.sim.world.borrow_mut()
    }

    /// Queues slot `idx`; a timer starts, a cancel waits for the others' try, the rest wait
    /// for a try.
    pub(crate) fn push(&mut self, idx: u32, user_data: u64, args: &Args) {
        let i = idx as usize;
        assert_eq!(self.place[i], Place::Idle, "slot {idx} pushed twice");
        self.user_data[i] = user_data;
        let shared = Rc::clone(&self.sim.world);
        let mut guard = shared.borrow_mut();
        let world = &mut *guard;
        match *args {
            Args::Timeout { timeout_ns } => {
                let deadline_ns = world.now_ns().saturating_add(timeout_ns);
                self.place[i] = Place::Timer;
                self.timers.insert(idx, deadline_ns);
                world.at(deadline_ns, Event::Wake);
            }
            Args::Cancel { .. } => {
                // Answered after the operations before it have been tried, as the kernel
                // performs a batch in order.
                self.place[i] = Place::Waiting;
                self.cancels.push(idx);
            }
            _ => {
                self.place[i] = Place::Waiting;
                self.not_before_ns[i] = 0;
                if world.rng.chance(world.faults.delay) {
                    let delay_ns = world.rng.between(1, world.faults.delay_max_ns.max(1));
                    world.fault(Fault::Delay);
                    let at_ns = world.now_ns() + delay_ns;
                    self.not_before_ns[i] = at_ns;
                    world.at(at_ns, Event::Wake);
                }
                self.waiting.push(idx);
            }
        }
    }

    /// Tries what waits, then, if the loop may wait and nothing completed, moves the clock
    /// from event to event (never past the wait's end) until something does.
    pub(crate) fn flush(
        &mut self,
        wait: Wait,
        args: &mut [Args],
        mut pool: Option<&mut Pool>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let shared = Rc::clone(&self.sim.world);
        let mut guard = shared.borrow_mut();
        let world = &mut *guard;
        let start_ns = world.now_ns();
        let batch = self.waiting.len() + self.cancels.len();
        stats.batch_max = stats.batch_max.max(batch as u32);
        loop {
            self.progress(world, args, pool.as_deref_mut());
            let limit_ns = match wait {
                _ if !self.done.is_empty() => return Ok(()),
                Wait::Poll => return Ok(()),
                // A wait to the end of time (`run_for_ns(u64::MAX)`) has no end.
                Wait::Within(ns) => start_ns.checked_add(ns).filter(|&end| end < u64::MAX),
                Wait::Forever => None,
            };
            match (world.next_event_ns(), limit_ns) {
                (Some(next_ns), Some(limit_ns)) if next_ns > limit_ns => {
                    world.advance(limit_ns);
                    self.progress(world, args, pool.as_deref_mut());
                    return Ok(());
                }
                (None, Some(limit_ns)) => {
                    world.advance(limit_ns);
                    self.progress(world, args, pool.as_deref_mut());
                    return Ok(());
                }
                (Some(next_ns), _) => world.advance(next_ns),
                (None, None) => return self.stuck(&args[..], world.options.seed),
            }
        }
    }

    /// The loop would wait forever: nothing in the world can happen. A wake-up wait may
    /// still be answered by another thread's `Waker::wake`, so the turn just ends; anything
    /// else is a deadlock of the program under test, reported as an error.
    fn stuck(&self, args: &[Args], seed: u64) -> io::Result<()> {
        if self
            .waiting
            .iter()
            .any(|&idx| matches!(args[idx as usize], Args::Wakeup))
        {
            std::thread::yield_now();
            return Ok(());
        }
        Err(io::Error::other(format!(
            "simulated deadlock: {} operations wait and no simulated event can complete them \
             (seed {})",
            self.waiting.len(),
            seed
        )))
    }

    /// Expires timers, releases late completions that are due, tries every waiting
    /// operation once, in order, then answers the cancels.
    fn progress(&mut self, world: &mut World, args: &mut [Args], pool: Option<&mut Pool>) {
        let now_ns = world.now_ns();
        while let Some(idx) = self.timers.pop_expired(now_ns) {
            self.complete(world, idx, TIMEOUT_EXPIRED, 0, TIMER_KEY);
        }
        self.release_late(now_ns);
        self.try_waiting(world, args, pool);
        for at in 0..self.cancels.len() {
            let idx = self.cancels[at];
            let Args::Cancel { target } = args[idx as usize] else {
                unreachable!("only cancels are on the cancel list");
            };
            let result = match world.rng.chance(world.faults.lost_cancel) {
                true if self.is_waiting(target.user_data()) => {
                    world.fault(Fault::LostCancel);
                    self.cancel_faulted(world, args, target.user_data())
                }
                _ => self.cancel(target.user_data()),
            };
            self.complete(world, idx, result, 0, NO_KEY);
        }
        self.cancels.clear();
        for at in 0..self.resends.len() {
            let user_data = self.resends[at];
            if world.rng.chance(world.faults.lost_cancel) && self.is_waiting(user_data) {
                world.fault(Fault::LostCancel);
                self.cancel_faulted(world, args, user_data);
            } else {
                self.cancel(user_data);
            }
        }
        self.resends.clear();
    }

    /// A cancel of the waiting operation `user_data` under the `lost_cancel` fault, as
    /// io_uring's kernel workers answer: "not found" with the target waiting on; "found
    /// running" with the interruption lost; or "found running" and interrupted, the target
    /// ending with `EINTR` up to a millisecond later (what Linux 6.1 and 6.12 do, the later
    /// result in a later reap). Timers are only missed, never interrupted.
    fn cancel_faulted(&mut self, world: &mut World, args: &[Args], user_data: u64) -> i32 {
        let idx = OpId::idx_of_user_data(user_data);
        let on_timer = self.place[idx as usize] == Place::Timer;
        match world.rng.below(3) {
            0 => -libc::ENOENT,
            1 => -libc::EALREADY,
            _ if on_timer => -libc::EALREADY,
            _ => {
                let at = self
                    .waiting
                    .iter()
                    .position(|&w| w == idx)
                    .expect("waiting");
                self.waiting.remove(at);
                let key =
                    direction(&args[idx as usize]).map_or(NO_KEY, |(fd, _)| key_of(world, fd));
                let at_ns = world.now_ns() + world.rng.between(1, 1_000_000);
                world.at(at_ns, Event::Wake);
                self.place[idx as usize] = Place::Late;
                let result = -libc::EINTR;
                self.late.push((
                    at_ns,
                    Completion {
                        user_data,
                        result,
                        flags: 0,
                        key,
                        traced: result as u64,
                    },
                ));
                -libc::EALREADY
            }
        }
    }

    /// Late completions whose time has come join the others.
    fn release_late(&mut self, now_ns: u64) {
        let mut at = 0;
        while at < self.late.len() {
            if self.late[at].0 <= now_ns {
                let (_, completion) = self.late.remove(at);
                let idx = OpId::idx_of_user_data(completion.user_data);
                self.place[idx as usize] = Place::Done;
                self.done.push(completion);
            } else {
                at += 1;
            }
        }
    }

    /// Tries every waiting operation once, in order, but for those behind one still waiting
    /// on the same object and direction.
    fn try_waiting(&mut self, world: &mut World, args: &mut [Args], mut pool: Option<&mut Pool>) {
        let now_ns = world.now_ns();
        // Objects and directions with an operation still waiting: those behind it wait.
        let mut blocked: Vec<(u64, bool)> = Vec::new();
        let mut kept = 0;
        for at in 0..self.waiting.len() {
            let idx = self.waiting[at];
            let i = idx as usize;
            let key = direction(&args[i]).map(|(fd, dir)| (key_of(world, fd), dir));
            let behind = key.is_some_and(|key| blocked.contains(&key));
            let tried = if behind || self.not_before_ns[i] > now_ns {
                None
            } else {
                self.try_op(world, &mut args[i], pool.as_deref_mut())
            };
            match tried {
                Some((result, flags)) => {
                    let key = key.map_or(NO_KEY, |(key, _)| key);
                    let creates = matches!(args[i], Args::Accept { .. } | Args::Openat { .. });
                    let traced = match world.obj(result) {
                        Some(obj) if creates && result >= 0 => obj.key(),
                        _ => result as u64,
                    };
                    self.complete_traced(world, idx, (result, flags), key, traced);
                }
                None => {
                    if let Some(key) = key {
                        blocked.push(key);
                    }
                    self.waiting[kept] = idx;
                    kept += 1;
                }
            }
        }
        self.waiting.truncate(kept);
    }

    /// Slot `idx` completed: to `done`, or (the latency fault) to `late`, never before an
    /// earlier completion of the same descriptor.
    fn complete(&mut self, world: &mut World, idx: u32, result: i32, flags: u32, key: u64) {
        self.complete_traced(world, idx, (result, flags), key, result as u64);
    }

    /// As `complete`, with the result as the trace records it.
    fn complete_traced(
        &mut self,
        world: &mut World,
        idx: u32,
        (result, flags): (i32, u32),
        key: u64,
        traced: u64,
    ) {
        let i = idx as usize;
        assert!(matches!(self.place[i], Place::Waiting | Place::Timer));
        world.stats.completions += 1;
        let completion = Completion {
            user_data: self.user_data[i],
            result,
            flags,
            key,
            traced,
        };
        let earlier_late = self
            .late
            .iter()
            .filter(|(_, late)| key != NO_KEY && late.key == key)
            .map(|(at_ns, _)| *at_ns)
            .max();
        let late = earlier_late.is_some() || world.rng.chance(world.faults.latency);
        if late && earlier_late.is_none() {
            world.fault(Fault::Latency);
        }
        if late {
            let extra_ns = world.rng.between(1, world.faults.latency_max_ns.max(1));
            let at_ns = (world.now_ns() + extra_ns).max(earlier_late.unwrap_or(0));
            world.at(at_ns, Event::Wake);
            self.place[i] = Place::Late;
            self.late.push((at_ns, completion));
        } else {
            self.place[i] = Place::Done;
            self.done.push(completion);
        }
    }

    /// Performs one operation on the world, if it can complete now.
    fn try_op(&mut self, world: &mut World, args: &mut Args, pool: Option<&mut Pool>) -> Tried {
        match args {
            Args::Nop => Some((0, 0)),
            Args::Wakeup => {
                let count = self.waker.take_count();
                (count > 0).then(|| (i32::try_from(count).unwrap_or(i32::MAX), 0))
            }
            Args::Poll { fd, events, .. } => poll::poll(world, *fd, *events),
            Args::Accept { .. }
            | Args::Connect { .. }
            | Args::Recv { .. }
            | Args::RecvPooled { .. }
            | Args::Send { .. }
            | Args::SendPooled { .. }
            | Args::SendVectored { .. }
            | Args::Shutdown { .. }
            | Args::Close { .. } => socket_op(world, args, pool),
            Args::SendMsg { .. } | Args::RecvMsg { .. } => dgram::msg_op(world, args),
            _ => file_op(world, args),
        }
    }

    /// Whether the operation `user_data` waits for the world or on a timer (a pending
    /// cancel, which is answered on its own, does not count).
    fn is_waiting(&self, user_data: u64) -> bool {
        let idx = OpId::idx_of_user_data(user_data);
        let i = idx as usize;
        i < self.place.len()
            && self.user_data[i] == user_data
            && match self.place[i] {
                Place::Timer => true,
                Place::Waiting => self.waiting.contains(&idx),
                _ => false,
            }
    }

    /// Cancels the operation `user_data` if it has not completed: `0`, or `-ENOENT` (also
    /// for a pending cancel, which cannot be cancelled: it is answered on its own).
    fn cancel(&mut self, user_data: u64) -> i32 {
        let idx = OpId::idx_of_user_data(user_data);
        let i = idx as usize;
        if i >= self.place.len() || self.user_data[i] != user_data {
            return -libc::ENOENT;
        }
        match self.place[i] {
            Place::Idle | Place::Done | Place::Late => return -libc::ENOENT,
            Place::Waiting => {
                let Some(at) = self.waiting.iter().position(|&w| w == idx) else {
                    assert!(self.cancels.contains(&idx), "waiting, or a pending cancel");
                    return -libc::ENOENT;
                };
                self.waiting.remove(at);
            }
            Place::Timer => self.timers.remove(idx),
        }
        self.place[i] = Place::Done;
        let result = -libc::ECANCELED;
        self.done.push(Completion {
            user_data,
            result,
            flags: 0,
            key: NO_KEY,
            traced: result as u64,
        });
        0
    }

    /// Hands up to `max` results to `f`, oldest first (but for the reorder fault).
    pub(crate) fn reap(&mut self, max: u32, mut f: impl FnMut(u64, i32, u32)) {
        let shared = Rc::clone(&self.sim.world);
        let mut guard = shared.borrow_mut();
        let world = &mut *guard;
        reorder(world, &mut self.done);
        let count = self.done.len().min(max as usize);
        let now_ns = world.now_ns();
        for done in self.done.drain(..count) {
            let Completion {
                user_data,
                result,
                flags,
                traced,
                ..
            } = done;
            let idx = OpId::idx_of_user_data(user_data) as usize;
            assert_eq!(self.place[idx], Place::Done);
            self.place[idx] = Place::Idle;
            world
                .trace
                .add(&[now_ns, user_data, traced, u64::from(flags)]);
            f(user_data, result, flags);
        }
    }

    pub(crate) fn has_results(&self) -> bool {
        !self.done.is_empty()
    }

    pub(crate) fn recycle(&mut self, pool: &mut Pool) -> u32 {
        pool.take_returned_into_free()
    }

    /// `Io`'s drop closed `fd` (see `Backend::closed_by_drop`): the simulated object goes.
    pub(crate) fn closed_by_drop(&mut self, fd: RawFd) {
        self.world().close_fd(fd);
    }

    pub(crate) fn cancel_for_drop(&mut self, user_data: u64, _: &mut Stats) -> io::Result<()> {
        let result = self.cancel(user_data);
        assert!(result == 0 || result == -libc::ENOENT);
        Ok(())
    }

    /// Sends a cancel of `user_data` again (see `io/deadline.rs`): tried with the next
    /// flush, after the cancels, under the `lost_cancel` fault like them.
    pub(crate) fn resend_cancel(&mut self, user_data: u64, _: &mut Stats) -> bool {
        assert!(
            self.resends.len() < self.resends.capacity(),
            "resends never grow"
        );
        if !self.resends.contains(&user_data) {
            self.resends.push(user_data);
        }
        true
    }
}

impl Drop for SimBackend {
    /// Frees the world for another loop; a world of the loop's own prints its seed and trace
    /// hash (the end of a run selected by `DISPATCH_BACKEND=sim`, a panic's unwinding
    /// included).
    fn drop(&mut self) {
        let mut world = self.world();
        world.attached = false;
        if self.own_world {
            eprintln!(
                "dispatch-loop: sim seed {}: trace hash {:#018x} ({} events, {} ns of virtual \
                 time; replay with DISPATCH_SIM_SEED={})",
                world.options.seed,
                world.trace.hash(),
                world.trace.events(),
                world.now_ns(),
                world.options.seed
            );
        }
    }
}

/// The reorder fault: a few swaps of neighbouring completions of different descriptors.
fn reorder(world: &mut World, done: &mut [Completion]) {
    if done.len() < 2 || !world.rng.chance(world.faults.reorder) {
        return;
    }
    world.fault(Fault::Reorder);
    for _ in 0..done.len() {
        let at = world.rng.below(done.len() as u64 - 1) as usize;
        let (a, b) = (done[at].key, done[at + 1].key);
        if a != b || a == NO_KEY {
            done.swap(at, at + 1);
        }
    }
}

/// The key of the object `fd` names (see `Obj::key`); one that names none gets a key of its
/// own per number, which only a program's mistake (an operation on a closed descriptor)
/// can make matter.
fn key_of(world: &World, fd: RawFd) -> u64 {
    world
        .obj(fd)
        .map_or((NO_KEY - 1).wrapping_sub(u64::from(fd as u32)), Obj::key)
}
