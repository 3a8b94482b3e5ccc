//! The callback shapes a program passes with its operations, and the callback as a slot
//! keeps it: beside `Io`, which every shape takes, so that the modules below the loop
//! (operations' arguments, the slot table) never import it.

use std::io;
use std::os::fd::OwnedFd;

use super::Io;
use crate::operation::{BufResult, Shot, Tag};
use crate::outbuf::OutBuf;
use crate::pool::PoolBuf;
use crate::slots::Stored;

/// Callback of an operation that yields a new file descriptor (accept, openat). The
/// descriptor is owned: dropping it closes it, so none leaks.
pub type FdCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<OwnedFd>);
/// Callback of an operation on a buffer (recv, send, read, write).
pub type BufCallback<C> = fn(&mut C, &mut Io<C>, Tag, BufResult);
/// Callback of an operation with no value (connect, shutdown, close, fsync, timeout, cancel,
/// nop).
pub type UnitCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<()>);
/// Callback of a wake-up wait: how many wake-ups it coalesced.
pub type CountCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<u64>);
/// Callback of a pooled receive ([`Io::recv_pooled`], [`Io::recv_multishot`]): the bytes in a
/// pool buffer (empty at end of stream), and whether more completions follow.
pub type PooledCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<PoolBuf>);
/// Callback of a multishot accept ([`Io::accept_multishot`]): one accepted socket per call,
/// and whether more follow.
pub type AcceptCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<OwnedFd>);
/// Callback of a send from a pool buffer ([`Io::send_pooled`]): the byte count sent (possibly
/// short) and the buffer, whose view is unchanged.
pub type PoolSendCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, PoolBuf));
/// Callback of a vectored send ([`Io::send_vectored`]): the byte count sent (possibly short)
/// and the buffers, unchanged ([`OutBuf::consume`] drops what was sent).
pub type VectoredCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, Vec<OutBuf>));

/// A callback, stored in the operation's slot: a plain function pointer, no allocation.
pub(crate) enum Callback<C> {
    None,
    Fd(FdCallback<C>),
    Buf(BufCallback<C>),
    Unit(UnitCallback<C>),
    Count(CountCallback<C>),
    Pooled(PooledCallback<C>),
    Accepted(AcceptCallback<C>),
    PoolSend(PoolSendCallback<C>),
    Vectored(VectoredCallback<C>),
    /// The loop's own operation (the cancel of an operation whose deadline passed): its
    /// result is dropped, no callback runs and it is not counted as completed.
    Internal,
}

// Function pointers are `Copy` whatever `C` is; a derive would ask `C: Copy`.
impl<C> Clone for Callback<C> {
    fn clone(&self) -> Callback<C> {
        *self
    }
}

impl<C> Copy for Callback<C> {}

impl<C> Stored for Callback<C> {
    const NONE: Callback<C> = Callback::None;

    fn is_none(&self) -> bool {
        matches!(self, Callback::None)
    }
}
