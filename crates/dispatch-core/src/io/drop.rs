//! `Io`'s drop: every slot released exactly once, whatever its state, without callbacks, and
//! no memory freed while the kernel may still write it.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use super::{Io, DROP_REAP_TIMEOUT};
use crate::backend::{Backend, Wait};
use crate::completion::{discard, discard_shot, F_MORE};
use crate::operation::Args;
use crate::pool::Pool;
use crate::slots::State;
use crate::stats::BackendKind;

impl<C> Drop for Io<C> {
    /// Releases every slot exactly once, whatever its state, without running callbacks:
    /// parked operations are dropped (buffers freed, a parked close's descriptor closed);
    /// operations the kernel holds are cancelled and reaped until it has given all of them
    /// back, so that no buffer is freed while the kernel may write it; completed ones are
    /// converted and dropped (descriptors the kernel created are closed, a performed close is
    /// not repeated, pool buffers go back).
    fn drop(&mut self) {
        // Results first: a multishot's shots wait here while its slot sits in the again-list,
        // and noting the descriptors they close needs the slot's arguments, which clearing
        // that list takes.
        self.discard_completed();
        let mut closed = Closed::new(&self.backend);
        for list in [&mut self.overflow, &mut self.buffer_wait, &mut self.again] {
            while let Some(idx) = list.pop(self.slots.as_mut_slice()) {
                assert!(matches!(
                    self.slots[idx].state,
                    State::Overflow | State::BufferWait | State::Again
                ));
                self.slots[idx].state = State::Free;
                let args = self.slots.take_args(idx);
                // A parked close never ran: dropping its `OwnedFd` closes the descriptor.
                closed.note(&args, -libc::ECANCELED, 0);
                drop(args);
            }
        }
        closed.tell(&mut self.backend);
        if !self.drain_kernel() {
            if !self.backend.writes_tables_after_drop() {
                // File workers still inside syscalls: each owns its job's arguments (see
                // `backend/readiness/workers.rs`), so the tables can go.
                eprintln!(
                    "dispatch-loop: {} file operations still running after \
                     {DROP_REAP_TIMEOUT:?}; their workers finish them alone",
                    self.in_kernel
                );
                return;
            }
            eprintln!(
                "dispatch-loop: {} operations still in the kernel after \
                 {DROP_REAP_TIMEOUT:?}; \
                 leaking their memory rather than freeing it under the kernel",
                self.in_kernel
            );
            self.slots.leak();
            if let Some(pool) = self.pool.take() {
                pool.leak();
            }
            return;
        }
        for idx in 0..self.slots.touched() {
            if self.slots[idx].state == State::Held {
                // A cancel whose target came back in the drain: nothing to answer.
                self.slots[idx].state = State::Free;
                drop(self.slots.take_args(idx));
            }
            let state = self.slots[idx].state;
            assert_eq!(
                state,
                State::Free,
                "slot {idx} left in state {state:?} by drop"
            );
            assert!(matches!(self.slots.args(idx), Args::Empty));
        }
    }
}

/// Descriptors that discarding results closes (an accepted socket or opened file nobody will
/// receive, a close cancelled before it ran): the simulator must hear of them, since closing
/// its placeholder descriptor does not tell it. Collected only on `sim`.
struct Closed {
    fds: Option<Vec<RawFd>>,
}

impl Closed {
    fn new(backend: &Backend) -> Closed {
        Closed {
            fds: (backend.kind() == BackendKind::Sim).then(Vec::new),
        }
    }

    /// Notes the descriptor that discarding `result` of the operation `args` will close.
    fn note(&mut self, args: &Args, result: i32, flags: u32) {
        let Some(fds) = self.fds.as_mut() else {
            return;
        };
        match args {
            Args::Accept { .. } | Args::Openat { .. } if result >= 0 => fds.push(result),
            // Descriptors a simulated receive brought (`backend/sim/unix.rs`).
            Args::RecvMsg { msg, .. } if result >= 0 => {
                fds.extend(msg.fds().iter().map(AsRawFd::as_raw_fd));
            }
            Args::Close { fd } if result == -libc::ECANCELED && flags & F_MORE == 0 => {
                fds.push(fd.as_raw_fd());
            }
            _ => {}
        }
    }

