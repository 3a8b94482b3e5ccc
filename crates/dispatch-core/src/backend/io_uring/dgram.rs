//! Datagram receives into pool buffers on io_uring (`Io::recv_from_multishot`): the
//! kernel's multishot `RECVMSG` on the provided-buffer ring where it has one (6.0), which
//! writes `datagram.rs`'s layout itself; elsewhere a single-shot `RECVMSG` the loop re-arms,
//! whose result the reap turns into the same layout (`fix_up`).
//!
//! Memory the kernel reads: the multishot's header template (only its name and control
//! lengths matter), one for every operation, boxed in the backend and never changed; a
//! single-shot step's header, iovec and (from the ring) address room, per slot, boxed the
//! first time the slot receives a datagram and kept until the backend drops. Both stay put
//! until the completion is reaped (`push`'s contract).
#![allow(unsafe_code)]

use std::os::fd::RawFd;

use sys_uring::opcode;
use sys_uring::squeue::{Entry, Flags};
use sys_uring::types::Fd;

use super::sqe::slot_entry;
use super::{IoUringBackend, POOL_GROUP};
use crate::completion::{buffer_flags, flags_bid};
use crate::datagram::{self, Header, HEADER_LEN, NAME_LEN, PAYLOAD_AT};
use crate::pool::Pool;

/// `MSG_TRUNC` asked for: the kernel then reports a cut datagram's true length.
const RECV_FLAGS: u32 = libc::MSG_TRUNC as u32;

/// A single-shot datagram step's `recvmsg` arguments, in one heap block per slot.
pub(super) struct DgramHdr {
    hdr: libc::msghdr,
    iov: libc::iovec,
    /// The sender, for a receive from the ring (the buffer is not known before the kernel
    /// picks it); a receive into a lent buffer has the kernel write it into the buffer.
    name: libc::sockaddr_in6,
}

impl DgramHdr {
    fn new() -> Box<DgramHdr> {
        // SAFETY: `msghdr`, `iovec` and `sockaddr_in6` are plain C structs of pointers and
        // integers, for which all zeroes is a valid value.
        Box::new(unsafe { std::mem::zeroed::<DgramHdr>() })
    }
}

/// The multishot's header template: room for a `sockaddr_in6`, no control data.
pub(super) fn template() -> Box<libc::msghdr> {
    let mut hdr = datagram::zeroed_msghdr();
    hdr.msg_namelen = NAME_LEN as libc::socklen_t;
    Box::new(hdr)
}

impl IoUringBackend {
    /// The kernel's multishot `RECVMSG` from the pool's ring.
    pub(super) fn dgram_multi_entry(&self, fd: RawFd) -> Entry {
        opcode::RecvMsgMulti::new(Fd(fd), &*self.dgram_template, POOL_GROUP)
            .flags(RECV_FLAGS)
            .build()
    }

    /// A single-shot `RECVMSG` into a buffer the kernel picks from the ring: the payload
    /// lands at the buffer's start, at most the room the layout leaves it, and the sender in
    /// the slot's own room; `fix_up` moves them into place.
    pub(super) fn dgram_select_entry(&mut self, idx: usize, fd: RawFd, size: u32) -> Entry {
        let room = (size as usize)
            .checked_sub(PAYLOAD_AT)
            .expect("checked at schedule");
        let dgram = slot_entry(&mut self.dgrams, idx as u32, || None);
        let dgram = dgram.get_or_insert_with(DgramHdr::new);
        dgram.hdr = datagram::zeroed_msghdr();
        dgram.hdr.msg_name = (&raw mut dgram.name).cast();
        dgram.hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        dgram.iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: room,
        };
        dgram.hdr.msg_iov = &raw mut dgram.iov;
        dgram.hdr.msg_iovlen = 1;
        opcode::RecvMsg::new(Fd(fd), &raw mut dgram.hdr)
            .buf_group(POOL_GROUP)
            .flags(RECV_FLAGS)
            .build()
            .flags(Flags::BUFFER_SELECT)
    }

    /// A non-blocking `RECVMSG` into the pool buffer `bid`, lent to slot `idx`: sender and
    /// payload land where the layout wants them; `fix_up` writes the header.
    pub(super) fn dgram_lent_entry(
        &mut self,
        idx: usize,
        fd: RawFd,
        pool: &Pool,
        bid: u16,
    ) -> Entry {
        let dgram = slot_entry(&mut self.dgrams, idx as u32, || None);
        let dgram = dgram.get_or_insert_with(DgramHdr::new);
        dgram.hdr = datagram::zeroed_msghdr();
        let size = pool.buffer_size() as usize;
        datagram::point(&mut dgram.hdr, &mut dgram.iov, pool.buffer_ptr(bid), size);
        opcode::RecvMsg::new(Fd(fd), &raw mut dgram.hdr)
            .flags(RECV_FLAGS | libc::MSG_DONTWAIT as u32)
            .build()
    }
}

/// Turns a single-shot datagram step's result (the kernel's count, the true length with
/// `MSG_TRUNC`) into the layout's: the header written (and, from the ring, the payload and
/// sender moved into place), the result the bytes of the buffer used. `lent`: the buffer
/// lent to the step, if any (otherwise the completion's flags name the ring's). Errors and
/// steps without a buffer pass unchanged.
pub(super) fn fix_up(
    dgram: Option<&DgramHdr>,
    lent: Option<u16>,
    result: i32,
    flags: u32,
    pool: Option<&mut Pool>,
) -> (i32, u32) {
    if result < 0 {
        return (result, flags);
    }
    let dgram = dgram.expect("a datagram step has its header");
    let pool = pool.expect("a datagram receive has a pool");
    // An empty datagram from the ring comes without a buffer (the kernel recycles the one
    // it picked for a 0-byte receive): one from the pool's free stack holds its sender, if
    // there is one; otherwise the callback gets it without (`datagram_value`).
    let bid = lent.or(flags_bid(flags)).or_else(|| pool.take_free());
    let Some(bid) = bid else {
        return (result, flags);
    };
    let size = pool.buffer_size() as usize;
    let len = usize::try_from(result).expect("non-negative");
    let kept = len.min(size - PAYLOAD_AT);
    // SAFETY: buffer `bid` belongs to this completion (lent to the step, or picked by the
    // kernel from the ring for it): nothing else reads or writes it until the callback's
    // handle returns it; it holds `size` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(pool.buffer_ptr(bid), size) };
    if lent.is_none() {
        // From the ring: the payload at the start moves behind the header and the name.
        buf.copy_within(..kept, PAYLOAD_AT);
        let name: *const libc::sockaddr_in6 = &dgram.name;
        // SAFETY: a `sockaddr_in6` is `NAME_LEN` bytes of plain data.
        let name = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), NAME_LEN) };
        buf[HEADER_LEN..PAYLOAD_AT].copy_from_slice(name);
    }
    let header = Header {
        namelen: dgram.hdr.msg_namelen,
        payloadlen: u32::try_from(len).unwrap_or(u32::MAX),
        flags: dgram.hdr.msg_flags as u32,
    };
    header.write(buf);
    (
        datagram::buffer_result(kept, size),
        flags | buffer_flags(bid),
    )
}
