//! `Msg`: the owned, reusable message of [`crate::Io::sendmsg`] and [`crate::Io::recvmsg`]:
//! vectored buffers, a peer address, descriptors passed with `SCM_RIGHTS`, and the kernel's
//! `msghdr`, its iovecs, the address and control storage it points at, all in one heap block
//! that stays put while the message is in flight (io_uring's kernel reads and writes it
//! asynchronously). Made once and reused, a message costs no allocation per operation.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The most buffers one message gathers or scatters; a message made with more uses the
/// first `MSG_IOV_MAX` (a send sends theirs, a receive fills theirs).
pub const MSG_IOV_MAX: usize = 8;

/// The most descriptors one message passes or receives (`Msg::with_fds`).
pub const MSG_FDS_MAX: usize = 64;

/// Room for `MSG_FDS_MAX` descriptors in one `SCM_RIGHTS` control message, in `u64` words:
/// a header (16 bytes on 64-bit targets, 12 on 32-bit ones) and 4 bytes per descriptor,
/// rounded up; `cmsghdr` is aligned to `size_t`, so `u64` words align it everywhere.
const CONTROL_WORDS: usize = (16 + 4 * MSG_FDS_MAX).div_ceil(8);

/// A datagram or message to send or to receive into, with its peer and its descriptors.
///
/// A receive fills the spare capacity of each buffer in order (as [`crate::Io::recv`] does
/// one), records the sender ([`Msg::peer`]), whether the datagram was longer than the
/// buffers ([`Msg::truncated`], `MSG_TRUNC`: the rest is lost, never silently) and, with
/// room made by [`Msg::with_fds`], the descriptors that came with it ([`Msg::fds`]), owned
/// (closed when dropped, so none leaks). A send sends every buffer's bytes to the peer set
/// with [`Msg::set_peer`] (an IP address) or [`Msg::set_peer_path`] (a Unix datagram
/// socket's path; none: the connected peer), with the descriptors in [`Msg::fds`]. A
/// message received and sent again goes back to its sender.
///
/// # Examples
/// A UDP echo round trip: one socket sends a datagram to another, which receives it with
/// the sender's address.
/// ```
/// use std::io;
/// use std::net::UdpSocket;
/// use std::os::fd::AsRawFd;
/// use dispatch_loop::{Io, Msg, Options, Tag};
///
/// type Got = Option<(usize, Msg)>;
///
/// fn sent(_: &mut Got, _: &mut Io<Got>, _: Tag, (count, _msg): (io::Result<usize>, Msg)) {
///     assert_eq!(count.unwrap(), 4);
/// }
///
/// fn received(got: &mut Got, _: &mut Io<Got>, _: Tag, (count, msg): (io::Result<usize>, Msg)) {
///     *got = Some((count.unwrap(), msg));
/// }
///
/// # fn main() -> io::Result<()> {
/// let a = UdpSocket::bind("127.0.0.1:0")?;
/// let b = UdpSocket::bind("127.0.0.1:0")?;
/// let mut io: Io<Got> = Io::new(&Options::new(8)).unwrap();
/// let ping = Msg::new(b"ping".to_vec());
/// io.send_to(0, a.as_raw_fd(), ping, b.local_addr()?, sent).unwrap();
/// io.recv_from(1, b.as_raw_fd(), Msg::new(Vec::with_capacity(64)), received).unwrap();
/// let mut got = None;
/// io.run_until_idle(&mut got)?;
/// let (count, msg) = got.expect("a datagram");
/// assert_eq!((count, &msg.bufs()[0][..]), (4, &b"ping"[..]));
/// assert_eq!(msg.peer(), Some(a.local_addr()?));
/// assert!(!msg.truncated());
/// # Ok(())
/// # }
/// ```
pub struct Msg {
    inner: Box<Inner>,
}