    fn tell(self, backend: &mut Backend) {
        for fd in self.fds.into_iter().flatten() {
            backend.closed_by_drop(fd);
        }
    }
}

impl<C> Io<C> {
    /// For `Drop`: converts and drops every result not delivered (a callback panicked, or
    /// the loop is dropped between turns), telling the simulator of the descriptors that
    /// closes.
    fn discard_completed(&mut self) {
        let slots = &mut self.slots;
        let pool = self.pool.as_ref().map(Pool::shared);
        let mut closed = Closed::new(&self.backend);
        self.completed.drain(|done| {
            closed.note(slots.args(done.idx), done.result, done.flags);
            if done.flags & F_MORE != 0 {
                return discard_shot(slots.args(done.idx), pool, done.result, done.flags);
            }
            let idx = done.idx;
            assert_eq!(slots[idx].state, State::Completed);
            slots[idx].state = State::Free;
            discard(slots.take_args(idx), done.result, done.flags, pool);
        });
        closed.tell(&mut self.backend);
    }

    /// For `Drop`: cancels every operation the kernel holds and reaps until all have come
    /// back (their results discarded). `false` if the kernel kept some past the timeout.
    /// The cancels go out again every `DROP_RESEND_NS` while operations remain: a kernel
    /// may lose a cancel (see `io/deadline.rs`).
    fn drain_kernel(&mut self) -> bool {
        self.cancel_for_drop();
        let mut sent_ns = self.clock.now_ns();
        let timeout_ns = u64::try_from(DROP_REAP_TIMEOUT.as_nanos()).expect("10 s");
        let deadline_ns = self.clock.now_ns().saturating_add(timeout_ns);
        while self.in_kernel > 0 && self.clock.now_ns() < deadline_ns {
            if self.clock.now_ns() - sent_ns >= DROP_RESEND_NS {
                self.cancel_for_drop();
                sent_ns = self.clock.now_ns();
            }
            let args = self.slots.args_table();
            let wait = Wait::Within(100_000_000);
            let pool = self.pool.as_mut();
            let flushed = self
                .backend
                .flush(wait, self.in_kernel, args, pool, &mut self.stats);
            if let Err(error) = flushed {
                eprintln!("dispatch-loop: reaping on drop failed: {error}");
                return false;
            }
            let slots = &mut self.slots;
            let in_kernel = &mut self.in_kernel;
            let shared = self.pool.as_ref().map(|pool| Rc::clone(pool.shared()));
            let mut closed = Closed::new(&self.backend);
            self.backend
                .reap(u32::MAX, self.pool.as_mut(), |user_data, result, flags| {
                    let pool = shared.as_ref();
                    let idx = slots.kernel_slot(user_data);
                    closed.note(slots.args(idx), result, flags);
                    if flags & F_MORE != 0 {
                        return discard_shot(slots.args(idx), pool, result, flags);
                    }
                    slots[idx].state = State::Free;
                    *in_kernel -= 1;
                    discard(slots.take_args(idx), result, flags, pool);
                });
            closed.tell(&mut self.backend);
        }
        self.in_kernel == 0
    }

    /// For `Drop`: asks the backend to cancel every operation the kernel holds.
    fn cancel_for_drop(&mut self) {
        for idx in 0..self.slots.touched() {
            if self.slots[idx].state != State::Kernel {
                continue;
            }
            let user_data = self.slots.id(idx).user_data();
            if let Err(error) = self.backend.cancel_for_drop(user_data, &mut self.stats) {
                eprintln!("dispatch-loop: cancel on drop failed: {error}");
            }
        }
    }
}

/// How often `Io`'s drop sends its cancels again while the kernel still holds operations.
const DROP_RESEND_NS: u64 = 100_000_000;
