//! Datagrams received into pool buffers ([`crate::Io::recv_from_multishot`]): the layout
//! every backend writes into the buffer, and the [`Datagram`] a callback gets.
//!
//! The layout is io_uring's: a multishot `RECVMSG` on a provided-buffer ring (6.0) writes
//! `struct io_uring_recvmsg_out` (16 bytes: the sender's address length, the control
//! length, the datagram's length, `msg_flags`), then the sender's address in the room the
//! operation's header template gives (`NAME_LEN`, a `sockaddr_in6`), then the payload. The
//! readiness backends, the simulator and io_uring's single-shot fallbacks write the same, so
//! one decoding (`datagram_value`) serves them all and the buffer needs no second copy on
//! the fast path. The callback's [`PoolBuf`] views the payload only.
//!
//! Why a `sockaddr_in6` of room rather than a `sockaddr_storage`: 28 bytes of overhead per
//! buffer instead of 128, and every IP address fits. A Unix datagram socket's sender path
//! does not (and is often unnamed anyway): the sender is then `None`; `Io::recv_from` with a
//! `Msg` names it.
#![allow(unsafe_code)]

use std::mem::size_of;
use std::net::SocketAddr;

use crate::msg::read_sockaddr;
#[cfg(feature = "sim")]
use crate::msg::write_sockaddr;
use crate::pool::PoolBuf;

/// `struct io_uring_recvmsg_out`'s size: four `u32`s.
pub(crate) const HEADER_LEN: usize = 16;
/// The room for the sender's address: a `sockaddr_in6` (28 bytes on Linux, FreeBSD and
/// macOS), which holds an IPv4 address too.
pub(crate) const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
/// Where the payload starts in the buffer.
pub(crate) const PAYLOAD_AT: usize = HEADER_LEN + NAME_LEN;

/// The bytes of each pool buffer that a datagram receive ([`crate::Io::recv_from_multishot`])
/// keeps for the header and the sender's address before the payload: a pool of
/// `size + DATAGRAM_HEADROOM`-byte buffers receives datagrams of up to `size` bytes whole.
pub const DATAGRAM_HEADROOM: u32 = PAYLOAD_AT as u32;

const _: () = assert!(NAME_LEN == 28);
const _: () = assert!(NAME_LEN <= size_of::<libc::sockaddr_storage>());

/// One datagram received by [`crate::Io::recv_from_multishot`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Datagram {
    /// The bytes received, in a pool buffer that goes back to the pool when dropped. Its
    /// view is the payload only (the buffer's first bytes hold the header the kernel wrote:
    /// [`PoolBuf::capacity`] less 44 bytes is the most a datagram brings).
    pub buf: PoolBuf,
    /// The sender's IP address; `None` on a socket of another family (a Unix datagram
    /// socket: use `Io::recv_from` with a `Msg` for a sender's path).
    pub peer: Option<SocketAddr>,
    /// The datagram was longer than the buffer's room (`MSG_TRUNC`): the rest is lost, and
    /// said to be.
    pub truncated: bool,
    /// The datagram's length as the kernel reported it: `buf.len()` unless truncated. A
    /// truncated datagram's true length on Linux and the simulator (`MSG_TRUNC` asks for it);
    /// FreeBSD and macOS do not tell it, and there it is `buf.len()`.
    pub len: usize,
}

/// The header fields of `io_uring_recvmsg_out`, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) namelen: u32,
    pub(crate) payloadlen: u32,
    pub(crate) flags: u32,
}

impl Header {
    pub(crate) fn read(bytes: &[u8]) -> Header {
        assert!(bytes.len() >= HEADER_LEN);
        let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4"));
        Header {
            namelen: word(0),
            payloadlen: word(8),
            flags: word(12),
        }
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `buf` (no control data).
    pub(crate) fn write(self, buf: &mut [u8]) {
        assert!(buf.len() >= HEADER_LEN);
        let words = [self.namelen, 0, self.payloadlen, self.flags];
        for (at, word) in words.iter().enumerate() {
            buf[at * 4..at * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
}

/// The result a backend reports for a datagram of `len` bytes (the kernel's count: the true
/// length where `MSG_TRUNC` asked for it) of which `kept` landed in a buffer of `size`
/// bytes: the bytes of the buffer used, header and name included, as io_uring reports it.
pub(crate) fn buffer_result(kept: usize, size: usize) -> i32 {
    assert!(
        PAYLOAD_AT + kept <= size,
        "{kept} bytes kept in a {size}-byte buffer"
    );
    i32::try_from(PAYLOAD_AT + kept).expect("a pool buffer's size fits i32")
}

/// Points `hdr` (and `iov`) at the address and payload areas of the pool buffer at `buf`,
/// `size` bytes long, for a `recvmsg` that writes the layout's name and payload; the
/// header is written after it (`Header::write`). The pointers are only dereferenced by
/// the kernel, by whoever holds the buffer.
pub(crate) fn point(hdr: &mut libc::msghdr, iov: &mut libc::iovec, buf: *mut u8, size: usize) {
    assert!(
        size > PAYLOAD_AT,
        "a {size}-byte buffer has no room for a datagram"
    );
    // `wrapping_add`: no dereference here, and `size > PAYLOAD_AT` keeps both in the buffer.
    hdr.msg_name = buf.wrapping_add(HEADER_LEN).cast();
    hdr.msg_namelen = NAME_LEN as libc::socklen_t;
    *iov = libc::iovec {
        iov_base: buf.wrapping_add(PAYLOAD_AT).cast(),
        iov_len: size - PAYLOAD_AT,
    };
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = std::ptr::null_mut();
    hdr.msg_controllen = 0;
    hdr.msg_flags = 0;
}

/// A zeroed `msghdr`.
pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is a plain C struct of pointers and integers, for which all zeroes is
    // a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// The sender in the layout's name area (`namelen` as the kernel gave it).
pub(crate) fn sender(name: &[u8], namelen: u32) -> Option<SocketAddr> {
    let len = (namelen as usize).min(NAME_LEN);
    // Copied into aligned storage: a pool buffer's size need not keep the name aligned.
    // SAFETY: all zeroes is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let ptr: *mut libc::sockaddr_storage = &mut storage;
    // SAFETY: `len <= NAME_LEN <= size_of::<sockaddr_storage>()` (asserted at compile
    // time), and `name` holds at least `len` bytes (asserted by the slice's bounds below).
    unsafe { std::ptr::copy_nonoverlapping(name[..len].as_ptr(), ptr.cast::<u8>(), len) };
    read_sockaddr(&storage, len as libc::socklen_t)
}

/// Writes `addr` into a layout's name area (`NAME_LEN` bytes or more), as the kernel
/// would; the length it takes. (The simulator's.)
#[cfg(feature = "sim")]
pub(crate) fn write_name(name: &mut [u8], addr: SocketAddr) -> u32 {
    // SAFETY: all zeroes is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = write_sockaddr(&mut storage, addr) as usize;
    assert!(len <= NAME_LEN, "an IP address fits a sockaddr_in6");
    let ptr: *const libc::sockaddr_storage = &storage;
    // SAFETY: `storage` is plain data at least `len` bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    name[..len].copy_from_slice(bytes);
    u32::try_from(len).expect("at most 28")
}