/// What the kernel points into (the header, its iovecs, the address and control storage)
/// and what the message owns, in one heap block.
struct Inner {
    hdr: libc::msghdr,
    iov: [libc::iovec; MSG_IOV_MAX],
    name: libc::sockaddr_storage,
    control: [u64; CONTROL_WORDS],
    bufs: Vec<Vec<u8>>,
    fds: Vec<OwnedFd>,
    /// Descriptors a receive may take (`with_fds`); 0: no control buffer is offered.
    fds_max: usize,
    peer: Option<SocketAddr>,
    /// The length of the Unix-domain address `name` holds (a path to send to, or the
    /// sender's path after a receive); 0: none.
    unix_len: libc::socklen_t,
    /// `msg_flags` of the last receive.
    flags: i32,
    /// What the header was last prepared for: a receive (the kernel writes the header's
    /// lengths, the address and the control storage) or a send.
    receiving: bool,
}

// SAFETY: the raw pointers in `hdr` and `iov` point only into this message's own heap block
// and its buffers; they are written by `prepare_*` and read only by the kernel while the
// loop owns the message. Moving or sharing the `Msg` between threads moves or shares
// nothing they point at with another owner.
unsafe impl Send for Msg {}
// SAFETY: as above; `&Msg` gives no access through the pointers.
unsafe impl Sync for Msg {}

impl Msg {
    /// A message of one buffer: a send sends `buf[..]`, a receive fills its spare capacity.
    pub fn new(buf: Vec<u8>) -> Msg {
        Msg::vectored(vec![buf])
    }

    /// A message of several buffers (the first [`MSG_IOV_MAX`] are used), in order.
    pub fn vectored(bufs: Vec<Vec<u8>>) -> Msg {
        // SAFETY: `msghdr`, `iovec`, `sockaddr_storage` and the `u64` words are plain C data
        // for which all zeroes is a valid value (null pointers, zero lengths).
        let (hdr, iov, name) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        Msg {
            inner: Box::new(Inner {
                hdr,
                iov,
                name,
                control: [0; CONTROL_WORDS],
                bufs,
                fds: Vec::new(),
                fds_max: 0,
                peer: None,
                unix_len: 0,
                flags: 0,
                receiving: false,
            }),
        }
    }

    /// Makes room for `fds_max` descriptors (at most [`MSG_FDS_MAX`]) received with a
    /// message (`SCM_RIGHTS`), or passed with one: the list is reserved now, so a receive
    /// allocates nothing. A receive that brings more than fit (one more may, where the
    /// control buffer's alignment leaves room) sees [`Msg::control_truncated`]; the
    /// descriptors that did arrive are closed.
    ///
    /// # Panics
    /// If `fds_max` is above [`MSG_FDS_MAX`].
    pub fn with_fds(mut self, fds_max: usize) -> Msg {
        assert!(fds_max <= MSG_FDS_MAX, "at most {MSG_FDS_MAX} descriptors");
        self.inner.fds_max = fds_max;
        // The control buffer is rounded up to its alignment (`CMSG_SPACE`), which may leave
        // room for one more descriptor: the list has room for it too.
        self.inner.fds.reserve_exact(fds_max + 1);
        self
    }

    /// The buffers: after a receive, each holds what landed in it.
    pub fn bufs(&self) -> &[Vec<u8>] {
        &self.inner.bufs
    }

    /// The buffers, to fill before a send or empty before a receive.
    pub fn bufs_mut(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.inner.bufs
    }

    /// The buffers, out of the message.
    pub fn into_bufs(self) -> Vec<Vec<u8>> {
        let mut msg = self;
        std::mem::take(&mut msg.inner.bufs)
    }

