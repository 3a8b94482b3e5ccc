//! Submitting and waiting: one `io_uring_enter` per turn, the batch wait, and the timeout
//! SQE that stands in for `EXT_ARG` on older kernels.
#![allow(unsafe_code)]

use std::io;

use sys_uring::opcode;

use super::sqe::timespec_from_ns;
use super::{IoUringBackend, BATCH_BACKOFF_MAX, BATCH_BACKOFF_MIN, USER_DATA_WAIT_TIMEOUT};
use crate::backend::Wait;
use crate::stats::Stats;

impl IoUringBackend {
    /// Submits everything pushed and waits as `wait` says, in one `io_uring_enter` (two on a
    /// kernel without `EXT_ARG` whose SQ is exactly full when a timed wait must add its
    /// timeout SQE). `in_kernel` is how many operations the kernel holds: with none, a poll
    /// that has nothing to submit makes no syscall.
    pub(crate) fn flush(
        &mut self,
        wait: Wait,
        in_kernel: u32,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += std::mem::take(&mut self.inline_syscalls);
        let overflow = self.ring.cq_overflow();
        if overflow {
            stats.cq_overflows += 1;
        }
        let (wait_nr, timeout_ns) = match wait {
            Wait::Poll => (0, None),
            Wait::Forever => (1, None),
            Wait::Within(0) => (0, None),
            Wait::Within(left_ns) => (1, Some(left_ns)),
        };
        let needed = wait_nr > 0
            || self.ring.sq_len() > 0
            || overflow
            || (self.ring.options().defer_taskrun && in_kernel > 0);
        if !needed {
            return Ok(());
        }
        let (wait_nr, timeout_ns) = match timeout_ns {
            // No room for the timeout SQE even after an enter (the CQ is overcommitted): this
            // turn does not wait; the loop reaps and turns again.
            Some(ns) if !self.ext_arg => match self.push_wait_timeout(ns, stats)? {
                true => (wait_nr, None),
                false => (0, None),
            },
            other => (wait_nr, other),
        };
        let min_wait_us = self.batch_wait(wait_nr, timeout_ns);
        if min_wait_us == 0 {
            return self.enter(wait_nr, timeout_ns, 0, stats);
        }
        // As many completions as operations in the kernel, at most `batch_events`; a
        // multishot receive in the kernel may bring them all (a UDP server's one receive).
        let expected = if self.multishots > 0 {
            self.batch_events
        } else {
            in_kernel
        };
        let wait_nr = self.batch_events.min(expected).max(1);
        // Submitted operations that finish at once (a send, mostly) post their completions
        // during the enter: only what came in beyond those is what the wait gathered.
        let submitted = self.ring.sq_len();
        stats.batch_waits += 1;
        self.enter(wait_nr, timeout_ns, min_wait_us, stats)?;
        let gathered = self.ring.cq_len().saturating_sub(submitted);
        self.batch_paid(gathered > 1);
        Ok(())
    }

    /// The batch wait for a blocking enter, in microseconds: 0 (wait for the first
    /// completion only) unless batching is on, the wait is longer than the batch wait, and
    /// no recent batch wait went unpaid.
    fn batch_wait(&mut self, wait_nr: u32, timeout_ns: Option<u64>) -> u32 {
        if wait_nr == 0 || self.batch_wait_us == 0 {
            return 0;
        }
        if self.batch_skip > 0 {
            self.batch_skip -= 1;
            return 0;
        }
        // A wait shorter than the batch wait (a timer due soon) ends at its deadline anyway.
        match timeout_ns {
            Some(ns) if ns / 1_000 <= u64::from(self.batch_wait_us) => 0,
            _ => self.batch_wait_us,
        }
    }

    /// Learns from a batch wait: one that gathered several completions (beyond those of the
    /// operations it submitted) paid; one that brought a single completion only delayed it
    /// (a lone client in a ping-pong, whose next message waits for this reply), so the next
    /// `batch_backoff` blocking waits skip the batch wait, and each further miss doubles
    /// that (up to `BATCH_BACKOFF_MAX`). A lone client then pays the batch wait on a few of
    /// its first round trips, then on at most one in `BATCH_BACKOFF_MAX`.
    fn batch_paid(&mut self, paid: bool) {
        if paid {
            self.batch_backoff = BATCH_BACKOFF_MIN;
        } else {
            self.batch_skip = self.batch_backoff;
            self.batch_backoff = (self.batch_backoff * 2).min(BATCH_BACKOFF_MAX);
        }
    }

    /// On kernels without `EXT_ARG`: a timeout SQE that completes after `timeout_ns`, or as
    /// soon as one other completion arrives (count 1), so it never outlives the wait.
    /// `false` when the SQ had no room for it even after an enter.
    fn push_wait_timeout(&mut self, timeout_ns: u64, stats: &mut Stats) -> io::Result<bool> {
        if self.ring.sq_space() == 0 {
            self.enter(0, None, 0, stats)?;
            if self.ring.sq_space() == 0 {
                return Ok(false);
            }
        }
        *self.wait_timespec = timespec_from_ns(timeout_ns);
        let entry = opcode::Timeout::new(&*self.wait_timespec)
            .count(1)
            .build()
            .user_data(USER_DATA_WAIT_TIMEOUT);
        // SAFETY: the kernel copies the timespec while preparing the SQE, inside an enter:
        // usually the next, but a submission cut short by a failed SQE (without SUBMIT_ALL)
        // leaves this one in the SQ for a later enter, possibly after the `Io` moved. The
        // timespec is boxed, so its address does not move with the `Io`, and it is freed only
        // after the ring (field order). A later wait may rewrite it before a stale SQE is
        // read: the kernel then reads that wait's timeout, a valid timespec either way.
        let pushed = unsafe { self.ring.push(&entry) };
        assert!(pushed.is_ok(), "the SQ had room");
        Ok(true)
    }

    pub(super) fn enter(
        &mut self,
        wait_nr: u32,
        timeout_ns: Option<u64>,
        min_wait_us: u32,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += 1;
        match self.ring.enter_min_wait(wait_nr, timeout_ns, min_wait_us) {
            Ok(submitted) => {
                stats.batch_max = stats.batch_max.max(submitted);
                Ok(())
            }
            // A signal interrupted the wait: the turn ends early and the loop turns again.
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => Ok(()),
            // The CQ is overcommitted: the loop reaps, then the next turn enters again.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                stats.cq_overflows += 1;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
