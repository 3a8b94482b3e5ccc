//! Decoding a marked completion (`IoUringBackend::marks`): a wake-up wait's count, a file
//! operation run inline, a pooled receive's steps (a poll, a receive into a lent buffer, a
//! datagram put into `datagram.rs`'s layout). Out of line: a plain operation never comes
//! here.

use super::dgram::{fix_up, DgramHdr};
use super::file::NO_INLINE;
use super::{MARK_DGRAM, MARK_INLINE, MARK_LENT, MARK_MULTI, MARK_POLLING, MARK_WAKEUP, NO_BID};
use crate::completion::{buffer_flags, F_MORE};
use crate::pool::Pool;

/// The per-slot tables `reap` needs for a marked completion (see `IoUringBackend::marks`).
pub(super) struct Marked<'a> {
    pub(super) words: &'a [u64],
    pub(super) inline_results: &'a mut [i32],
    pub(super) lent: &'a mut [u16],
    pub(super) poll_next: &'a mut [u64],
    pub(super) readable: &'a mut [u64],
    pub(super) dgrams: &'a [Option<Box<DgramHdr>>],
    /// `IoUringBackend::multishots`.
    pub(super) multishots: &'a mut u32,
}

impl Marked<'_> {
    /// The result and flags of a completion for slot `idx`, marked `mark`, decoded so far
    /// as `result` and `flags`; and the mark the slot keeps (a kernel multishot's, while it
    /// goes on; else 0).
    #[inline(never)]
    pub(super) fn result(
        &mut self,
        idx: usize,
        mark: u8,
        cqe: sys_uring::Cqe,
        result: i32,
        flags: u32,
        pool: Option<&mut Pool>,
    ) -> (i32, u32, u8) {
        if mark == MARK_MULTI {
            if flags & F_MORE != 0 {
                return (result, flags, MARK_MULTI);
            }
            assert!(*self.multishots > 0, "a multishot ends once");
            *self.multishots -= 1;
            return (result, flags, 0);
        }
        let (result, flags) = self.step_result(idx, mark, cqe, result, flags, pool);
        (result, flags, 0)
    }

    /// `result` for every mark but a kernel multishot's.
    fn step_result(
        &mut self,
        idx: usize,
        mark: u8,
        cqe: sys_uring::Cqe,
        mut result: i32,
        mut flags: u32,
        mut pool: Option<&mut Pool>,
    ) -> (i32, u32) {
        if mark & MARK_INLINE != 0 {
            // Whatever the `NOP` reports (even a cancel): the operation ran.
            let inline = std::mem::replace(&mut self.inline_results[idx], 0) ^ NO_INLINE;
            assert_ne!(
                inline, NO_INLINE,
                "slot {idx} marked inline without a result"
            );
            return (inline, flags);
        }
        if mark & MARK_WAKEUP != 0 {
            // A wake-up wait: its result is the counter the kernel read, not 8 bytes.
            let result = match cqe.result {
                8 => i32::try_from(self.words[idx]).unwrap_or(i32::MAX),
                n if n >= 0 => panic!("eventfd read of {n} bytes"),
                _ => result,
            };
            return (result, flags);
        }
        if mark & MARK_LENT != 0 {
            let bid = std::mem::replace(&mut self.lent[idx], 0).wrapping_sub(1);
            assert_ne!(bid, NO_BID, "slot {idx} marked with no buffer lent");
            if mark & MARK_DGRAM != 0 {
                // A datagram landed in the lent buffer: its header goes in front of it.
                let dgram = self.dgrams.get(idx).and_then(|dgram| dgram.as_deref());
                (result, flags) = fix_up(dgram, Some(bid), result, flags, pool.as_deref_mut());
            }
            // The fallback's recv: the completion carries the buffer only if bytes landed;
            // one that found nothing polls next (EINTR: the loop submits it again, and it
            // holds no buffer while it waits).
            if result > 0 {
                flags |= buffer_flags(bid);
            } else {
                pool.expect("a lent buffer has a pool").put_free(bid);
            }
            if result == -libc::EAGAIN {
                self.poll_next[idx] = !cqe.user_data;
                result = -libc::EINTR;
            }
        } else if mark & MARK_DGRAM != 0 {
            // A datagram from the ring: moved behind its header.
            let dgram = self.dgrams.get(idx).and_then(|dgram| dgram.as_deref());
            (result, flags) = fix_up(dgram, None, result, flags, pool);
        } else if mark & MARK_POLLING != 0 && result > 0 {
            // A pooled receive's poll: readable (or hung up, or in error, which the recv
            // reports). The loop submits the operation again: its recv.
            self.readable[idx] = !cqe.user_data;
            result = -libc::EINTR;
        }
        (result, flags)
    }
}
