//! The callback shapes a program passes with its operations, and the callback as a slot
//! keeps it: beside `Io`, which every shape takes, so that the modules below the loop
//! (operations' arguments, the slot table) never import it.

use std::io;
use std::os::fd::OwnedFd;

use super::Io;
use crate::aligned::AlignedBuf;
use crate::datagram::Datagram;
use crate::filebuf::{Bytes, BytesList};
use crate::msg::Msg;
use crate::operation::{BufResult, FileStat, Shot, Tag};
use crate::outbuf::OutBuf;
use crate::poll::PollEvents;
use crate::pool::PoolBuf;
use crate::slots::Stored;

/// Callback of an operation that yields a new file descriptor (accept, openat). The
/// descriptor is owned: dropping it closes it, so none leaks.
pub type FdCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<OwnedFd>);
/// Callback of an operation on a buffer (recv, send, read, write).
pub type BufCallback<C> = fn(&mut C, &mut Io<C>, Tag, BufResult);
/// Callback of a file read or write ([`Io::read`], [`Io::write`]) on a buffer of kind `B`
/// (`Vec<u8>`, the default, or [`AlignedBuf`]): the byte count and the buffer.
pub type FileCallback<C, B = Vec<u8>> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, B));
/// Callback of a vectored file read or write ([`Io::read_vectored`],
/// [`Io::write_vectored`]): the byte count and the buffers.
pub type FileVectoredCallback<C, B = Vec<u8>> =
    fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, Vec<B>));
/// Callback of [`Io::statx`]: what it found out about the file.
pub type StatCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<FileStat>);
/// Callback of an operation with no value (connect, shutdown, close, fsync, timeout, cancel,
/// nop).
pub type UnitCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<()>);
/// Callback of a wake-up wait: how many wake-ups it coalesced.
pub type CountCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<u64>);
/// Callback of a pooled receive ([`Io::recv_pooled`], [`Io::recv_multishot`]): the bytes in a
/// pool buffer (empty at end of stream), and whether more completions follow.
pub type PooledCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<PoolBuf>);
/// Callback of a multishot datagram receive ([`Io::recv_from_multishot`]): one datagram per
/// call (its payload in a pool buffer, its sender, whether it was truncated), and whether
/// more follow.
pub type DatagramCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<Datagram>);
/// Callback of a multishot accept ([`Io::accept_multishot`]): one accepted socket per call,
/// and whether more follow.
pub type AcceptCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<OwnedFd>);
/// Callback of a send from a pool buffer ([`Io::send_pooled`]): the byte count sent (possibly
/// short) and the buffer, whose view is unchanged.
pub type PoolSendCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, PoolBuf));
/// Callback of a vectored send ([`Io::send_vectored`]): the byte count sent (possibly short)
/// and the buffers, unchanged ([`OutBuf::consume`] drops what was sent).
pub type VectoredCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, Vec<OutBuf>));
/// Callback of a message operation ([`Io::sendmsg`], [`Io::recvmsg`], [`Io::send_to`],
/// [`Io::recv_from`]): the byte count and the message, which after a receive holds the
/// bytes, the sender, the flags and the descriptors that came.
pub type MsgCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, Msg));

/// Callback of [`Io::poll`]: the events that fired (see [`PollEvents`]).
pub type PollCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<PollEvents>);
/// Callback of [`Io::poll_multishot`]: the events that fired, and whether more follow.
pub type PollShotCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<PollEvents>);

/// A callback, stored in the operation's slot: a plain function pointer, no allocation.
/// (`pub` only for the sealed [`IoBuf`]'s methods; the module is private.)
#[allow(missing_debug_implementations)]
pub enum Callback<C> {
    None,
    Fd(FdCallback<C>),
    Buf(BufCallback<C>),
    Unit(UnitCallback<C>),
    Count(CountCallback<C>),
    Pooled(PooledCallback<C>),
    Datagram(DatagramCallback<C>),
    Accepted(AcceptCallback<C>),
    Poll(PollCallback<C>),
    PollShot(PollShotCallback<C>),
    PoolSend(PoolSendCallback<C>),
    Vectored(VectoredCallback<C>),
    Aligned(FileCallback<C, AlignedBuf>),
    BufList(FileVectoredCallback<C, Vec<u8>>),
    AlignedList(FileVectoredCallback<C, AlignedBuf>),
    Stat(StatCallback<C>),
    Msg(MsgCallback<C>),
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

/// The buffers file reads and writes take ([`Io::read`], [`Io::write`],
/// [`Io::read_vectored`], [`Io::write_vectored`]): `Vec<u8>` and [`AlignedBuf`] (for
/// `O_DIRECT`). Sealed: the loop must know how to hold each kind while the kernel uses it.
pub trait IoBuf: sealed::Sealed {}

impl IoBuf for Vec<u8> {}
impl IoBuf for AlignedBuf {}

pub(crate) mod sealed {
    use super::{AlignedBuf, Bytes, BytesList, Callback, FileCallback, FileVectoredCallback};

    /// How the loop holds a kind of buffer, and gets it back out.
    pub trait Sealed: Sized {
        /// Into the shape the backends use.
        fn into_bytes(self) -> Bytes;
        /// Back out of it: the kind that went in.
        fn from_bytes(bytes: Bytes) -> Self;
        /// A list, into the shape the backends use.
        fn into_list(bufs: Vec<Self>) -> BytesList;
        /// A list, back out.
        fn from_list(list: BytesList) -> Vec<Self>;
        /// The callback as a slot keeps it.
        fn callback<C>(callback: FileCallback<C, Self>) -> Callback<C>;
        /// A vectored callback as a slot keeps it.
        fn list_callback<C>(callback: FileVectoredCallback<C, Self>) -> Callback<C>;
    }

    impl Sealed for Vec<u8> {
        fn into_bytes(self) -> Bytes {
            Bytes::Vec(self)
        }
        fn from_bytes(bytes: Bytes) -> Self {
            let Bytes::Vec(buf) = bytes else {
                unreachable!("a Vec<u8> operation holds a Vec<u8>")
            };
            buf
        }
        fn into_list(bufs: Vec<Self>) -> BytesList {
            BytesList::Vec(bufs)
        }
        fn from_list(list: BytesList) -> Vec<Self> {
            let BytesList::Vec(bufs) = list else {
                unreachable!("a Vec<u8> operation holds Vec<u8>s")
            };
            bufs
        }
        fn callback<C>(callback: FileCallback<C, Self>) -> Callback<C> {
            Callback::Buf(callback)
        }
        fn list_callback<C>(callback: FileVectoredCallback<C, Self>) -> Callback<C> {
            Callback::BufList(callback)
        }
    }

    impl Sealed for AlignedBuf {
        fn into_bytes(self) -> Bytes {
            Bytes::Aligned(self)
        }
        fn from_bytes(bytes: Bytes) -> Self {
            let Bytes::Aligned(buf) = bytes else {
                unreachable!("an AlignedBuf operation holds an AlignedBuf")
            };
            buf
        }
        fn into_list(bufs: Vec<Self>) -> BytesList {
            BytesList::Aligned(bufs)
        }
        fn from_list(list: BytesList) -> Vec<Self> {
            let BytesList::Aligned(bufs) = list else {
                unreachable!("an AlignedBuf operation holds AlignedBufs")
            };
            bufs
        }
        fn callback<C>(callback: FileCallback<C, Self>) -> Callback<C> {
            Callback::Aligned(callback)
        }
        fn list_callback<C>(callback: FileVectoredCallback<C, Self>) -> Callback<C> {
            Callback::AlignedList(callback)
        }
    }
}