    /// The peer: after a receive, the sender (`None` for a sender without an IP address,
    /// such as a Unix socket's, or a connected stream); before a send, the destination
    /// (`None`: the socket's connected peer).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// Sets the destination of the next send (`None`: the connected peer).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        self.inner.peer = peer;
        self.inner.unix_len = 0;
    }

    /// The Unix-domain peer: after a receive on a Unix datagram socket, the sender's path
    /// (`None` for an unnamed or abstract sender); before a send, the destination set with
    /// [`Msg::set_peer_path`]. A message received from a path goes back to it when sent.
    pub fn peer_path(&self) -> Option<&Path> {
        let inner = &*self.inner;
        let start = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let len = (inner.unix_len as usize).checked_sub(start)?;
        let ptr: *const libc::sockaddr_storage = &inner.name;
        // SAFETY: `unix_len` is set only when `name` holds a `sockaddr_un` of that length
        // (written by `set_peer_path` or by the kernel); `sun_path` lies inside it.
        let path = unsafe { &(*ptr.cast::<libc::sockaddr_un>()).sun_path };
        let bytes: &[u8] = path_bytes(&path[..len.min(path.len())]);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        (end > 0).then(|| Path::new(OsStr::from_bytes(&bytes[..end])))
    }

    /// Sets the destination of the next send to the Unix datagram socket bound to `path`
    /// (clearing an IP peer).
    ///
    /// # Errors
    /// `ENAMETOOLONG` for a path longer than a `sockaddr_un` holds (about 100 bytes);
    /// `EINVAL` for an empty path or one with a NUL byte.
    pub fn set_peer_path(&mut self, path: &Path) -> io::Result<()> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: all zeroes is a valid `sockaddr_un`.
        let mut raw: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        if bytes.len() >= raw.sun_path.len() {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (slot, &byte) in raw.sun_path.iter_mut().zip(bytes) {
            *slot = byte as libc::c_char;
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            raw.sun_len = len as u8;
        }
        let ptr: *mut libc::sockaddr_storage = &mut self.inner.name;
        // SAFETY: `sockaddr_storage` is larger than and aligned for a `sockaddr_un`.
        unsafe { ptr.cast::<libc::sockaddr_un>().write(raw) };
        self.inner.peer = None;
        self.inner.unix_len = len as libc::socklen_t;
        Ok(())
    }

    /// The descriptors: those a send passes (kept, still open, after it), or those the last
    /// receive brought, owned by the message (a receive first closes what the list held).
    pub fn fds(&self) -> &[OwnedFd] {
        &self.inner.fds
    }

    /// The descriptors, to add one before a send (at most the `with_fds` room) or take those
    /// received.
    pub fn fds_mut(&mut self) -> &mut Vec<OwnedFd> {
        &mut self.inner.fds
    }

    /// Whether the last receive's datagram was longer than the buffers (`MSG_TRUNC`): the
    /// count covers what was kept, the rest is lost.
    pub fn truncated(&self) -> bool {
        self.inner.flags & libc::MSG_TRUNC != 0
    }

    /// Whether the last receive's control data did not fit (`MSG_CTRUNC`: more descriptors
    /// than `with_fds` made room for). The descriptors that arrived were closed, none kept.
    pub fn control_truncated(&self) -> bool {
        self.inner.flags & libc::MSG_CTRUNC != 0
    }

    /// Prepares the header for a receive: every buffer's spare capacity, room for an
    /// address of any family, and the control buffer if descriptors may come. Closes the
    /// descriptors the message held.
    pub(crate) fn prepare_recv(&mut self) -> *mut libc::msghdr {
        let inner = &mut *self.inner;
        inner.fds.clear();
        inner.name.ss_family = 0;
        inner.peer = None;
        inner.unix_len = 0;
        inner.receiving = true;
        inner.flags = 0;
        let n = inner.bufs.len().min(MSG_IOV_MAX);
        for (iov, buf) in inner.iov.iter_mut().zip(&mut inner.bufs[..n]) {
            let spare = buf.spare_capacity_mut();
            *iov = libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len().min(i32::MAX as usize),
            };
        }
        inner.point(n, size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        let control_len = match inner.fds_max {
            0 => 0,
            // SAFETY: CMSG_SPACE only computes a length.
            n => (unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) }) as usize,
        };
        inner.point_control(control_len);
        &mut inner.hdr
    }

    /// Prepares the header for a send: every buffer's bytes, the destination, and an
    /// `SCM_RIGHTS` control message for the descriptors.
    pub(crate) fn prepare_send(&mut self) -> *const libc::msghdr {
        let inner = &mut *self.inner;
        inner.receiving = false;
        let n = inner.bufs.len().min(MSG_IOV_MAX);
        for (iov, buf) in inner.iov.iter_mut().zip(&inner.bufs[..n]) {
            *iov = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len().min(i32::MAX as usize),
            };
        }
        let name_len = match inner.peer {
            Some(peer) => write_sockaddr(&mut inner.name, peer),
            None => inner.unix_len,
        };
        inner.point(n, name_len);
        let fds = inner.fds.len();
        assert!(fds <= MSG_FDS_MAX, "at most {MSG_FDS_MAX} descriptors");
        if fds == 0 {
            inner.point_control(0);
            return &inner.hdr;
        }
        let data_len = (fds * size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE only computes a length; it fits `control` (CONTROL_WORDS).
        let space = (unsafe { libc::CMSG_SPACE(data_len) }) as usize;
        inner.point_control(space);
        // SAFETY: the header points at `control`, `space` bytes, aligned for `cmsghdr`
        // (u64 words), so CMSG_FIRSTHDR returns a header inside it with room for `data_len`
        // bytes of data, which CMSG_DATA points at; the descriptors are written unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&inner.hdr);
            assert!(!cmsg.is_null(), "the control buffer holds one header");
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in inner.fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
        &inner.hdr
    }

    /// After `prepare_send`: the buffer, its length, the address and the address's length
    /// of a message that is one buffer to an address with no descriptors, which a
    /// `sendto` (io_uring's `SEND` with an address) sends as `sendmsg` would, for less
    /// kernel work (no header to copy in); `None` for any other message. (io_uring's;
    /// the readiness backends look at the header themselves.)
    #[cfg(target_os = "linux")]
    pub(crate) fn plain_send(
        &self,
    ) -> Option<(*const u8, usize, *const libc::sockaddr, libc::socklen_t)> {
        let inner = &*self.inner;
        assert!(!inner.receiving, "prepared for a send");
        let plain = inner.bufs.len() == 1
            && inner.fds.is_empty()
            && inner.hdr.msg_controllen == 0
            && inner.hdr.msg_namelen != 0;
        if !plain {
            return None;
        }
        let name: *const libc::sockaddr_storage = &inner.name;
        let iov = inner.iov[0];
        Some((
            iov.iov_base.cast_const().cast(),
            iov.iov_len,
            name.cast(),
            inner.hdr.msg_namelen,
        ))
    }

    /// Takes in the result of the operation the header was last prepared for: after a
    /// receive of `result >= 0` bytes, the buffers' lengths, the sender, the flags, and
    /// the descriptors that arrived, owned at once (closed at once after `MSG_CTRUNC`).
    /// Every path that ends a receive (its callback, a cancel, the loop's drop) calls it.
    pub(crate) fn finish(&mut self, result: i32) {
        let inner = &mut *self.inner;
        if !inner.receiving || result < 0 {
            return;
        }
        inner.receiving = false;
        let mut left = result as usize;
        for buf in inner.bufs.iter_mut().take(MSG_IOV_MAX) {
            let n = left.min(buf.capacity() - buf.len());
            // SAFETY: the kernel (or the simulator) wrote `result` bytes across the spare
            // capacities in order, so the first `n` spare bytes of this buffer are written.
            unsafe { buf.set_len(buf.len() + n) };
            left -= n;
        }
        assert_eq!(left, 0, "a receive reports no more than its buffers hold");
        inner.flags = inner.hdr.msg_flags;
        inner.peer = read_sockaddr(&inner.name, inner.hdr.msg_namelen);
        // A named (or abstract) Unix sender is kept, so that sending the message back
        // reaches it; an unnamed one (a socket pair's) has nothing past the family, and a
        // send goes to the connected peer.
        let path_at = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let named = inner.hdr.msg_namelen as usize > path_at;
        if i32::from(inner.name.ss_family) == libc::AF_UNIX && named {
            inner.unix_len = inner.hdr.msg_namelen;
        }
        inner.take_fds();
    }

    /// The simulator's receive: the sender if any, `MSG_TRUNC` if the datagram was cut,
    /// no control data.
    #[cfg(feature = "sim")]
    pub(crate) fn sim_received(&mut self, from: Option<SocketAddr>, truncated: bool) {
        let inner = &mut *self.inner;
        inner.hdr.msg_namelen = match from {
            Some(from) => write_sockaddr(&mut inner.name, from),
            None => 0,
        };
        inner.hdr.msg_controllen = 0;
        inner.hdr.msg_flags = if truncated { libc::MSG_TRUNC } else { 0 };
    }

    /// The simulator's receive on a Unix socket: no sender address (a socket pair's peer is
    /// unnamed), `MSG_TRUNC` if the datagram was cut, `MSG_CTRUNC` if descriptors came that
    /// did not fit (the simulator closed them all, as `finish` does for the kernel's). The
    /// descriptors that did come are in the list already.
    #[cfg(feature = "sim")]
    pub(crate) fn sim_received_unix(&mut self, truncated: bool, control_truncated: bool) {
        let inner = &mut *self.inner;
        inner.hdr.msg_namelen = 0;
        inner.hdr.msg_controllen = 0;
        let trunc = if truncated { libc::MSG_TRUNC } else { 0 };
        let ctrunc = if control_truncated {
            libc::MSG_CTRUNC
        } else {
            0
        };
        inner.hdr.msg_flags = trunc | ctrunc;
        assert!(
            inner.fds.len() <= inner.fds_max + 1,
            "no more than the control buffer holds"
        );
    }

    /// How many descriptors a receive's control buffer holds (`CMSG_SPACE` of `with_fds`'s
    /// room, which alignment may round up by one), for the simulator.
    #[cfg(feature = "sim")]
    pub(crate) fn sim_fds_room(&self) -> usize {
        match self.inner.fds_max {
            0 => 0,
            n => {
                let fd_size = size_of::<RawFd>();
                // SAFETY: CMSG_SPACE and CMSG_LEN only compute lengths.
                let (space, header) = unsafe {
                    let space = libc::CMSG_SPACE((n * fd_size) as u32) as usize;
                    (space, libc::CMSG_LEN(0) as usize)
                };
                (space - header) / fd_size
            }
        }
    }

    /// The spare capacities a receive fills, for a backend that copies itself (the simulator).
    #[cfg(feature = "sim")]
    pub(crate) fn spare_lens(&self) -> impl Iterator<Item = usize> + '_ {
        let bufs = self.inner.bufs.iter().take(MSG_IOV_MAX);
        bufs.map(|buf| buf.capacity() - buf.len())
    }

    /// The buffers a send sends, for a backend that copies itself (the simulator).
    #[cfg(feature = "sim")]
    pub(crate) fn send_bufs(&self) -> &[Vec<u8>] {
        let n = self.inner.bufs.len().min(MSG_IOV_MAX);
        &self.inner.bufs[..n]
    }

    /// Buffer `i`'s spare capacity, for a backend that copies itself (the simulator).
    #[cfg(feature = "sim")]
    pub(crate) fn spare_mut(&mut self, i: usize) -> &mut [std::mem::MaybeUninit<u8>] {
        self.inner.bufs[i].spare_capacity_mut()
    }
}

