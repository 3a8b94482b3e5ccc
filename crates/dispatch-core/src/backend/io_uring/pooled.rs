//! Pooled receives on io_uring: the SQE of each step (the kernel's provided-buffer ring, or
//! the loop's own try-then-poll where the ring is missing or masked), and lending the pool's
//! buffers to the ring as they come back, as many as the load needs.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::Fd;

use super::{IoUringBackend, NO_POLL, POOL_GROUP};
use crate::backend::PushError;
use crate::pool::Pool;

/// What a pooled receive's step is for (`Args::RecvPooled`).
#[derive(Debug, Clone, Copy)]
pub(super) struct PooledStep {
    pub(super) fd: RawFd,
    pub(super) multishot: bool,
    pub(super) datagram: bool,
}

impl IoUringBackend {
    /// Builds the SQE of the next step of the pooled receive in slot `i`, and whether it is a
    /// poll for readability (which holds no buffer). With a provided-buffer ring: the
    /// receive, unless the ring is empty and the socket not known to be readable. Without
    /// (see `pbuf_ring`): the poll after a receive that found nothing, else a non-blocking
    /// receive into a buffer picked now; with no buffer free, a poll, or, once the socket is
    /// known to be readable, a wait for a buffer. The receive's pointer is only
    /// dereferenced by the kernel, under `push`'s contract.
    pub(super) fn pooled_entry(
        &mut self,
        i: usize,
        user_data: u64,
        step: PooledStep,
        pool: &mut Pool,
    ) -> Result<(Entry, bool), PushError> {
        let PooledStep {
            fd,
            multishot,
            datagram,
        } = step;
        let readable = self.readable[i] == !user_data;
        let poll = || opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build();
        if self.pbuf_ring {
            if self.ring_free == 0 && !readable {
                return Ok((poll(), true));
            }
            let entry = if datagram && multishot && self.multishot {
                self.dgram_multi_entry(fd)
            } else if datagram {
                self.dgram_select_entry(i, fd, pool.buffer_size())
            } else if multishot && self.multishot {
                opcode::RecvMulti::new(Fd(fd), POOL_GROUP).build()
            } else {
                opcode::Recv::new(Fd(fd), std::ptr::null_mut(), pool.buffer_size())
                    .buf_group(POOL_GROUP)
                    .build()
                    .flags(sys_uring::squeue::Flags::BUFFER_SELECT)
            };
            return Ok((entry, false));
        }
        if self.poll_next[i] == !user_data {
            // The last try found nothing: wait for data holding no buffer.
            self.poll_next[i] = !NO_POLL;
            return Ok((poll(), true));
        }
        // Pick the buffer now (given back if the push fails) and receive without waiting.
        if self.ring.sq_space() == 0 {
            return Err(PushError::SqFull);
        }
        let Some(bid) = pool.take_free() else {
            return if readable {
                Err(PushError::NoBuffer)
            } else {
                Ok((poll(), true))
            };
        };
        self.lent[i] = bid + 1;
        if datagram {
            return Ok((self.dgram_lent_entry(i, fd, pool, bid), false));
        }
        let entry = opcode::Recv::new(Fd(fd), pool.buffer_ptr(bid), pool.buffer_size())
            .flags(libc::MSG_DONTWAIT)
            .build();
        Ok((entry, false))
    }

    /// Gives the buffers of dropped handles back: to the kernel's ring (one release store
    /// for all of them), or among the pool's free ones in the fallback. How many.
    pub(crate) fn recycle(&mut self, pool: &mut Pool) -> u32 {
        if !self.pbuf_ring {
            return pool.take_returned_into_free();
        }
        let count = pool.take_returned_into_free();
        self.top_up(pool);
        count
    }

    /// Pooled receives wait for buffers: the ring keeps twice as many from now on (up to the
    /// pool), which the top-up lends at once if they are free.
    pub(crate) fn pool_starved(&mut self, pool: &mut Pool) {
        if self.pbuf_ring && self.ring_target < u32::from(pool.count()) {
            self.ring_target = (self.ring_target * 2).min(u32::from(pool.count()));
            self.top_up(pool);
        }
    }

    /// Lends free buffers to the kernel's ring until it holds `ring_target` (one release store
    /// for all of them), the most recently returned first.
    fn top_up(&mut self, pool: &mut Pool) {
        if self.ring_free >= self.ring_target || !pool.has_free() {
            return;
        }
        let mut buf_ring = self.ring.buf_ring(POOL_GROUP).expect("the pool's ring");
        let size = pool.buffer_size();
        while self.ring_free < self.ring_target {
            let Some(bid) = pool.take_free() else {
                break;
            };
            // SAFETY: the buffer is free (taken off the pool's free stack): nobody else
            // touches it until the kernel hands it out again; the pool's memory lives as
            // long as the loop.
            unsafe { buf_ring.push(bid, pool.buffer_ptr(bid), size) };
            self.ring_free += 1;
        }
        buf_ring.publish();
    }

    /// Whether a pooled receive could find a buffer now.
    pub(crate) fn buffers_available(&self, pool: &Pool) -> bool {
        if self.pbuf_ring {
            self.ring_free > 0
        } else {
            pool.has_free()
        }
    }
}
