//! How an operation is scheduled: a slot from its budget, the arguments built in place in
//! the argument table once the slot is found (so a failure has none to give back but the
//! caller's value), the callback stored, and the slot handed to the backend
//! (`Io::enqueue`). The public operations (`ops.rs`, `file.rs`) are thin wrappers over these.

use std::os::fd::RawFd;

use super::{BufCallback, Callback, DatagramCallback, Io, PooledCallback};
use crate::datagram::PAYLOAD_AT;
use crate::operation::{Args, OpId, ScheduleError, ScheduleErrorKind, Tag};
use crate::slots::Budget;

impl<C> Io<C> {
    /// Schedules an operation whose arguments (`args` builds them) own nothing: `value`
    /// comes back in the error when no slot is free.
    #[inline(always)]
    pub(super) fn schedule<T>(
        &mut self,
        tag: Tag,
        args: impl FnOnce() -> Args,
        callback: Callback<C>,
        value: T,
    ) -> Result<OpId, ScheduleError<T>> {
        // The arguments are built only once a slot is found (`Slots::build_args`), so a
        // failure has none to drop, and a success builds them right in the table.
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(value));
        };
        Ok(self.start_with(idx, tag, args, callback))
    }

    /// `schedule` for a special operation (`Slot::special`: a multishot, a pooled receive),
    /// marked before it goes to the backend.
    pub(super) fn schedule_special(
        &mut self,
        tag: Tag,
        args: impl FnOnce() -> Args,
        callback: Callback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(()));
        };
        self.slots[idx].special = true;
        Ok(self.start_with(idx, tag, args, callback))
    }

    /// `schedule` for an operation on `buf` (a send or a receive on `fd`: `args` builds its
    /// arguments), which the error returns.
    #[inline(always)]
    pub(super) fn schedule_buf(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        args: fn(RawFd, Vec<u8>) -> Args,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(buf));
        };
        Ok(self.start_with(idx, tag, move || args(fd, buf), Callback::Buf(callback)))
    }

    /// `schedule_buf` for operations that fill the buffer's spare capacity, which must exist:
    /// a 0-byte receive would look like end of file.
    pub(super) fn schedule_receive(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: Vec<u8>,
        callback: BufCallback<C>,
    ) -> Result<OpId, ScheduleError<Vec<u8>>> {
        if buf.len() == buf.capacity() {
            return Err(ScheduleError {
                kind: ScheduleErrorKind::NoSpareCapacity,
                value: buf,
            });
        }
        let args = |fd, buf| Args::Recv { fd, buf };
        self.schedule_buf(tag, fd, buf, args, callback)
    }

    pub(super) fn schedule_pooled(
        &mut self,
        tag: Tag,
        fd: RawFd,
        multishot: bool,
        callback: PooledCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.check_pool(0)?;
        let args = move || Args::RecvPooled {
            fd,
            multishot,
            datagram: false,
        };
        self.schedule_special(tag, args, Callback::Pooled(callback))
    }

    /// `schedule_pooled` for a multishot datagram receive (`datagram.rs`'s layout), whose
    /// buffers need room for the header and the sender before the payload.
    pub(super) fn schedule_datagrams(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: DatagramCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.check_pool(PAYLOAD_AT as u32 + 1)?;
        let args = move || Args::RecvPooled {
            fd,
            multishot: true,
            datagram: true,
        };
        self.schedule_special(tag, args, Callback::Datagram(callback))
    }

    /// The loop has a pool whose buffers hold at least `size_min` bytes.
    fn check_pool(&self, size_min: u32) -> Result<(), ScheduleError<()>> {
        let kind = match &self.pool {
            None => ScheduleErrorKind::NoPool,
            Some(pool) if pool.buffer_size() < size_min => {
                ScheduleErrorKind::PoolBuffersTooSmall { size_min }
            }
            Some(_) => return Ok(()),
        };
        Err(ScheduleError { kind, value: () })
    }

    /// `schedule` for an operation that owns `value` (a buffer, a path): it becomes the
    /// operation's arguments (`args`) only once a slot is found, and comes back in the error
    /// otherwise.
    pub(super) fn schedule_owned<T>(
        &mut self,
        tag: Tag,
        value: T,
        args: impl FnOnce(T) -> Args,
        callback: Callback<C>,
    ) -> Result<OpId, ScheduleError<T>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(value));
        };
        Ok(self.start_with(idx, tag, move || args(value), callback))
    }

    pub(super) fn exhausted<T>(&self, value: T) -> ScheduleError<T> {
        ScheduleError {
            kind: ScheduleErrorKind::SlotsExhausted {
                ops_max: self.slots.ops_max(),
            },
            value,
        }
    }

    /// Fills slot `idx` and hands it to the backend. Inlined into each operation, as is
    /// `Io::push`: the one out-of-line step is the backend's push (io_uring's builds the
    /// SQE). `start_with` builds the arguments in place instead of copying `args` in.
    #[inline(always)]
    pub(super) fn start(&mut self, idx: u32, tag: Tag, args: Args, callback: Callback<C>) -> OpId {
        self.start_with(idx, tag, || args, callback)
    }

    /// `start` with arguments that `args` builds, in place (`Slots::build_args`).
    #[inline(always)]
    pub(super) fn start_with(
        &mut self,
        idx: u32,
        tag: Tag,
        args: impl FnOnce() -> Args,
        callback: Callback<C>,
    ) -> OpId {
        // `alloc` asserted the slot free; `build_args` asserts it held no arguments.
        let slot = &mut self.slots[idx];
        slot.tag = tag;
        slot.callback = callback;
        // Read while the slot is at hand: after the backend's push it would be reached again.
        let id = self.slots.id(idx);
        self.slots.build_args(idx, args);
        self.enqueue(idx);
        id
    }
}