impl Inner {
    /// Points the header at the first `n` iovecs and `name_len` bytes of address storage.
    fn point(&mut self, n: usize, name_len: libc::socklen_t) {
        self.hdr.msg_name = match name_len {
            0 => std::ptr::null_mut(),
            _ => (&raw mut self.name).cast(),
        };
        self.hdr.msg_namelen = name_len;
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        // `size_t` on glibc, `int` on musl and the BSDs: converted, the same code on all.
        #[allow(clippy::useless_conversion)]
        let iovlen = n.try_into().expect("MSG_IOV_MAX fits msg_iovlen");
        self.hdr.msg_iovlen = iovlen;
        self.hdr.msg_flags = 0;
    }

    /// Points the header at the first `len` bytes of the control storage (none: null).
    fn point_control(&mut self, len: usize) {
        assert!(len <= size_of::<[u64; CONTROL_WORDS]>());
        self.control = [0; CONTROL_WORDS];
        self.hdr.msg_control = match len {
            0 => std::ptr::null_mut(),
            _ => self.control.as_mut_ptr().cast(),
        };
        #[allow(clippy::useless_conversion)]
        let control_len = len.try_into().expect("the control buffer's length fits");
        self.hdr.msg_controllen = control_len;
    }

    /// Owns the descriptors a receive brought (`SCM_RIGHTS`), or closes them all if the
    /// control data was cut short (`MSG_CTRUNC`), so none leaks either way.
    fn take_fds(&mut self) {
        if self.hdr.msg_control.is_null() || self.hdr.msg_controllen == 0 {
            return;
        }
        let cut = self.hdr.msg_flags & libc::MSG_CTRUNC != 0;
        // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages
        // into `control` (which the header still points at); CMSG_FIRSTHDR/NXTHDR stay
        // within them. Each SCM_RIGHTS entry is a descriptor the kernel installed in this
        // process for this receive, owned by nobody else, so it is taken exactly once.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&self.hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let header = data.cast::<u8>().offset_from(cmsg.cast::<u8>()) as usize;
                    let n = ((*cmsg).cmsg_len as usize - header) / size_of::<RawFd>();
                    for i in 0..n {
                        let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                        if !cut {
                            self.fds.push(fd);
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&self.hdr, cmsg);
            }
        }
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lens: Vec<usize> = self.inner.bufs.iter().map(Vec::len).collect();
        f.debug_struct("Msg")
            .field("buf_lens", &lens)
            .field("peer", &self.inner.peer)
            .field("peer_path", &self.peer_path())
            .field("fds", &self.inner.fds)
            .field("flags", &self.inner.flags)
            .finish()
    }
}

