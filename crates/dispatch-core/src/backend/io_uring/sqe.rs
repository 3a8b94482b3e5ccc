//! What SQEs point at and how results come back: socket addresses, the gather of a vectored
//! send, per-slot tables that grow as slots are first used, and the kernel's errnos mapped.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::RawFd;

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::{Fd, Timespec};

use crate::operation::Args;
use crate::outbuf::{OutBuf, GATHER_MAX};

/// Maps the kernel-internal errnos that io_uring lets through (517 to 530: `EPROBE_DEFER`,
/// `EOPENSTALE`, the NFS errors, `ENOTSUPP`, ...) to what a caller can act on. The restart
/// family (512 to 516) is left to the loop, which knows the operation: for a close it means
/// "performed", for anything else "cancelled".
#[inline]
pub(super) fn kernel_result(result: i32) -> i32 {
    if result >= 0 {
        return result;
    }
    kernel_errno(result)
}

/// [`kernel_result`] for an error result, out of the way of successes.
#[inline(never)]
fn kernel_errno(result: i32) -> i32 {
    const EPROBE_DEFER: i32 = 517;
    const ENOTSUPP: i32 = 524;
    const ERECALLCONFLICT: i32 = 530;
    match -result {
        ENOTSUPP => -libc::EOPNOTSUPP,
        EPROBE_DEFER..=ERECALLCONFLICT => -libc::EIO,
        _ => result,
    }
}

/// A socket address in the kernel's layout, stored inline in the slot so that its address
/// stays valid while a connect is in flight.
#[derive(Clone, Copy)]
pub(super) enum RawSockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawSockAddr {
    /// An IPv4 address of all zeros, until a connect writes its own.
    pub(super) const UNSPECIFIED: RawSockAddr = RawSockAddr::V4(zeroed_sockaddr_in());

    pub(super) fn new(addr: SocketAddr) -> RawSockAddr {
        match addr {
            SocketAddr::V4(addr) => {
                let mut raw: libc::sockaddr_in = zeroed_sockaddr_in();
                raw.sin_family = libc::AF_INET as libc::sa_family_t;
                raw.sin_port = addr.port().to_be();
                raw.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                };
                RawSockAddr::V4(raw)
            }
            SocketAddr::V6(addr) => {
                let mut raw: libc::sockaddr_in6 = zeroed_sockaddr_in6();
                raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.sin6_port = addr.port().to_be();
                raw.sin6_flowinfo = addr.flowinfo();
                raw.sin6_addr = libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                };
                raw.sin6_scope_id = addr.scope_id();
                RawSockAddr::V6(raw)
            }
        }
    }

    /// A pointer to the address and its length, for the kernel.
    pub(super) fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawSockAddr::V4(raw) => (
                (raw as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawSockAddr::V6(raw) => (
                (raw as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

pub(super) const fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        sin_len: 0,
    }
}

pub(super) fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        sin6_len: 0,
    }
}

/// A send of `bytes`. MSG_NOSIGNAL: a reset peer is an EPIPE result, never a process-killing
/// SIGPIPE. Inlined: built where `push` copies it from, as the other plain SQEs are.
#[inline]
pub(super) fn send_entry(fd: RawFd, bytes: &[u8]) -> Entry {
    opcode::Send::new(Fd(fd), bytes.as_ptr(), clamp_len(bytes.len()))
        .flags(libc::MSG_NOSIGNAL)
        .build()
}

/// The `sendmsg` arguments of a vectored send: the header and the iovecs it points at, in
/// one heap block that stays put while the kernel reads them.
pub(super) struct Gather {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: [libc::iovec; GATHER_MAX],
}

impl Gather {
    pub(super) fn new() -> Box<Gather> {
        // SAFETY: `msghdr` and `iovec` are plain C structs of pointers and integers, for
        // which all zeroes is a valid value (null pointers, zero lengths).
        Box::new(unsafe { std::mem::zeroed::<Gather>() })
    }

    /// Points the iovecs at the first `GATHER_MAX` buffers of `bufs` and the header at the
    /// iovecs; the kernel only reads through them.
    pub(super) fn point_at(&mut self, bufs: &[OutBuf]) -> *const libc::msghdr {
        let n = bufs.len().min(GATHER_MAX);
        for (iov, buf) in self.iov.iter_mut().zip(&bufs[..n]) {
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        // `size_t` on glibc, `int` on musl: converted, the same code on both.
        #[allow(clippy::useless_conversion)]
        let iovlen = n.try_into().expect("GATHER_MAX fits msg_iovlen");
        self.hdr.msg_iovlen = iovlen;
        &self.hdr
    }
}

/// The spare capacity of `buf` as the kernel's (pointer, length).
pub(super) fn spare_capacity(buf: &mut Vec<u8>) -> (*mut u8, u32) {
    let spare = buf.spare_capacity_mut();
    (spare.as_mut_ptr().cast(), clamp_len(spare.len()))
}

/// Slot `idx`'s entry in a per-slot table that grows as slots are first used (memory
/// follows the load), filling the entries up to it with `empty()`. The table's capacity was
/// reserved for every slot, so a push never moves an entry the kernel points into.
pub(super) fn slot_entry<T>(table: &mut Vec<T>, idx: u32, empty: impl Fn() -> T) -> &mut T {
    let idx = idx as usize;
    while table.len() <= idx {
        assert!(
            table.len() < table.capacity(),
            "a per-slot table never reallocates"
        );
        table.push(empty());
    }
    &mut table[idx]
}

/// io_uring lengths are `u32`; a longer buffer is a short operation, which callers handle.
pub(super) fn clamp_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// `CLOCK_MONOTONIC` in nanoseconds (vDSO, no syscall).
pub(super) fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("the monotonic clock is not negative");
    let nanos = u64::try_from(now.tv_nsec).expect("nanoseconds below 1e9");
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

pub(super) fn timespec_from_ns(ns: u64) -> Timespec {
    std::time::Duration::from_nanos(ns).into()
}

/// The SQE of a poll ([`crate::Io::poll`]): a `POLL_ADD` of `args`' descriptor and mask, with
/// `IORING_POLL_ADD_MULTI` (5.13) for a multishot when `kernel_multishot` (the kernel has
/// multishot receive, 6.0, and `UringOptions::multishot` does not mask it); otherwise a
/// single poll, which the loop re-arms after each result. It points at nothing: the mask
/// travels in the SQE.
pub(super) fn poll_entry(args: &Args, kernel_multishot: bool) -> Entry {
    let Args::Poll {
        fd,
        events,
        multishot,
    } = *args
    else {
        unreachable!("a poll's entry for a {}", args.label())
    };
    opcode::PollAdd::new(Fd(fd), events)
        .multi(multishot && kernel_multishot)
        .build()
}