/// Writes `addr` into `storage` in the kernel's layout; the length used.
pub(crate) fn write_sockaddr(
    storage: &mut libc::sockaddr_storage,
    addr: SocketAddr,
) -> libc::socklen_t {
    let ptr: *mut libc::sockaddr_storage = storage;
    match addr {
        SocketAddr::V4(addr) => {
            // SAFETY: all zeroes is a valid `sockaddr_in`.
            let mut raw: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            raw.sin_family = libc::AF_INET as libc::sa_family_t;
            raw.sin_port = addr.port().to_be();
            raw.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            };
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                raw.sin_len = size_of::<libc::sockaddr_in>() as u8;
            }
            // SAFETY: `sockaddr_storage` is larger than and aligned for every address.
            unsafe { ptr.cast::<libc::sockaddr_in>().write(raw) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(addr) => {
            // SAFETY: all zeroes is a valid `sockaddr_in6`.
            let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            raw.sin6_port = addr.port().to_be();
            raw.sin6_flowinfo = addr.flowinfo();
            raw.sin6_addr = libc::in6_addr {
                s6_addr: addr.ip().octets(),
            };
            raw.sin6_scope_id = addr.scope_id();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                raw.sin6_len = size_of::<libc::sockaddr_in6>() as u8;
            }
            // SAFETY: as above.
            unsafe { ptr.cast::<libc::sockaddr_in6>().write(raw) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The IP address the kernel wrote (`len` bytes), if it is one.
pub(crate) fn read_sockaddr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let ptr: *const libc::sockaddr_storage = storage;
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a `sockaddr_in` there (family and length checked).
            let raw = unsafe { ptr.cast::<libc::sockaddr_in>().read() };
            let ip = Ipv4Addr::from(raw.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(raw.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the kernel wrote a `sockaddr_in6` there (family and length checked).
            let raw = unsafe { ptr.cast::<libc::sockaddr_in6>().read() };
            let ip = Ipv6Addr::from(raw.sin6_addr.s6_addr);
            let port = u16::from_be(raw.sin6_port);
            Some(SocketAddrV6::new(ip, port, raw.sin6_flowinfo, raw.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// `sun_path`'s `c_char`s (signed on some targets) as bytes.
fn path_bytes(path: &[libc::c_char]) -> &[u8] {
    // SAFETY: `c_char` and `u8` have the same size and alignment, and every bit pattern is
    // valid for both; the slice keeps its length and lifetime.
    unsafe { std::slice::from_raw_parts(path.as_ptr().cast::<u8>(), path.len()) }
}
